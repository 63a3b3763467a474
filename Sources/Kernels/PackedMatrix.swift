/// A weight matrix W [rows, columns] stored once in the panel layout the GEMM micro-kernel
/// reads, ready for products of the form `x · Wᵀ`.
///
/// For a linear layer `rows` is the number of output features (N) and `columns` the number of
/// input features (K): exactly the `[out, in]` shape Hugging Face checkpoints store. Packing
/// widens float16/bfloat16 on the fly, so a half-precision checkpoint never has a second full
/// float32 copy besides the panels themselves.
///
/// Storage: ⌈rows/32⌉ panels, each `[columns][32]` floats (rows past `rows` are zero),
/// 64-byte aligned: `4 · 32 · ⌈rows/32⌉ · columns` bytes. Immutable after creation, so one
/// instance can be shared by any number of threads.
///
/// API status: final (the panel width is an implementation detail and may change).
public final class PackedMatrix: @unchecked Sendable {
    /// How the source buffer holds W [rows, columns].
    public enum Layout: Sendable {
        /// Row `r` of W is contiguous: element (r, c) at `r * stride + c` (checkpoints, `nn.Linear`).
        case rowMajor
        /// Column `c` of W is contiguous: element (r, c) at `c * stride + r`
        /// (GPT-2 `Conv1D` weights [in, out]; or W = Mᵀ for a matrix M stored row-major).
        case transposed
    }

    /// Rows of W: the output width of `x · Wᵀ` (N).
    public let rows: Int
    /// Columns of W: the reduction length of `x · Wᵀ` (K).
    public let columns: Int

    @usableFromInline let panelCount: Int
    /// panels (panelCount, columns, gemmNR)
    @usableFromInline let storage: UnsafeMutablePointer<Float>

