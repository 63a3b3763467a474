/*
 * logitcache.h — the C ABI of LogitCache: read, load, write and verify caches from any language.
 *
 * The library (`libLogitCacheABI.so` / `.dylib`, built by `swift build -c release --product
 * LogitCacheABI`) is the same Swift code as the `logitcache` command: one codec, one loader, one
 * writer. The Python package binds it with ctypes; C, C++ and Rust include this header.
 *
 * Conventions
 * - Every fallible call returns an `lc_status`; LC_OK (0) is success. On failure the message of
 *   the calling thread's last error (naming the file, block and chunk where one is involved) is
 *   `lc_last_error()`, valid until the thread's next call into the library. No call aborts the
 *   host process on bad input: a damaged cache, a bad argument or a second writer is a status.
 * - Handles (`lc_cache`, `lc_loader`, `lc_writer`) are opaque; one thread at a time per handle.
 *   Distinct handles may be used from distinct threads.
 * - Arrays are caller-owned, C-contiguous, little-endian native types; shapes are given as
 *   [dim, ...] beside each pointer. The library never keeps a caller pointer past the call.
 * - Strings returned through `char **` are UTF-8, NUL-terminated and owned by the caller:
 *   release them with `lc_string_free`.
 * - Structured settings and results (manifests, loader configurations and states, writer
 *   descriptions, verify reports) are JSON objects whose keys are those of the manifest and
 *   the JSON Schemas in Schemas/ (camelCase), so the ABI does not change when a field is added.
 *
 * Truncation vocabulary (one name per idea across Swift, this ABI and Python):
 * - capture policy, what a teacher pass kept: "top-k", "top-p", "sampled", "head-tail",
 *   "top-k+sampled" (manifest `capture.policy`, with `k`, `topP`, `samples`, `temperature`);
 * - target mode, what a student reads: "renormalized", "tail", "sampled" (loader `mode`, with
 *   `k` and `temperature`).
 */
#ifndef LOGITCACHE_H
#define LOGITCACHE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LC_ABI_VERSION 1

typedef enum lc_status {
    LC_OK = 0,
    LC_ERR_INVALID_ARGUMENT = 1, /* a null pointer, a range, bad JSON, an unknown name */
    LC_ERR_IO = 2,               /* a system call failed (the message names the call and errno) */
    LC_ERR_MALFORMED = 3,        /* not a valid cache file or manifest (file and chunk named) */
    LC_ERR_CHECKSUM = 4,         /* stored bytes do not match their checksum */
    LC_ERR_MISMATCH = 5,         /* manifests, shards, tokenizer or vocabulary disagree */
    LC_ERR_UNSUPPORTED = 6,      /* the cache lacks what was asked (k > K, no samples, ...) */
    LC_ERR_STATE = 7,            /* a resume state of another configuration or cache */
    LC_ERR_UNSAFE_PATH = 8,      /* a manifest names a file outside its directory */
    LC_ERR_LOCKED = 9            /* another writer holds the cache or partition */
} lc_status;

typedef struct lc_cache lc_cache;
typedef struct lc_loader lc_loader;
typedef struct lc_writer lc_writer;

/* LC_ABI_VERSION of the library; a binding refuses a library whose value differs. */
uint32_t lc_abi_version(void);
/* The calling thread's last error message ("" if none). Owned by the library. */
const char *lc_last_error(void);
void lc_string_free(char *string);

/* ---- Cache: manifest, sequences, rows --------------------------------------------------- */

/* Opens the cache in `directory` (manifest and every shard footer checked; shards mapped).
 * `tokenizer_fingerprint` may be NULL; otherwise a cache of another tokenizer is refused. */
lc_status lc_cache_open(const char *directory, const char *tokenizer_fingerprint, lc_cache **out);
void lc_cache_close(lc_cache *cache);

/* Where a cache's shards come from when they are fetched on demand (a remote cache). The library
 * calls these from any of its threads, one call per shard at a time.
 *   tail:    copies the last bytes of shard `index` (file `name` of the manifest, `size` bytes):
 *            at least its footer and 40-byte trailer, at most the whole file, into `buffer`
 *            (`capacity` bytes), and sets `*length` to the number it has. When `*length` exceeds
 *            `capacity` nothing was copied; the library calls again with `*length` bytes of room.
 *   fetch:   writes the NUL-terminated local path of the whole shard, already checked against the
 *            manifest's size and checksum, into `path` (`capacity` bytes).
 *   release: the library no longer maps the shard; its file may be evicted.
 * tail and fetch return LC_OK, or another status with a NUL-terminated message in `message`
 * (`message_capacity` bytes), which becomes lc_last_error of the call that needed the shard. */
