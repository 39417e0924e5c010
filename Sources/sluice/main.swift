import Foundation
import SluiceBench
import SluiceCore
let n = Int(CommandLine.arguments[1])!
let t = Int(CommandLine.arguments[2])!
let dt = DType(userName: CommandLine.arguments[3])!
let r = try GemmBench(size: n, threads: t, dtype: dt).run { print($0) }
print(r["ratio"]!, r["reference_kernel"]!)
