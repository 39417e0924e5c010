import SluiceCore

/// One streamable unit as the planner sees it: a name and its bytes in storage form.
public struct GroupSize: Sendable, Hashable, Codable {
    public let name: String
    public let bytes: Int
    public init(name: String, bytes: Int) { self.name = name; self.bytes = bytes }
}

/// Where one component's groups live while it runs.
public struct ComponentPlan: Sendable, Codable, Equatable {
    public let component: String
    public let phase: String
    /// Groups uploaded once and kept on the device, in forward order.
    public let resident: [String]
    /// Groups copied into a slot every call, in forward order.
    public let streamed: [String]
    /// How many streamed groups are in flight ahead of the one computing (0 when nothing streams).
    public let prefetchDepth: Int
    /// Ring of `slotCount` = depth + 1 regions of `slotBytes` each, allocated once as one byte ring
    /// (groups are placed by bytes): a region holds the largest streamed group, or — a ring sized in
    /// bytes by the planner's search — the whole ring does.
    public let slotBytes: Int
    public let slotCount: Int
    public let residentBytes: Int
    public let activationBytes: Int
    /// Bytes that cross the link each call (the streamed groups).
    public let streamedBytesPerCall: Int
    /// VAE decode in tiles (when the full-size activations do not fit)…
    public let tiled: Bool
    /// …of this many latents square (nil: the whole image at once).
    public var tileLatent: Int? = nil
    public var deviceBytes: Int { residentBytes + slotBytes * slotCount + activationBytes }
}

/// The placement of every component of a pipeline under a budget (docs/architecture.md).
public struct Plan: Sendable, Codable, Equatable {
    public let deviceBudget: Int
    public let hostBudget: Int?
    public let components: [ComponentPlan]
    /// Components released from the device between phases (reloaded when their phase comes).
    public let swappedBetweenPhases: [String]
    /// The most device memory the plan holds at once.
    public let peakDeviceBytes: Int
    /// The batch did not fit: its images run one at a time (the caller's option, see
    /// `PipelinePlanner.plan(_:_:allowOneByOne:)`).
    public var oneByOne: Bool = false

    public init(deviceBudget: Int, hostBudget: Int?, components: [ComponentPlan], swappedBetweenPhases: [String],
                peakDeviceBytes: Int, oneByOne: Bool = false) {
        self.deviceBudget = deviceBudget; self.hostBudget = hostBudget; self.components = components
        self.swappedBetweenPhases = swappedBetweenPhases; self.peakDeviceBytes = peakDeviceBytes; self.oneByOne = oneByOne
    }

    public func component(_ name: String) -> ComponentPlan? { components.first { $0.component == name } }
}

public enum PlanError: Error, Equatable, CustomStringConvertible {
    /// No placement fits; `minimumBytes` is the smallest device budget that would.
    case budgetTooSmall(component: String, budget: Int, minimumBytes: Int)

    public var description: String {
        switch self {
        case let .budgetTooSmall(c, b, m):
            // Exact bytes too when the rounded figures would read the same.
            let (sb, sm) = formatBytes(b) == formatBytes(m) ? ("\(b) bytes", "\(m) bytes") : (formatBytes(b), formatBytes(m))
            return "\(c) does not fit a device budget of \(sb): the smallest that works is \(sm)"
        }
    }
}
