import Foundation
import Testing
import Checkpoints
import Kernels
@testable import Models

/// The PyTorch reference written by tools/make_training_fixtures.py (float64, eager attention):
/// a fixed batch, teacher targets in every form, and per case the loss, a summary of every
/// parameter's gradient and a 20-step AdamW run.
struct TrainingReference {
    static let directory = fixtureRoot + "/training"

    struct Batch: Decodable {
        struct Case: Decodable {
            let name: String
            let model: String
            /// none | topk | sampled | tail | dense
            let form: String
            let lambda: Float
            let tau: Float
            let zLoss: Float
        }
        struct Optimizer: Decodable {
            let lr: Float, minLr: Float, warmup: Int, steps: Int
            let beta1: Float, beta2: Float, eps: Float, weightDecay: Float, clip: Float
        }
        let batch: Int
        let length: Int
        let k: Int
        /// tokens, labels (batch·length)
        let tokens: [Int32]
        let labels: [Int32]
        let cases: [Case]
        let optimizer: Optimizer
        let samples: Int
        let projections: Int
    }

    /// A gradient's norm, max |g|, ±1 projections and values at `sampleIndices`.
    struct Summary: Decodable {
        let norm: Double
        let max: Double?
        let projections: [Double]?
        let values: [Double]?
        /// A parameter tensor's first values (final weights only).
        let first: [Double]?
    }

    /// How far float32 PyTorch lands from the float64 reference: the floor of any float32 engine.
    struct Float32Floor: Decodable {
        /// Relative error of the pre-clip gradient norms (worst step).
        let gradientNorm: Double
        /// Largest absolute error of any final weight.
        let final: Double
    }

    struct CaseResult: Decodable {
        let float32: Float32Floor
        let loss: Double
        let crossEntropy: Double
        let distillation: Double
        let gradients: [String: Summary]
        /// Mean loss before each update, and the gradient norm before clipping.
        let steps: [Double]
        let gradientNorms: [Double]
        let final: [String: Summary]
    }

    struct Results: Decodable {
        let cases: [String: CaseResult]
        let fullGradients: String
    }

    /// Parsed once; a broken fixture fails every test that reads it (never a crash).
    private static let parsedBatch = Swift.Result { () throws -> Batch in try load("batch.json") }
    private static let parsedResults = Swift.Result { () throws -> Results in try load("reference.json") }
    static var batch: Batch { get throws { try parsedBatch.get() } }
    static var results: Results { get throws { try parsedResults.get() } }
    /// The cases to run; a placeholder that fails to load when the fixture is unreadable.
    static var caseNames: [String] { (try? batch.cases.map(\.name)) ?? ["unreadable batch.json"] }

    private static func load<Value: Decodable>(_ file: String) throws -> Value {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try decoder.decode(Value.self, from: Data(contentsOf: URL(fileURLWithPath: directory + "/" + file)))
    }

    /// Same ±1 pattern as the script's `sign`.
    static func sign(_ i: Int, _ p: Int) -> Double {
        ((i * 2_654_435_761 + (p + 1) * 40503) >> 13) & 1 == 0 ? 1 : -1
    }

    /// Same fixed indices as the script's `sample_indices`.
    static func sampleIndices(_ n: Int, count: Int) -> [Int] { (0..<count).map { s in (s * 7919 + s * s * 131) % n } }

    static func projections(_ x: [Float], count: Int) -> [Double] {
        (0..<count).map { p in x.indices.reduce(0.0) { $0 + sign($1, p) * Double(x[$1]) } }
    }

    static func norm(_ x: [Float]) -> Double { x.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot() }
}

/// One case's teacher targets in the loader's layout.
struct FixtureTargets {
    let kind: DistillationTargetKind
    let k: Int
    /// ids, weights (R, k) or weights (R, V) for dense; tail (R)
    let ids: [Int32], weights: [Float], tail: [Float]

    /// Reads `c`'s targets for `rows` rows of a `vocab`-wide model; refuses arrays of the wrong
    /// size, which the loss would read past.
    init(_ c: TrainingReference.Batch.Case, k: Int, rows: Int, vocab: Int) throws {
        let file = try SafetensorsFile(path: TrainingReference.directory + "/targets.safetensors")
        func values(_ part: String) throws -> [Float] {
            file.tensors[c.name + "." + part] == nil ? [] : try file.tensor(c.name + "." + part).floats()
        }
        switch c.form {
        case "none": kind = .none
        case "topk", "sampled": kind = .sparse
        case "tail": kind = .sparseWithTail
        case "dense": kind = .dense
        default: throw FixtureError.unreadable("batch.json: unknown form \(c.form)")
        }
        self.k = kind == .sparse || kind == .sparseWithTail ? k : 0
        ids = try values("ids").map { Int32($0) }
        weights = try values("weights")
        tail = try values("tail")
        let sizes: (ids: Int, weights: Int, tail: Int) = switch kind {
        case .none: (0, 0, 0)
        case .sparse: (rows * k, rows * k, 0)
        case .sparseWithTail: (rows * k, rows * k, rows)
        case .dense: (0, rows * vocab, 0)
        }
        guard ids.count == sizes.ids, weights.count == sizes.weights, tail.count == sizes.tail else {
            throw FixtureError.unreadable("targets.safetensors: \(c.name) holds \(ids.count) ids, \(weights.count) weights, "
                                          + "\(tail.count) tails; expected \(sizes)")
        }
    }

