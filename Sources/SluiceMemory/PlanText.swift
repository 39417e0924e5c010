import Foundation
import SluiceCore

/// Plans and run reports in words: the one rendering `sluice plan`, `sluice generate` and the server's
/// start-up log all print.
extension ComponentPlan {
    /// "transformer [denoise]: 12 groups resident (…), 18 streamed (… per call), ring …, activations … → … on device"
    public var line: String {
        let ring = slotCount > 0 ? ", ring \(slotCount) × \(formatBytes(slotBytes)) (prefetch depth \(prefetchDepth))" : ""
        let tile = tileLatent.map { ", decoded in \($0)-latent tiles" } ?? ""
        return "\(component) [\(phase)]: \(resident.count) groups resident (\(formatBytes(residentBytes))), " +
            "\(streamed.count) streamed (\(formatBytes(streamedBytesPerCall)) per call)\(ring), " +
            "activations \(formatBytes(activationBytes))\(tile) → \(formatBytes(deviceBytes)) on device"
    }
}

extension Plan {
    /// One line per component, then what is swapped and the peak.
    public var lines: [String] {
        components.map(\.line) + [
            "swapped between phases: " + (swappedBetweenPhases.isEmpty ? "none (everything stays)" : swappedBetweenPhases.joined(separator: ", ")),
            "peak device memory: \(formatBytes(peakDeviceBytes)) of \(formatBytes(deviceBudget))",
        ] + (oneByOne ? ["the batch does not fit: images run one at a time"] : [])
    }
}

extension RunReport {
    /// "text 0.01 s (device peak …) · denoise … · decode … · peak RSS … · VAE tiled (18-latent tiles) to fit the budget"
    public func summary(loadSeconds: Double, peakResidentBytes: Int) -> String {
        var parts = ["load \(String(format: "%.2f", loadSeconds)) s"]
        for p in phases {
            var s = "\(p.phase) \(String(format: "%.2f", p.wallSeconds)) s"
            if let t = p.deviceTraffic {
                s += " (device peak \(formatBytes(p.peakDeviceBytes)) of Vulkan buffers; \(t.submits) submits, \(t.hostWaits) host waits, "
                    + "\(formatBytes(t.weightBytesToDevice + t.otherBytesToDevice)) in (\(formatBytes(t.weightBytesToDevice)) weights), \(formatBytes(t.bytesToHost)) out)"
            } else if p.realDeviceMemory {
                s += " (device peak \(formatBytes(p.peakDeviceBytes)) of Vulkan buffers, \(formatBytes(p.bytesHostToDevice)) copied in)"
            } else if p.simulated {
                s += " (device peak \(formatBytes(p.peakDeviceBytes)), \(formatBytes(p.bytesHostToDevice)) uploaded, modelled \(String(format: "%.3f", p.modelledSeconds)) s SIMULATED)"
            }
            parts.append(s)
        }
        parts.append("peak RSS \(formatBytes(peakResidentBytes))")
        if let t = plan?.components.compactMap(\.tileLatent).first { parts.append("VAE tiled (\(t)-latent tiles) to fit the budget") }
        return parts.joined(separator: " · ")
    }
}