typedef struct lc_shard_source {
    void *context;
    lc_status (*tail)(void *context, int64_t index, const char *name, int64_t size, uint8_t *buffer,
                      int64_t capacity, int64_t *length, char *message, int64_t message_capacity);
    lc_status (*fetch)(void *context, int64_t index, const char *name, char *path, int64_t capacity,
                       char *message, int64_t message_capacity);
    void (*release)(void *context, int64_t index, const char *name);
} lc_shard_source;

/* Opens the cache whose manifest is `directory`/manifest.json, reading only each shard's end now
 * (its footer is checked against the manifest). A shard is fetched through `source` and mapped
 * when a read first needs it; its footer must equal the one read at open. At most `open_shards`
 * (>= 1) stay mapped: the least recently read is released first. `*source` is copied; its
 * context must outlive the cache and every loader opened from it. */
lc_status lc_cache_open_source(const char *directory, const char *tokenizer_fingerprint,
                               const lc_shard_source *source, int64_t open_shards, lc_cache **out);

/* The manifest as JSON (keys of Schemas/manifest.schema.json). */
lc_status lc_cache_manifest(lc_cache *cache, char **json);

typedef struct lc_cache_info {
    int64_t tokens;          /* positions in the cache */
    int64_t sequences;
    int64_t vocabulary_size; /* V */
    int64_t max_entries;     /* K: most exact entries per position */
    int64_t max_samples;     /* most distinct sampled ids per position (0: no samples) */
} lc_cache_info;
lc_status lc_cache_info_get(lc_cache *cache, lc_cache_info *out);

typedef struct lc_sequence_info {
    int64_t first_token;     /* global index of its first position */
    int64_t length;          /* positions */
    int64_t document_offset; /* token offset inside its document */
    uint64_t document_high;  /* 128-bit document key, high word */
    uint64_t document_low;
} lc_sequence_info;
lc_status lc_cache_sequence(lc_cache *cache, int64_t index, lc_sequence_info *out);

/* Decodes positions [start, stop) with the first k <= K entries of each (a prefix read).
 * n = stop - start. Outputs, each may be NULL when not wanted:
 *   input_ids [n] int32, next_token_logprobs [n] float, logsumexps [n] float,
 *   entry_counts [n] int32 (<= k), entry_ids [n, k] int32 (-1 past the count),
 *   entry_logprobs [n, k] float (-inf past the count). */
typedef struct lc_rows {
    int32_t *input_ids;
    float *next_token_logprobs;
    float *logsumexps;
    int32_t *entry_counts;
    int32_t *entry_ids;
    float *entry_logprobs;
} lc_rows;
lc_status lc_cache_read(lc_cache *cache, int64_t start, int64_t stop, int64_t k, const lc_rows *out);

/* Sampled entries of positions [start, stop): sample_offsets [n + 1] int64 (CSR offsets into the
 * next two arrays, starting at 0), sample_ids [capacity] int32, sample_draws [capacity] uint32.
 * `*needed` receives the number of sampled entries; LC_ERR_INVALID_ARGUMENT if it exceeds
 * `capacity` (call again with a larger buffer; at most n * max_samples). */
lc_status lc_cache_read_samples(lc_cache *cache, int64_t start, int64_t stop, int64_t *sample_offsets,
                                int32_t *sample_ids, uint32_t *sample_draws, int64_t capacity, int64_t *needed);

/* Checks every shard's bytes against the manifest, every chunk checksum and every value rule.
 * `report_json`: {"sound": bool, "problems": [string], "shardsChecked": int, "tokensChecked": int}.
 * Returns LC_OK when the check ran (whether or not the cache is sound). */
lc_status lc_verify(const char *directory, char **report_json);

/* ---- Student loader: the Swift StudentLoader's batches ---------------------------------- */

/* `configuration_json`: {"batchSize", "contextLength", "k", "mode", "temperature", "seed", "rank",
 * "worldSize", "shuffleBuffer", "remainder" ("pad" | "drop"), "decodeThreads", "prefetchBlocks"};
 * absent keys take the Swift defaults. Optional "tokenizerFingerprint" and "vocabularySize"
 * refuse a cache of another student vocabulary. */
lc_status lc_loader_open(const char *directory, const char *configuration_json, lc_loader **out);
/* The same loader over an open cache (a cache of lc_cache_open_source fetches shards on demand).
 * The loader keeps what it needs of `cache`; closing `cache` first is allowed. */
lc_status lc_loader_open_cache(lc_cache *cache, const char *configuration_json, lc_loader **out);
/* Stops the decode threads, waits for each to finish its unit, and frees the loader: nothing of
 * it (its cache reader, a shard source's callbacks) runs after this returns. */
