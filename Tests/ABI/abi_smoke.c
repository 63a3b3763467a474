/* A C program against Schemas/logitcache.h: checks the struct layouts the Swift side assumes,
 * writes a cache through the writer, reads it back through the cache and the loader, and
 * checks that bad input comes back as a status with a message, never an abort.
 * Usage: abi_smoke DIR   (DIR must not exist). Prints "N passed, M failed". */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "logitcache.h"

static int passed, failed;

static void check(int ok, const char *what) {
    if (ok) {
        passed++;
    } else {
        failed++;
        printf("FAILED: %s (last error: %s)\n", what, lc_last_error());
    }
}

/* An lc_shard_source over the files of a directory (context: the directory); `fail_fetch`
 * makes fetch fail with a message; `released` counts release calls. */
static int fail_fetch, released;

static lc_status source_tail(void *context, int64_t index, const char *name, int64_t size, uint8_t *buffer,
                             int64_t capacity, int64_t *length, char *message, int64_t message_capacity) {
    (void)index;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", (const char *)context, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) { snprintf(message, (size_t)message_capacity, "cannot open %s", path); return LC_ERR_IO; }
    *length = size;  /* the whole file is a valid tail */
    int ok = size > capacity || (fseek(f, 0, SEEK_SET) == 0 && fread(buffer, 1, (size_t)size, f) == (size_t)size);
    fclose(f);
    if (!ok) { snprintf(message, (size_t)message_capacity, "short read of %s", path); return LC_ERR_IO; }
    return LC_OK;
}

static lc_status source_fetch(void *context, int64_t index, const char *name, char *path, int64_t capacity,
                              char *message, int64_t message_capacity) {
    (void)index;
    if (fail_fetch) { snprintf(message, (size_t)message_capacity, "fetch of %s refused by the test", name); return LC_ERR_IO; }
    snprintf(path, (size_t)capacity, "%s/%s", (const char *)context, name);
    return LC_OK;
}

static void source_release(void *context, int64_t index, const char *name) {
    (void)context; (void)index; (void)name;
    released++;
}

