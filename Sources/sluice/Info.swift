import ArgumentParser
import SluiceBackends

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the CPU kernel paths this machine supports.")
    func run() throws {
        print("kernel paths supported: \(KernelPath.supported.map(\.rawValue).joined(separator: ", "))")
        print("avx512bf16: \(KernelPath.hasAVX512BF16 ? "yes" : "no")")
        print("selected: \(try KernelPath.fromEnvironment().rawValue) (SLUICE_KERNELS overrides)")
        print("cores: \(CPUBackend.coreCount)")
    }
}
