// Kernels
//
// SIMD compute kernels: packed register-tiled GEMM, norms, RoPE, attention, activations, softmax/logsumexp, top-K and losses, as forward/backward pairs, plus a parallel-for. Knows nothing of files or models.