    func with<R>(_ body: (DistillationTargets) throws -> R) rethrows -> R {
        try ids.withUnsafeBufferPointer { i in
            try weights.withUnsafeBufferPointer { w in
                try tail.withUnsafeBufferPointer { t in
                    try body(DistillationTargets(kind: kind, k: k, ids: i.baseAddress, weights: w.baseAddress,
                                                 tail: t.baseAddress))
                }
            }
        }
    }
}

@Suite struct TrainingParityTests {
    typealias Fixture = TrainingReference

    /// One case's model, targets and activations, ready to run steps.
    struct Run {
        let model: TrainableLlama
        let targets: FixtureTargets
        let mix: LossMix
        let activations: TrainingActivations
        let pool = ThreadPool(threadCount: 2)
        let reference: TrainingReference.CaseResult

        init(_ name: String) throws {
            let b = try Fixture.batch
            guard let c = b.cases.first(where: { $0.name == name }), let r = try Fixture.results.cases[name] else {
                throw FixtureError.unreadable("training fixture: no case \(name)")
            }
            guard b.tokens.count == b.batch * b.length, b.labels.count == b.tokens.count else {
                throw FixtureError.unreadable("batch.json: tokens/labels do not hold batch × length values")
            }
            model = try TrainableLlama(directory: Fixture.directory + "/" + c.model)
            targets = try FixtureTargets(c, k: b.k, rows: b.batch * b.length, vocab: model.config.vocabSize)
            mix = LossMix(lambda: c.lambda, temperature: c.tau, zLoss: c.zLoss)
            activations = TrainingActivations(batch: b.batch, length: b.length, config: model.config)
            reference = r
        }

        /// Zeroes the gradients, runs forward, loss and backward; returns the mean loss parts.
        func lossAndGradients() throws -> (total: Double, crossEntropy: Double, distillation: Double) {
            let b = try Fixture.batch
            model.zeroGradients()
            try b.tokens.withUnsafeBufferPointer { try model.forward(tokens: $0.baseAddress!, activations: activations, pool: pool) }
            let (parts, rows) = targets.with { t in
                b.labels.withUnsafeBufferPointer {
                    model.loss(labels: $0.baseAddress!, targets: t, mix: mix, activations: activations, pool: pool)
                }
            }
            try b.tokens.withUnsafeBufferPointer { try model.backward(tokens: $0.baseAddress!, activations: activations, pool: pool) }
            let n = Double(rows)
            return (parts.total / n, parts.crossEntropy / n, parts.distillation / n)
        }

        func values(_ t: ParameterLayout.Tensor, _ buffer: UnsafeMutablePointer<Float>) -> [Float] {
            Array(UnsafeBufferPointer(start: buffer + t.offset, count: t.count))
        }
    }

    static func relative(_ a: Double, _ b: Double) -> Double { abs(a - b) / max(abs(b), 1e-30) }

