import Foundation
import SluiceCore
import SluiceTestSupport
import SluiceWeights
import Testing

/// A checkpoint presenting its tensors under other names: stored as is, rows of a fused tensor (views
/// into the mapping), halves swapped (a copy); errors name the presented tensor and the stored one.
@Suite struct PresentedCheckpointTests {
    static func fused() throws -> (Checkpoint, String) {
        let dir = tempDir()
        let path = dir + "/fused.safetensors"
        let qkv = Tensor((0..<24).map(Float.init), shape: [6, 4])
        let mod = Tensor([1, 2, 3, 4, 5, 6], shape: [6])
        try SafetensorsWriter.write([("qkv", try qkv.converted(to: .bf16)), ("mod", mod), ("other", Tensor([9], shape: [1]))], to: path)
        return (try Checkpoint(path: path), path)
    }

    @Test func recipesGiveStoredRowsAndSwappedHalves() throws {
        let (base, _) = try Self.fused()
        let c = try base.presenting([
            ("q", .rows(of: "qkv", 0..<2)), ("k", .rows(of: "qkv", 2..<4)), ("v", .rows(of: "qkv", 4..<6)),
            ("mod_swapped", .halvesSwapped(of: "mod")), ("mod_again", .stored("mod")),
        ])
        #expect(c.names == ["q", "k", "v", "mod_swapped", "mod_again"])
        #expect(c.storedNames.sorted() == ["mod", "other", "qkv"])
        #expect(c.files.count == 1 && c.files[0] === base.files[0])
        let k = try c.tensor("k")
        #expect(k.dtype == .bf16 && k.shape == [2, 4] && k.isContiguous)
        #expect(try k.toFloats() == (8..<16).map(Float.init))
        let stored = try #require(c.files[0].info("qkv"))
        #expect(k.storage.mapping === c.files[0].mapping && k.storage.byteCount == k.byteCount)
        let kStart: Int = c.files[0].header.dataStart + stored.dataRange.lowerBound + 2 * 4 * 2  // 2 rows of 4 bf16
        #expect(k.address == c.files[0].mapping.baseAddress + kStart)
        #expect(c.info("k")?.dataRange == (stored.dataRange.lowerBound + 16)..<(stored.dataRange.lowerBound + 32))
        #expect(c.info("k")?.shape == [2, 4])
        #expect(try c.tensor("mod_swapped").toFloats() == [4, 5, 6, 1, 2, 3])
        #expect(try c.tensor("mod_again").toFloats() == [1, 2, 3, 4, 5, 6])
        #expect(c.file(containing: "v") === c.files[0])
        // Presented names replace the stored ones.
        #expect(throws: SluiceError.self) { try c.tensor("qkv") }
        #expect(c.recipe(for: "q") == .rows(of: "qkv", 0..<2) && base.recipe(for: "qkv") == nil)
    }

    /// A 1×1 convolution's weight read as a linear's (the stored bytes, a view into the mapping) and a
    /// matrix read transposed (a copy): Stable Diffusion's VAE attention and OpenCLIP's text projection.
    @Test func reshapedIsAViewAndTransposedACopy() throws {
        let path = tempDir() + "/forms.safetensors"
        let conv = Tensor((0..<6).map(Float.init), shape: [2, 3, 1, 1])
        let proj = Tensor((0..<6).map(Float.init), shape: [3, 2])
        try SafetensorsWriter.write([("conv", try conv.converted(to: .bf16)), ("proj", try proj.converted(to: .f16))], to: path)
        let base = try Checkpoint(path: path)
        let c = try base.presenting([("linear", .reshaped("conv", to: [2, 3])), ("projT", .transposed("proj"))])
        let linear = try c.tensor("linear")
        #expect(linear.dtype == .bf16 && linear.shape == [2, 3] && linear.isContiguous)
        #expect(try linear.toFloats() == [0, 1, 2, 3, 4, 5])
        let stored = try #require(c.files[0].info("conv"))
        #expect(linear.storage.mapping === c.files[0].mapping)
        let at: Int = c.files[0].header.dataStart + stored.dataRange.lowerBound
        #expect(linear.address == c.files[0].mapping.baseAddress + at)
        #expect(c.info("linear")?.shape == [2, 3] && c.info("linear")?.dataRange == stored.dataRange)
        let t = try c.tensor("projT")
        #expect(t.dtype == .f16 && t.shape == [2, 3] && t.isContiguous)
        #expect(try t.toFloats() == [0, 2, 4, 1, 3, 5])
        #expect(t.storage.mapping == nil)
        #expect(c.info("projT")?.shape == [2, 3])
        #expect(c.recipe(for: "projT") == .transposed("proj") && c.recipe(for: "linear")?.form == .reshaped([2, 3]))
    }

    @Test(arguments: [
        ("missing source", [("q", TensorRecipe.stored("nope"))], "q", "'nope' is not stored"),
        ("rows outside", [("q", .rows(of: "qkv", 4..<7))], "q", "made from stored 'qkv': rows 4..<7 lie outside its shape [6, 4]"),
        ("odd halves", [("m", .halvesSwapped(of: "other"))], "m", "made from stored 'other': shape [1] has no two equal halves"),
        ("twice", [("q", .stored("qkv")), ("q", .stored("mod"))], "q", "presented twice"),
        ("reshape count", [("w", .reshaped("qkv", to: [6, 5]))], "w", "made from stored 'qkv': shape [6, 4] cannot be read as [6, 5]"),
        ("transpose rank", [("p", .transposed("mod"))], "p", "made from stored 'mod': shape [6] is not a matrix to transpose"),
    ] as [(String, [(name: String, recipe: TensorRecipe)], String, String)])
    func badRecipesNameBothTensors(what: String, recipes: [(name: String, recipe: TensorRecipe)], tensor: String, phrase: String) throws {
        let (base, _) = try Self.fused()
        do throws(SluiceError) {
            _ = try base.presenting(recipes)
            Issue.record("\(what): accepted")
        } catch {
            guard case .invalidCheckpoint(_, let t, let reason) = error else { Issue.record("\(what): \(error)"); return }
            #expect(t == tensor, "\(what)")
            #expect(reason.contains(phrase), "\(what): \(reason)")
        }
    }
}
