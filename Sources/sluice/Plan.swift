import ArgumentParser
import Foundation
import SluiceBackends
import SluiceCore
import SluiceMemory
import SluicePipelines

/// The options `sluice plan --table` and `sluice bench offload` share: a real model's sizes, planned
/// with the formulas of its family when Sluice runs it, else with the table's own estimates.
struct TableOptions: ParsableArguments {
    @Option(help: "Device memory budget, e.g. 8G (powers of 1024; default: the profile's memory less a reserve).") var vramLimit: ByteSize?
    @Option(help: "Host RAM budget for weights, e.g. 16G.") var ramLimit: ByteSize?
    @Option(help: "Storage type of the text encoders' and denoiser's weights (tables only): bf16, f16, fp8, f32.") var storage: DType = .bf16
    @Option(parsing: .unconditional, help: "Image width (default: 1024, or the model's).") var width: Int?
    @Option(parsing: .unconditional, help: "Image height (default: 1024, or the model's).") var height: Int?
    @Option(parsing: .unconditional, help: "Prefetch depth (tables only; default: chosen by the cost model).") var prefetchDepth: Int?
    @Option(parsing: .unconditional, help: "Images per call (tables only); a batch that does not fit runs one image at a time.") var batch = 1
    @Option(help: "Device profile for the cost model: \(DeviceProfile.all.map(\.name).joined(separator: ", ")).") var profile = "rtx4090-24g"

    func validate() throws {
        for side in [width, height].compactMap({ $0 }) where side < 64 || side > 16384 || side % 16 != 0 {
            throw ValidationError("--width and --height must be multiples of 16 in 64...16384")
        }
        if let d = prefetchDepth, d < 1 || d > 16 { throw ValidationError("--prefetch-depth must be in 1...16") }
        guard storage.isFloatStorage else { throw ValidationError("--storage must be bf16, f16, fp8 or f32") }
        guard batch >= 1 && batch <= 64 else { throw ValidationError("--batch must be in 1...64") }
    }

    func deviceProfile() throws -> DeviceProfile {
        guard let p = DeviceProfile.named(profile) else { throw ValidationError("unknown --profile \(profile)") }
        return p
    }

    func request() throws -> PlanRequest {
        let p = try deviceProfile()
        var r = PlanRequest(deviceBudget: vramLimit?.bytes ?? p.defaultBudget, hostBudget: ramLimit?.bytes, storage: storage,
                            width: width ?? 1024, height: height ?? 1024, prefetchDepth: prefetchDepth, profile: p)
        r.batch = batch
        return r
    }
}

struct PlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Show where every weight group lives under a memory budget: the plan `generate` and `serve` run (--model), or a real model's (--table).")
    @Option(help: "A model to plan as `generate` runs it: a diffusers folder or a cached repo id.") var model: String?
    @Option(help: "A real model's table instead: a name (\(ModelTable.known.joined(separator: ", "))) or a JSON path.") var table: String?
    @Option(help: "A single .safetensors file replacing --model's transformer (as `generate --transformer`).") var transformer: String?
    @Option(help: "A single-file SD1.5/SDXL checkpoint's configs and tokenizers: a diffusers folder or a repo id in the Hugging Face cache (default: the base model's repository, e.g. stabilityai/stable-diffusion-xl-base-1.0, when cached).") var config: String?
    @Option(parsing: .unconditional, help: "Text encoder length for --model (as `generate --max-sequence-length`; FLUX's T5 activations grow with it).") var maxSequenceLength: Int?
    @Option(help: "Compute device for --model (as `generate --device`; Vulkan plans with its heap and allocation sizes).") var device = "cpu"
    @OptionGroup var options: TableOptions
    @Flag(help: "Print the plan as JSON.") var json = false

    func validate() throws {
        guard (model == nil) != (table == nil) else { throw ValidationError("give one of --model and --table") }
        if model != nil, options.storage != .bf16 || options.prefetchDepth != nil || options.batch != 1 {
            throw ValidationError("--storage, --prefetch-depth and --batch apply to --table; a model is planned as its checkpoint stores it")
        }
    }

    func run() throws {
        try withFlags {
            let (title, plan, timing) = try model != nil ? planModel() : planTable()
            guard let plan else {
                // Without a budget `generate` plans nothing: the CPU reads the weights from the mapped files.
                print(json ? "null" : title + "\n  no device budget (--vram-limit): everything runs on the CPU from the memory-mapped files")
                return
            }
            if json { print(try prettyJSON(plan)); return }
            print(title)
            for line in plan.lines { print("  " + line) }
            if let timing { for line in Self.modelledTimes(plan, timing.descriptions, timing.request) { print("  " + line) } }
        }
    }

    /// What the modelled clock needs: the components as planned and the request they were planned for.
    typealias Timing = (descriptions: [ComponentDescription], request: PlanRequest)

    /// Each component's call on the profile's modelled clock under this plan (the executor run dry on
    /// a simulated device) beside compute alone with everything resident: what streaming costs there.
    static func modelledTimes(_ plan: Plan, _ descriptions: [ComponentDescription], _ r: PlanRequest) -> [String] {
        guard let profile = r.profile, !descriptions.isEmpty else { return [] }
        var lines = ["modelled on \(profile.name) (a simulation, not a measurement):"]
        for c in descriptions {
            guard let p = plan.component(c.name) else { continue }
            let k = OffloadModel.costs(c, r, activation: p.activationBytes)
            let s = OffloadModel.sluiceStepSeconds(plan: p, costs: k, profile: profile), ideal = OffloadModel.computeSeconds(k, profile)
            let per = c.phase == .denoise ? "per step" : "per call"
            lines.append("  \(c.name): \(String(format: "%.3g", s)) s \(per) (all resident: \(String(format: "%.3g", ideal)) s)")
        }
        return lines
    }

    /// Exactly what `generate` would plan: the same pipeline, the same planner, the same request.
    func planModel() throws -> (String, Plan?, Timing?) {
        let pipe = try PipelineRegistry.shared.load(model: model!, device: device, transformer: transformer, config: config)
        if let note = pipe.device.note { stderrLine(note) }
        let memory = MemoryOptions(deviceBudget: options.vramLimit?.bytes, hostBudget: options.ramLimit?.bytes, profile: try options.deviceProfile())
        var r = pipe.request(prompt: "plan", width: options.width, height: options.height)
        r.maxSequenceLength = maxSequenceLength
        let plan = try pipe.plan(r, memory: memory)
        let budget = plan.map { ", device budget \(formatBytes($0.deviceBudget))" } ?? ""
        // Without a budget there is no plan to time (and no request the planner was given).
        let request = pipe.components.planRequest(r.workload, memory: memory)
        let timing = try request.map { (descriptions: try pipe.componentDescriptions(r), request: $0) }
        return ("\(pipe.family) \(model!) at \(r.width)×\(r.height) on \(pipe.device.description), weights as stored\(budget)", plan, timing)
    }

    func planTable() throws -> (String, Plan?, Timing?) {
        let t = try ModelTable.resolve(table!)
        let r = try options.request(), descriptions = try PipelineRegistry.shared.describe(t)
        let plan: Plan
        do { plan = try PipelinePlanner.plan(descriptions, r, allowOneByOne: true) } catch {
            throw CommandError(message: "--vram-limit: \(error)")
        }
        return ("\(t.model) at \(r.width)×\(r.height), \(r.storage.rawValue) weights, device budget \(formatBytes(plan.deviceBudget))", plan,
                (descriptions, r))
    }
}
