import Foundation

/// This process's host memory, read one way everywhere (status pages, summaries, tests of `--ram-limit`).
public enum HostMemory {
    /// Resident set now: /proc/self/statm's resident pages × the page size (0 where there is no /proc).
    public static func residentBytes() -> Int {
        guard let s = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = s.split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// The largest resident set this process has had (getrusage's ru_maxrss, in KiB on Linux).
    public static func peakResidentBytes() -> Int {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return usage.ru_maxrss * 1024
    }
}