    /// Packs W from a raw buffer of `type` elements.
    ///
    /// - Parameters:
    ///   - rows: rows of W (>= 0).
    ///   - columns: columns of W (>= 0).
    ///   - source: the elements; for `.rowMajor` at least `(rows-1)·stride + columns` of them,
    ///     for `.transposed` at least `(columns-1)·stride + rows`. Need not be aligned (may point
    ///     into a memory-mapped file).
    ///   - type: element type of `source` (float16/bfloat16 as raw bit patterns).
    ///   - layout: how `source` holds W.
    ///   - stride: elements between consecutive source rows; `nil` means dense
    ///     (`columns` for `.rowMajor`, `rows` for `.transposed`).
    ///   - pool: threads used for packing.
    /// - Complexity: O(rows · columns).
    public init(rows: Int, columns: Int, source: UnsafeRawPointer, type: WeightType,
                layout: Layout = .rowMajor, stride: Int? = nil, pool: ThreadPool = .serial) {
        precondition(rows >= 0 && columns >= 0, "PackedMatrix: negative shape \(rows)x\(columns)")
        let ld = stride ?? (layout == .rowMajor ? columns : rows)
        precondition(ld >= (layout == .rowMajor ? columns : rows), "PackedMatrix: stride \(ld) too small")
        self.rows = rows
        self.columns = columns
        let P = (rows + gemmNR - 1) / gemmNR
        self.panelCount = P
        let count = max(1, P * columns * gemmNR)
        // Safe because the raw allocation is immediately bound to Float and owned by self.
        self.storage = UnsafeMutableRawPointer.allocate(byteCount: count * 4, alignment: 64)
            .bindMemory(to: Float.self, capacity: count)
        let K = columns, N = rows, NR = gemmNR
        let dst = storage
        // Float32 sources on a 4-byte boundary are read as Float (a mapped file may be offset).
        let floats = type == .float32 && Int(bitPattern: source) % 4 == 0
        pool.parallelFor(P) { panels in
            if layout == .transposed && floats {
                // Blocks of source rows outermost: each source row is read once, front to back,
                // across all panels, instead of 32-float pieces of it once per panel (a
                // page-crossing stride the prefetchers do not follow when K is long).
                let src = source.assumingMemoryBound(to: Float.self)
                var k0 = 0
                while k0 < K {
                    let k1 = min(K, k0 + 64)
                    for p in panels {
                        let panel = dst + p * K * NR, n0 = p * NR
                        let width = min(NR, N - n0)
                        for k in k0..<k1 {
                            // Safe because column k of W holds rows n0..<n0+width contiguously
                            // and the panel row has 32 floats.
                            let from = src + k * ld + n0, out = panel + k * NR
                            if width == NR {
                                let r = UnsafeRawPointer(from), o = UnsafeMutableRawPointer(out)
                                o.storeBytes(of: r.loadUnaligned(as: SIMD16<Float>.self), as: SIMD16<Float>.self)
                                o.storeBytes(of: r.loadUnaligned(fromByteOffset: 64, as: SIMD16<Float>.self),
                                             toByteOffset: 64, as: SIMD16<Float>.self)
                            } else {
                                out.update(from: from, count: width)
                                (out + width).update(repeating: 0, count: NR - width)
                            }
                        }
                    }
                    k0 = k1
                }
                return
            }
            for p in panels {
                // panel (K, NR)
                let panel = dst + p * K * NR
                let n0 = p * NR
                let width = min(NR, N - n0)
                switch layout {
                case .rowMajor where floats && width == NR:
                    // Eight row streams at a time into one sequential stream (wrapping index
                    // arithmetic: bounded by the buffer sizes), which the compiler vectorises
                    // as an 8 x 8 transpose.
                    let src = source.assumingMemoryBound(to: Float.self)
                    for j0 in Swift.stride(from: 0, to: NR, by: 8) {
                        // Safe because rows n0+j0 ..< n0+j0+8 < N and k < K lie inside W.
                        let s0 = src + (n0 + j0) * ld
                        let s1 = s0 + ld, s2 = s1 + ld, s3 = s2 + ld, s4 = s3 + ld, s5 = s4 + ld
                        let s6 = s5 + ld, s7 = s6 + ld
                        var out = panel + j0
                        for k in 0..<K {
                            out[0] = s0[k]; out[1] = s1[k]; out[2] = s2[k]; out[3] = s3[k]
                            out[4] = s4[k]; out[5] = s5[k]; out[6] = s6[k]; out[7] = s7[k]
                            out += NR
                        }
                    }
                case .rowMajor:
                    for j in 0..<width {
                        let rowStart = (n0 + j) * ld
                        for k in 0..<K {
                            // Safe because (n0+j, k) is inside W and the source covers W (caller contract).
                            panel[k * NR + j] = loadWidened(source, type, rowStart + k)
                        }
                    }
                    if width < NR {
                        for k in 0..<K { for j in width..<NR { panel[k * NR + j] = 0 } }
                    }
                case .transposed:
                    for k in 0..<K {
                        let out = panel + k * NR
                        // Safe because column k of W holds rows n0..<n0+width contiguously.
                        widenRun(source, type, start: k * ld + n0, count: width, into: out)
                        for j in width..<NR { out[j] = 0 }
                    }
                }
            }
        }
    }

    /// Packs a float32 W [rows, columns].
    public convenience init(rows: Int, columns: Int, float32 source: UnsafePointer<Float>,
                            layout: Layout = .rowMajor, stride: Int? = nil, pool: ThreadPool = .serial) {
        self.init(rows: rows, columns: columns, source: UnsafeRawPointer(source), type: .float32,
                  layout: layout, stride: stride, pool: pool)
    }

    deinit { storage.deallocate() }

    /// Bytes held by the packed panels.
    public var byteCount: Int { panelCount * columns * gemmNR * 4 }

    /// Element W[row, column] as packed (widened to float32). For tests and debugging.
    public func element(row: Int, column: Int) -> Float {
        precondition(row >= 0 && row < rows && column >= 0 && column < columns, "PackedMatrix: (\(row), \(column)) outside \(rows)x\(columns)")
        // Safe because the indices were checked against the shape above.
        return storage[(row / gemmNR) * columns * gemmNR + column * gemmNR + row % gemmNR]
    }
}