void lc_loader_close(lc_loader *loader);

/* This rank's batches in the current epoch, and the current epoch and batch index. */
lc_status lc_loader_position(lc_loader *loader, int64_t *epoch, int64_t *batch, int64_t *batches_in_epoch);

/* One batch of B windows, T tokens, k slots (from the configuration), into caller buffers:
 *   windows [B] int32 (-1: padding window), input_ids [B, T] int32, labels [B, T] int32 (-1: no
 *   label), target_ids [B, T, k] int32 (-1: unused slot), target_weights [B, T, k] float,
 *   tail_mass [B, T] float, entry_counts [B, T] int32. Epochs follow each other without end.
 * `epoch`, `index` and `tokens` (real positions) are written back. */
typedef struct lc_batch {
    int32_t *windows;
    int32_t *input_ids;
    int32_t *labels;
    int32_t *target_ids;
    float *target_weights;
    float *tail_mass;
    int32_t *entry_counts;
    int64_t epoch;
    int64_t index;
    int64_t tokens;
} lc_batch;
lc_status lc_loader_next(lc_loader *loader, lc_batch *batch);

/* Moves to batch `batch` of epoch `epoch` (the epoch's batch count means the next epoch). */
lc_status lc_loader_seek(lc_loader *loader, int64_t epoch, int64_t batch);
/* The position as JSON (Swift `LoaderState`), and resuming from one; a state may carry the
 * earlier layouts of its epoch ("segments") for an elastic resume at another world size. */
lc_status lc_loader_state(lc_loader *loader, char **state_json);
lc_status lc_loader_resume(lc_loader *loader, const char *state_json);

/* ---- Writer: one partition of a cache ---------------------------------------------------- */

/* `description_json`: {
 *   "vocabularySize": V, "fingerprints": {"teacher", "tokenizer", "corpus"},
 *   "capture": {"policy", "k", "topP"?, "samples", "temperature", "seed"},
 *   "partition": i, "partitionCount": N,                              (default 0 of 1)
 *   "codec": "zstd" | "lz4" | "none", "level": int,                   (default zstd 3)
 *   "logProbs": "quantized" | "float32", "stepLog2": b, "stepMultiplier": m,
 *   "blockTokens": int, "targetShardBytes": int,
 *   "origin": {"tool", "teacher"?, "device"?, "note"?} }                (optional, FORMAT.md section 7)
 * Opens or resumes partition i: shards published by an earlier run are adopted and their
 * sequence count is `lc_writer_resumed_sequences` (the caller skips that many sequences). */
lc_status lc_writer_open(const char *directory, const char *description_json, lc_writer **out);
int64_t lc_writer_resumed_sequences(lc_writer *writer);

lc_status lc_writer_begin_sequence(lc_writer *writer, uint64_t document_high, uint64_t document_low,
                                   int64_t document_offset);
/* Appends n positions to the open sequence. Per position i: input_ids[i], next_token_logprobs[i]
 * (exact log-prob of the real next token), logsumexps[i] (full-vocabulary logsumexp of
 * logits / temperature), entry_counts[i] entries from row i of entry_ids / entry_logprobs
 * [n, entry_stride] (descending probability), and, when sample_counts is not NULL,
 * sample_counts[i] distinct sampled ids with their draw counts from row i of sample_ids /
 * sample_draws [n, sample_stride]. */
lc_status lc_writer_append(lc_writer *writer, int64_t n, const int32_t *input_ids, const float *next_token_logprobs,
                           const float *logsumexps, const int32_t *entry_counts, const int32_t *entry_ids,
                           const float *entry_logprobs, int64_t entry_stride, const int32_t *sample_counts,
                           const int32_t *sample_ids, const uint32_t *sample_draws, int64_t sample_stride);
lc_status lc_writer_end_sequence(lc_writer *writer);
/* Adds to the teacher cost recorded in the manifest. */
lc_status lc_writer_add_cost(lc_writer *writer, int64_t tokens, double flops, double seconds);
/* Publishes the last shard and the partition manifest (with one partition, also manifest.json);
 * `manifest_json` (may be NULL) receives the partition manifest. */
lc_status lc_writer_finish(lc_writer *writer, char **manifest_json);
/* Releases the writer. Without finish, shards already published stay and a rerun resumes. */
void lc_writer_close(lc_writer *writer);

/* Builds manifest.json from every partition manifest in `directory` (no data copied). */
lc_status lc_merge(const char *directory, char **manifest_json);

#ifdef __cplusplus
}
#endif
#endif /* LOGITCACHE_H */