#define V 97
#define K 5
#define N 40

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: abi_smoke DIR\n"); return 2; }
    const char *dir = argv[1];

    /* Layouts: the Swift side reads these structs as 8-byte slots. */
    check(offsetof(lc_batch, epoch) == 56 && offsetof(lc_batch, tokens) == 72, "lc_batch layout");
    check(sizeof(lc_rows) == 48 && sizeof(lc_cache_info) == 40 && sizeof(lc_sequence_info) == 40, "struct sizes");
    check(lc_abi_version() == LC_ABI_VERSION, "ABI version");

    /* Write one sequence of N positions with K descending entries each. */
    char desc[512];
    snprintf(desc, sizeof desc,
             "{\"vocabularySize\": %d, \"fingerprints\": {\"teacher\": \"t\", \"tokenizer\": \"tok\", \"corpus\": \"c\"},"
             " \"capture\": {\"policy\": \"top-k\", \"k\": %d}, \"logProbs\": \"float32\", \"blockTokens\": 16}", V, K);
    lc_writer *w = NULL;
    check(lc_writer_open(dir, desc, &w) == LC_OK && w != NULL, "writer opens");
    int32_t in[N], counts[N], ids[N * K];
    float next[N], lse[N], lps[N * K];
    for (int t = 0; t < N; t++) {
        in[t] = (t * 7) % V;
        next[t] = -1.5f;
        lse[t] = 3.0f;
        counts[t] = t % (K + 1);
        for (int j = 0; j < K; j++) {
            ids[t * K + j] = (t + 3 * j) % V;
            lps[t * K + j] = -1.0f - 0.5f * (float)j;  /* a distribution: the five hold 0.86 */
        }
    }
    check(lc_writer_begin_sequence(w, 1, 2, 0) == LC_OK, "begin sequence");
    check(lc_writer_append(w, N, in, next, lse, counts, ids, lps, K, NULL, NULL, NULL, 0) == LC_OK, "append");
    float bad[K] = {-1.0f, -0.5f, -2.0f, -3.0f, -4.0f};
    int32_t one = K;
    lc_status s = lc_writer_append(w, 1, in, next, lse, &one, ids, bad, K, NULL, NULL, NULL, 0);
    check(s == LC_ERR_INVALID_ARGUMENT && strstr(lc_last_error(), "descending") != NULL, "non-descending log-probs refused");
    check(lc_writer_end_sequence(w) == LC_OK, "end sequence");
    char *manifest = NULL;
    check(lc_writer_finish(w, &manifest) == LC_OK && manifest != NULL && strstr(manifest, "\"tokens\" : 40") != NULL,
          "finish returns the manifest");
    lc_string_free(manifest);
    lc_writer_close(w);

    /* Read it back. */
    lc_cache *c = NULL;
    check(lc_cache_open(dir, "tok", &c) == LC_OK, "cache opens");
    lc_cache_info info;
    check(lc_cache_info_get(c, &info) == LC_OK && info.tokens == N && info.max_entries == K && info.vocabulary_size == V, "info");
    int32_t rin[N], rcounts[N], rids[N * 3];
    float rnext[N], rlse[N], rlps[N * 3];
    lc_rows rows = {rin, rnext, rlse, rcounts, rids, rlps};
    check(lc_cache_read(c, 0, N, 3, &rows) == LC_OK, "read k=3");
    int same = 1;
    for (int t = 0; t < N; t++) {
        int c3 = counts[t] < 3 ? counts[t] : 3;
        same &= rin[t] == in[t] && rcounts[t] == c3 && rnext[t] == next[t] && rlse[t] == lse[t];
        for (int j = 0; j < 3; j++) {
            same &= j < c3 ? rids[t * 3 + j] == ids[t * K + j] && rlps[t * 3 + j] == lps[t * K + j]
                           : rids[t * 3 + j] == -1 && isinf(rlps[t * 3 + j]);
        }
    }
    check(same, "read values equal the written ones (prefix k=3, -1 / -inf past the count)");
    check(lc_cache_read(c, 0, N, K + 1, &rows) == LC_ERR_UNSUPPORTED, "k > K refused");
    check(lc_cache_read(c, 5, N + 1, 1, &rows) == LC_ERR_INVALID_ARGUMENT, "range past the end refused");
    lc_sequence_info q;
    check(lc_cache_sequence(c, 0, &q) == LC_OK && q.length == N && q.document_high == 1 && q.document_low == 2, "sequence 0");
    check(lc_cache_sequence(c, 1, &q) == LC_ERR_INVALID_ARGUMENT, "sequence 1 refused");
    lc_cache_close(c);
    check(lc_cache_open(dir, "other-tokenizer", &c) == LC_ERR_MISMATCH, "another tokenizer refused");

    /* The loader: 2 windows of 8 tokens, k = 2. */
    lc_loader *l = NULL;
    check(lc_loader_open(dir, "{\"batchSize\": 2, \"contextLength\": 8, \"k\": 2, \"seed\": 3}", &l) == LC_OK, "loader opens");
    int32_t win[2], x[16], y[16], tid[32], ec[16];
    float tw[32], tail[16];
    lc_batch b = {win, x, y, tid, tw, tail, ec, -1, -1, -1};
    check(lc_loader_next(l, &b) == LC_OK && b.epoch == 0 && b.index == 0 && b.tokens == 16, "first batch");
    int64_t e = -1, i = -1, n = -1;
    check(lc_loader_position(l, &e, &i, &n) == LC_OK && e == 0 && i == 1 && n == 3, "position after one batch");
    char *state = NULL;
    check(lc_loader_state(l, &state) == LC_OK && strstr(state, "\"batch\":1") != NULL, "state");
    check(lc_loader_resume(l, "{\"version\": 1}") == LC_ERR_INVALID_ARGUMENT, "bad state JSON refused");
    check(lc_loader_resume(l, state) == LC_OK, "resume from own state");
    lc_string_free(state);
    b.target_ids = NULL;
    check(lc_loader_next(l, &b) == LC_ERR_INVALID_ARGUMENT, "NULL buffer refused");
    lc_loader_close(l);
    check(lc_loader_open(dir, "{\"k\": 9}", &l) == LC_ERR_UNSUPPORTED && l == NULL, "loader k > K refused");
    check(lc_loader_open(dir, "{\"mode\": \"nonsense\"}", &l) == LC_ERR_INVALID_ARGUMENT, "unknown mode refused");

    /* The same cache through a shard source: read, loader over the cache, a failing fetch. */
    lc_shard_source src = {(void *)dir, source_tail, source_fetch, source_release};
    check(sizeof(lc_shard_source) == 32, "lc_shard_source layout");
    check(lc_cache_open_source(dir, "tok", &src, 1, &c) == LC_OK, "cache opens through a source");
    lc_rows rows2 = {rin, rnext, rlse, rcounts, rids, rlps};
    check(lc_cache_read(c, 0, N, 3, &rows2) == LC_OK && memcmp(rin, in, sizeof in) == 0, "read through the source");
    check(lc_loader_open_cache(c, "{\"batchSize\": 2, \"contextLength\": 8, \"k\": 2, \"seed\": 3}", &l) == LC_OK,
          "loader over the source cache");
    lc_cache_close(c);  /* the loader keeps the reader */
    b.target_ids = tid;
    check(lc_loader_next(l, &b) == LC_OK && b.tokens == 16, "batch through the source");
    lc_loader_close(l);
    check(released == 1, "the mapped shard released on close");
    fail_fetch = 1;
    check(lc_cache_open_source(dir, NULL, &src, 1, &c) == LC_OK, "opens without fetching");
    check(lc_cache_read(c, 0, 4, 1, &rows2) == LC_ERR_IO && strstr(lc_last_error(), "refused by the test") != NULL,
          "a failing fetch is the source's status and message");
    lc_cache_close(c);
    check(lc_cache_open_source(dir, NULL, &src, 0, &c) == LC_ERR_INVALID_ARGUMENT, "open_shards 0 refused");

    char *report = NULL;
    check(lc_verify(dir, &report) == LC_OK && strstr(report, "\"sound\":true") != NULL, "verify");
    lc_string_free(report);
    check(lc_cache_open("/nonexistent/cache", NULL, &c) == LC_ERR_IO && strlen(lc_last_error()) > 0, "missing cache is an I/O error");
    check(lc_writer_open(dir, "{\"vocabularySize\": 10}", &w) == LC_ERR_INVALID_ARGUMENT, "incomplete description refused");

    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
