import Foundation
import SluiceBackends
import SluiceCore
import SluiceMemory
import SluicePipelines
import SluiceTestSupport
import SluiceText
import SluiceWeights
import Testing

/// FLUX.1's two text encoders as a pipeline loads them: ComponentRunner finds CLIP's "text_model."
/// prefix (and none on T5's keys) from the encoders' `group(of:)`, every group has tensors, and the
/// result is the same bits whether the weights come straight from the mapped checkpoint or stream
/// through a budget smaller than the encoder.
@Suite struct TextEncoderRunnerTests {
    static let directory = Fixtures.directory + "/text-encoders"

    func check<State>(_ runner: ComponentRunner, activationBytes: Int, input: State, output: (State) -> Tensor?,
                      body: @escaping (Int, ModuleWeights, State) throws -> State) throws {
        let free = try #require(output(try runner.run(input, body))).toFloats().map(\.bitPattern)
        let groups = try runner.execGroups()
        let device = DeviceMemory(profile: .rtx4090, capBytes: 1 << 30)
        let sizes = groups.map { GroupSize(name: $0.name, bytes: device.allocationSize($0.stagedBytes)) }
        func plan(_ budget: Int) -> ComponentPlan? {
            try? Planner.planComponent(name: runner.name, phase: runner.phase.rawValue, groups: sizes, activationBytes: activationBytes, budget: budget)
        }
        // The smallest budget the planner accepts, in steps of the smallest group.
        let step = sizes.map(\.bytes).min()!
        var budget = sizes.reduce(0) { $0 + $1.bytes } + activationBytes
        while plan(budget - step) != nil { budget -= step }
        let plan = try #require(plan(budget))
        #expect(!plan.streamed.isEmpty, "\(runner.name): nothing streams under \(budget) bytes")
        try runner.attach(device: device, plan: plan, flops: groups.map { _ in 0 }, hostBudget: nil)
        defer { runner.detach() }
        let streamed = try #require(output(try runner.run(input, body))).toFloats().map(\.bitPattern)
        #expect(streamed == free, "\(runner.name): streaming changed the output")
        #expect(device.peakBytes <= budget, "\(runner.name): peak \(device.peakBytes) > budget \(budget)")
    }

    @Test func clipRunsThroughComponentRunner() throws {
        let dir = Self.directory + "/clip-tiny"
        let config = try JSONDecoder().decode(CLIPTextConfig.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/config.json")))
        let encoder = CLIPTextEncoder(config: config)
        let runner = try ComponentRunner(name: "text_encoder", phase: .text, checkpoint: try Checkpoint(path: dir + "/model.safetensors"),
                                         groupNames: encoder.groupNames, groupOf: encoder.group(of:))
        #expect(runner.keyPrefix == "text_model.")
        let be = try CPUBackend()
        let ids = [998, 17, 402, 9, 999] + [Int](repeating: 999, count: 72)
        try check(runner, activationBytes: CLIPTextEncoder.activationBytes(config: config, tokens: ids.count),
                  input: CLIPTextEncoder.State(ids: ids), output: { $0.pooled }) { i, w, s in try encoder.run(group: i, w, s, be) }
    }

    @Test func t5RunsThroughComponentRunner() throws {
        let dir = Self.directory + "/t5-tiny"
        let config = try JSONDecoder().decode(T5Config.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/config.json")))
        let encoder = T5Encoder(config: config)
        let runner = try ComponentRunner(name: "text_encoder_2", phase: .text, checkpoint: try Checkpoint(path: dir + "/model.safetensors"),
                                         groupNames: encoder.groupNames, groupOf: encoder.group(of:))
        #expect(runner.keyPrefix == "")
        let be = try CPUBackend()
        let ids = [37, 5, 812, 1] + [Int](repeating: 0, count: 60)
        try check(runner, activationBytes: T5Encoder.activationBytes(config: config, tokens: ids.count),
                  input: T5Encoder.State(ids: ids), output: { $0.hidden }) { i, w, s in try encoder.run(group: i, w, s, be) }
    }
}
