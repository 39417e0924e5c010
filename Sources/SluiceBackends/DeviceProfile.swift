/// The figures a simulated device is modelled from. Sources are the vendors' published
/// specifications; `computeEfficiency` and `linkEfficiency` are Sluice's assumptions (stated, not
/// measured) for what large bf16 GEMMs and pinned host→device copies reach in practice.
public struct DeviceProfile: Sendable, Codable, Equatable {
    public let name: String
    public let memoryBytes: Int
    /// Device memory bandwidth, bytes/s.
    public let memoryBandwidth: Double
    /// Host↔device link, bytes/s, theoretical.
    public let linkBandwidth: Double
    /// Dense bf16 tensor throughput with f32 accumulation, FLOP/s.
    public let bf16Flops: Double
    public let computeEfficiency: Double
    public let linkEfficiency: Double
    public let source: String

    public init(name: String, memoryBytes: Int, memoryBandwidth: Double, linkBandwidth: Double, bf16Flops: Double,
                computeEfficiency: Double, linkEfficiency: Double, source: String) {
        self.name = name; self.memoryBytes = memoryBytes; self.memoryBandwidth = memoryBandwidth
        self.linkBandwidth = linkBandwidth; self.bf16Flops = bf16Flops; self.computeEfficiency = computeEfficiency
        self.linkEfficiency = linkEfficiency; self.source = source
    }

    public var effectiveFlops: Double { bf16Flops * computeEfficiency }
    public var effectiveLink: Double { linkBandwidth * linkEfficiency }

    /// Modelled time of a kernel: the slower of its arithmetic and its memory traffic.
    public func kernelSeconds(flops: Double, bytes: Double) -> Double {
        max(flops / effectiveFlops, bytes / memoryBandwidth)
    }

    public func copySeconds(bytes: Int) -> Double { Double(bytes) / effectiveLink }

    /// The budget when the user gives none: the device's memory less a reserve for the driver,
    /// the display and other processes — 1 GiB, or a tenth on devices under 10 GiB.
    public var defaultBudget: Int {
        memoryBytes - (memoryBytes < 10 * Self.gib ? memoryBytes / 10 : Self.gib)
    }

    static let gib = 1 << 30

    /// NVIDIA GeForce RTX 3060 (GA106): 12 GB GDDR6, 360 GB/s, PCIe 4.0 x16 (31.5 GB/s). Tensor
    /// throughput: 51 TFLOPS dense FP16/BF16 with FP16 accumulate; GeForce parts run FP32
    /// accumulate at half rate, 25.4 TFLOPS (NVIDIA Ampere GA102 whitepaper, appendix tables, scaled
    /// to GA106's 112 tensor cores at 1.78 GHz boost).
    public static let rtx3060 = DeviceProfile(
        name: "rtx3060-12g", memoryBytes: 12 * gib, memoryBandwidth: 360e9, linkBandwidth: 31.5e9,
        bf16Flops: 25.4e12, computeEfficiency: 0.6, linkEfficiency: 0.8,
        source: "NVIDIA RTX 3060 specifications; Ampere GA102 whitepaper (FP32-accumulate tensor rate)")

    /// NVIDIA GeForce RTX 4090 (AD102): 24 GB GDDR6X, 1008 GB/s, PCIe 4.0 x16 (31.5 GB/s); peak
    /// FP16/BF16 tensor TFLOPS with FP32 accumulate 165.2 dense (NVIDIA Ada Lovelace GPU
    /// architecture whitepaper, Table 2).
    public static let rtx4090 = DeviceProfile(
        name: "rtx4090-24g", memoryBytes: 24 * gib, memoryBandwidth: 1008e9, linkBandwidth: 31.5e9,
        bf16Flops: 165.2e12, computeEfficiency: 0.6, linkEfficiency: 0.8,
        source: "NVIDIA Ada Lovelace architecture whitepaper, Table 2 (RTX 4090)")

    /// NVIDIA H100 PCIe: 80 GB HBM2e, 2.0 TB/s, PCIe 5.0 x16 (63 GB/s); BF16 tensor 756 TFLOPS
    /// dense (1,513 with sparsity) (NVIDIA H100 Tensor Core GPU datasheet).
    public static let h100pcie = DeviceProfile(
        name: "h100-pcie-80g", memoryBytes: 80 * gib, memoryBandwidth: 2.0e12, linkBandwidth: 63e9,
        bf16Flops: 756e12, computeEfficiency: 0.6, linkEfficiency: 0.8,
        source: "NVIDIA H100 Tensor Core GPU datasheet (PCIe form factor)")

    public static let all: [DeviceProfile] = [rtx3060, rtx4090, h100pcie]

    public static func named(_ name: String) -> DeviceProfile? { all.first { $0.name == name } }
}
