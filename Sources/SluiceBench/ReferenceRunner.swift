import Foundation

/// Runs a Python snippet that times the reference implementation (numpy/OpenBLAS or torch) and
/// prints one JSON object. OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are unset in that subprocess
/// only, so OpenBLAS picks its best kernel for this CPU (they are set on some machines here to
/// protect older builds; see ../.library/env).
public struct ReferenceRunner: Sendable {
    public var python: String

    public init(python: String = ProcessInfo.processInfo.environment["SLUICE_PYTHON"] ?? "python3") {
        self.python = python
    }

    public enum Outcome {
        case ok([String: Any])
        /// The reference could not run (numpy/torch missing, no python): said plainly, no ratio.
        case unavailable(String)
    }

    public func run(script: String, threads: Int) -> Outcome {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [python, "-c", script]
        var env = ProcessInfo.processInfo.environment
        env["OPENBLAS_CORETYPE"] = nil
        env["OPENBLAS_L2_SIZE"] = nil
        for key in ["OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"] { env[key] = String(threads) }
        process.environment = env
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        do { try process.run() } catch { return .unavailable("cannot start \(python): \(error)") }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0,
              let line = String(data: data, encoding: .utf8)?.split(separator: "\n").last,
              let json = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
            let msg = String(data: errData, encoding: .utf8)?.split(separator: "\n").last.map(String.init) ?? "no output"
            return .unavailable(msg)
        }
        if let missing = json["unavailable"] as? String { return .unavailable(missing) }
        return .ok(json)
    }

    /// Python that names the BLAS kernel numpy's OpenBLAS chose (threadpoolctl if present, else
    /// OpenBLAS's own get_corename through ctypes).
    static let blasKernelProbe = """
    def blas_kernel():
        try:
            from threadpoolctl import threadpool_info
            for i in threadpool_info():
                if i.get('internal_api') == 'openblas':
                    return 'openblas:' + str(i.get('architecture'))
        except Exception:
            pass
        import glob, ctypes, os, numpy
        d = os.path.dirname(numpy.__file__)
        for lib in glob.glob(os.path.join(d, '..', 'numpy.libs', '*openblas*')) + glob.glob(os.path.join(d, '..', 'scipy_openblas*', 'lib', '*.so')):
            try:
                l = ctypes.CDLL(lib)
            except OSError:
                continue
            for name in ('scipy_openblas_get_corename64_', 'scipy_openblas_get_corename', 'openblas_get_corename64_', 'openblas_get_corename'):
                f = getattr(l, name, None)
                if f is not None:
                    f.restype = ctypes.c_char_p
                    return 'openblas:' + f().decode()
        return 'unknown'
    """
}
