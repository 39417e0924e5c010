import Foundation
import Hummingbird
import SluiceCore
import SluiceMemory
import SluicePipelines
import SluiceQueue

/// Liveness, readiness and the status page's data: the model, the device and its memory, the queue,
/// the last run's plan and phases.
enum StatusRoutes {
    struct Health: Encodable { let status: String; let uptimeSeconds: Double }
    struct Ready: Encodable { let ready: Bool; let model: String? }
    struct Peak: Encodable { let hostBytes: Int; let deviceBytes: Int? }
    struct Status: Encodable {
        let ready: Bool
        let startup: [String]
        let version: String
        let memoryNow: MemorySample
        let memoryPeak: Peak
        var model: String?
        var family: String?
        var queueLength: Int?
        var queueCapacity: Int?
        var currentJob: String?
        var memoryTimeline: [MemorySample]?
        var lastRun: RunReport?
        /// null when there is no device budget (the CPU reads the weights in place).
        var deviceBudgetBytes: Nullable<Int>?
        /// Device bytes are real allocations on Vulkan ("vulkan"), modelled on the simulated device
        /// ("simulated"), or there is no device ("none").
        var deviceMemory: String?
        var profile: String?
        var device: String?
        var deviceName: String?
        /// Components whose weights stayed on the device since the last job (reused by the next job
        /// with the same plan).
        var keptOnDevice: [String]?
        /// The samplers a job may name, the model's default first (the web UI's menu).
        var samplers: [String]?
        /// Whether a job may start from an init image.
        var imageToImage: Bool?
        /// With `--queue`: the database (no password), the model name jobs go under, the workers it
        /// knows and the jobs waiting per model; `queueError` when the database cannot be read now.
        var queue: String?
        var route: String?
        var workers: [WorkerStatus]?
        var queueDepths: [String: Int]?
        var queueError: String?
    }
    struct WorkerStatus: Encodable {
        let id: String
        let model: String
        let device: String
        let budgetBytes: Int?
        let secondsSinceHeartbeat: Double
        let currentJob: String?
    }

    static func collection(_ state: ServerState) -> RouteCollection<SluiceRequestContext> {
        let routes = RouteCollection(context: SluiceRequestContext.self)
        routes.get("health") { _, _ in Routes.json(Health(status: "up", uptimeSeconds: Date().timeIntervalSince(state.started))) }
        routes.get("ready") { _, _ in
            guard let e = state.engine else { return Routes.json(Ready(ready: false, model: nil), status: .serviceUnavailable) }
            return Routes.json(Ready(ready: true, model: e.modelName))
        }
        routes.get("api/status") { _, _ in
            await Routes.handle {
                let deviceBytes = state.engine?.lastReport.map { r in r.phases.map(\.peakDeviceBytes).max() ?? 0 }
                var out = Status(ready: state.engine != nil, startup: state.startupLog, version: SluiceVersion.string,
                                 memoryNow: .now(), memoryPeak: Peak(hostBytes: HostMemory.peakResidentBytes(), deviceBytes: deviceBytes))
                if let e = state.engine, let q = state.queue {
                    let device = e.pipeline.device
                    out.model = e.modelName
                    out.family = e.pipeline.family
                    out.queueLength = await q.length
                    out.queueCapacity = q.capacity
                    out.currentJob = await q.current?.id
                    out.memoryTimeline = Array(await q.memoryTimeline.suffix(600))
                    out.lastRun = e.lastReport
                    out.deviceBudgetBytes = Nullable(device.budget(limit: e.memory.deviceBudget))
                    out.deviceMemory = device.vulkan != nil ? "vulkan" : e.memory.deviceBudget != nil ? "simulated" : "none"
                    out.profile = e.memory.deviceBudget == nil && device.vulkan == nil ? "cpu" : e.memory.profile.name
                    out.device = device.description
                    out.deviceName = device.vulkan?.info.name ?? "cpu"
                    out.keptOnDevice = e.pipeline.components.keptOnDevice
                    out.samplers = e.pipeline.samplerNames
                    out.imageToImage = e.pipeline.supportsImageToImage
                    if let db = q.database {
                        // The device and plan above are this server's; the work is on the workers.
                        out.queue = PostgresQueue.redacted(db.queue.url)
                        out.route = db.route
                        out.currentJob = nil
                        do {
                            out.workers = try await db.queue.workers().map {
                                WorkerStatus(id: $0.id, model: $0.model, device: $0.device, budgetBytes: $0.budget,
                                             secondsSinceHeartbeat: $0.secondsSinceHeartbeat, currentJob: $0.currentJob?.uuidString.lowercased())
                            }
                            out.queueDepths = try await db.queue.depths()
                        } catch { out.queueError = "\(error)" }
                    }
                }
                return Routes.json(out)
            }
        }
        return routes
    }
}
