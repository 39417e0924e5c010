import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Why nothing can connect to host:port, when that is certain at once (the name does not resolve, or
/// every address refuses); nil when something answers or the answer is slow (the pool then decides,
/// within its timeout).
func unreachableReason(host: String, port: Int) -> String? {
    var hints = addrinfo()
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    var list: UnsafeMutablePointer<addrinfo>?
    let status = getaddrinfo(host, String(port), &hints, &list)
    guard status == 0, let first = list else { return "cannot resolve \(host) (\(String(cString: gai_strerror(status))))" }
    defer { freeaddrinfo(list) }
    var refusals: [String] = []
    var node: UnsafeMutablePointer<addrinfo>? = first
    while let a = node {
        node = a.pointee.ai_next
        let fd = socket(a.pointee.ai_family, a.pointee.ai_socktype, a.pointee.ai_protocol)
        guard fd >= 0 else { continue }
        defer { close(fd) }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        if connect(fd, a.pointee.ai_addr, a.pointee.ai_addrlen) == 0 { return nil }
        guard errno == EINPROGRESS else { refusals.append(String(cString: strerror(errno))); continue }
        var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        guard poll(&p, 1, 2000) == 1 else { return nil }  // slow: let the pool wait
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
        if error == 0 { return nil }
        refusals.append(String(cString: strerror(error)))
    }
    return refusals.isEmpty ? nil : "\(host):\(port): \(refusals[0].lowercased())"
}
