// Kernels
//
// SIMD compute kernels for transformer inference and training, llm.c style: plain functions
// over caller-owned float32 buffers, each documented with the shapes of its buffers, forward
// and backward passes side by side. Knows nothing of files or models.
//
// Public API (status: final — names and argument labels are kept; new parameters only with
// defaults; new functions may be added):
//   ThreadPool                       deterministic parallel-for (threadCount, default = cores)
//   WeightType, widenFloat16/BFloat16  checkpoint element types, exact widening
//   PackedMatrix                     W (N, K) packed once into GEMM panels (f32/f16/bf16 source)
//   gemm(rows:a:…b: PackedMatrix…)   C (+)= op(A) · Wᵀ
//   gemm(m:n:k:…)                    general row-major sgemm with transposes (packs B itself)
//   matmulForward / matmulBackward   linear layer: y = x·Wᵀ + b; dX = dY·W, dW = dYᵀ·X, db
//   rmsnormForward, layernormForward
//   RotaryEmbedding (+ Llama3RopeScaling), ropeForward   HF rotate-half RoPE
//   attentionForward                 causal GQA attention, online softmax, no T×T buffer
//   swigluForward, geluForward       activations (GELU tanh approximation)
//   EmbeddingTable, embeddingForward token (+ position) embeddings from f32/f16/bf16 tables
//   softmaxForward, logsumexp, topKLogsumexp   (streaming top-K selection: TopK.swift)
//   lmHeadTopK                       LM head fused with top-K + logsumexp over vocab tiles
//   simdExp, scalarExp               vectorised e^x used by the above
//   KernelError                      bad input data (token ids, sequence lengths)
//
// Conventions: every buffer is row-major float32 unless stated; a shape comment names its
// dimensions (B batch, T positions, C channels, H heads, D head dim, V vocabulary). Shape
// mismatches between buffers are programming errors (preconditions); bad *data* (ids, lengths)
// throws KernelError. Every kernel gives identical results for any ThreadPool thread count.