    /// Loss parts to 1e-5 relative; every parameter tensor's gradient: norm and four ±1
    /// projections over the whole tensor within 3e-4·‖g‖ (the error an NSE of 1e-7 allows),
    /// eight sampled values within 1e-4·max|g|.
    @Test(arguments: Fixture.caseNames)
    func lossAndEveryGradientMatchPyTorch(name: String) throws {
        let run = try Run(name)
        let r = run.reference, b = try Fixture.batch
        let loss = try run.lossAndGradients()
        #expect(Self.relative(loss.total, r.loss) <= 1e-5, "\(name): loss \(loss.total) vs PyTorch \(r.loss)")
        #expect(Self.relative(loss.crossEntropy, r.crossEntropy) <= 1e-5, "\(name): CE \(loss.crossEntropy) vs \(r.crossEntropy)")
        #expect(abs(loss.distillation - r.distillation) <= 1e-5 * abs(r.distillation),
                "\(name): KD \(loss.distillation) vs \(r.distillation)")
        #expect(Set(run.model.layout.tensors.map(\.name)) == Set(r.gradients.keys), "\(name): tensor sets differ")
        for t in run.model.layout.tensors {
            guard let s = r.gradients[t.name], let max = s.max, let projections = s.projections, let values = s.values else {
                Issue.record("\(name): no reference gradient for \(t.name)")
                continue
            }
            let g = run.values(t, run.model.grads)
            #expect(s.norm > 1e-6, "\(name) \(t.name): reference gradient vanishes; the case tests nothing")
            let tolerance = 3e-4 * s.norm
            #expect(abs(Fixture.norm(g) - s.norm) <= tolerance, "\(name) \(t.name): ‖g‖ \(Fixture.norm(g)) vs \(s.norm)")
            for (p, (mine, theirs)) in zip(Fixture.projections(g, count: b.projections), projections).enumerated() {
                #expect(abs(mine - theirs) <= tolerance, "\(name) \(t.name): projection \(p) \(mine) vs \(theirs)")
            }
            for (i, v) in zip(Fixture.sampleIndices(t.count, count: b.samples), values) {
                #expect(abs(Double(g[i]) - v) <= 1e-4 * max, "\(name) \(t.name)[\(i)]: \(g[i]) vs \(v)")
            }
        }
    }

    /// The case stored in full: every tensor's normalised squared error <= 1e-7 and largest
    /// difference <= 1e-4 of its largest entry.
    @Test func fullGradientsMatchPyTorch() throws {
        let name = try Fixture.results.fullGradients
        let run = try Run(name)
        _ = try run.lossAndGradients()
        let file = try SafetensorsFile(path: Fixture.directory + "/gradients.safetensors")
        #expect(Set(file.names) == Set(run.model.layout.tensors.map(\.name)))
        for t in run.model.layout.tensors {
            let reference = try file.tensor(t.name).floats()
            let g = run.values(t, run.model.grads)
            #expect(reference.count == g.count)
            var error = 0.0, scale = 0.0, worst = 0.0, largest = 0.0
            for (a, b) in zip(g, reference) {
                let d = Double(a) - Double(b)
                error += d * d
                scale += Double(b) * Double(b)
                worst = Swift.max(worst, abs(d))
                largest = Swift.max(largest, abs(Double(b)))
            }
            #expect(error <= 1e-7 * scale, "\(name) \(t.name): normalised squared error \(error / scale)")
            #expect(worst <= 1e-4 * largest, "\(name) \(t.name): max |diff| \(worst), max |g| \(largest)")
        }
    }

    /// 20 steps of AdamW (decay on matrices), global-norm clipping and the warmup + cosine
    /// schedule: the loss before every update to 1e-4 relative; the pre-clip gradient norm and
    /// the final weights (norms, first values) to 1e-4, or to 10× float32 PyTorch's own distance
    /// from the float64 reference where that is larger (a run that memorises its batch).
    @Test(arguments: Fixture.caseNames)
    func adamWRunTracksPyTorchStepByStep(name: String) throws {
        let run = try Run(name)
        let r = run.reference, o = try Fixture.batch.optimizer
        let m = run.model
        let adam = AdamW(count: m.parameterCount,
                         settings: .init(beta1: o.beta1, beta2: o.beta2, epsilon: o.eps, weightDecay: o.weightDecay),
                         decayRanges: m.layout.decayRanges)
        let schedule = LearningRateSchedule(maxLR: o.lr, minLR: o.minLr, warmupSteps: o.warmup, totalSteps: o.steps)
        let normTolerance = Swift.max(1e-4, 10 * r.float32.gradientNorm)
        let weightTolerance = Swift.max(1e-4, 10 * r.float32.final)
        #expect(r.steps.count == o.steps && r.gradientNorms.count == o.steps)
        #expect(r.gradientNorms.contains { $0 > Double(o.clip) } && r.gradientNorms.contains { $0 < Double(o.clip) },
                "\(name): clipping should act on some steps and not on others")
        for (t, (reference, referenceNorm)) in zip(r.steps, r.gradientNorms).enumerated() {
            let loss = try run.lossAndGradients().total
            let norm = clipGradientNorm(m.grads, count: m.parameterCount, maxNorm: o.clip)
            adam.update(params: m.params, grads: m.grads, lr: schedule.rate(at: t))
            #expect(Self.relative(loss, reference) <= 1e-4, "\(name) step \(t): loss \(loss) vs PyTorch \(reference)")
            #expect(Self.relative(Double(norm), referenceNorm) <= normTolerance,
                    "\(name) step \(t): gradient norm \(norm) vs PyTorch \(referenceNorm)")
        }
        for t in m.layout.tensors {
            guard let s = r.final[t.name], let first = s.first else {
                Issue.record("\(name): no reference weights for \(t.name)")
                continue
            }
            let p = run.values(t, m.params)
            #expect(Self.relative(Fixture.norm(p), s.norm) <= weightTolerance, "\(name) \(t.name): final ‖p‖ \(Fixture.norm(p)) vs \(s.norm)")
            for (i, (mine, v)) in zip(p, first).enumerated() {
                #expect(abs(Double(mine) - v) <= weightTolerance * Swift.max(1, abs(v)), "\(name) \(t.name)[\(i)]: \(mine) vs \(v)")
            }
        }
    }
}
