"""The independent Python reader against caches the Swift writer wrote: every decoded value is
compared with `logitcache dump --json`; corrupt, truncated and hostile caches must give errors."""

import fractions
import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
import xxhash

from lc_testing import assert_matches_dump, assert_same_floats, probe, run, swift_dump, synth
import cache_edit
import logitcache
import logitcache.reader as lr

jsonschema = pytest.importorskip("jsonschema")

SCHEMAS = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, "Schemas")

# name -> synth arguments. Together: vocabularies 256/32000/262144, codecs none/lz4/zstd(+level),
# lossless and quantised (several steps), with and without samples, K = 0 (samples only),
# top-p (variable entry counts), one-token sequences, a short last sequence, several shards and
# blocks per shard, and two partitions merged.
CONFIGS = {
    "v256-none-q-sampled-onetoken": ["--seed", 1, "--vocab", 256, "--codec", "none", "--k", 8, "--sampled",
                                     "--draws", 8, "--tokens", 300, "--seq-len", 1, "--block-tokens", 64],
    "v32000-lz4-lossless-shards": ["--seed", 2, "--vocab", 32000, "--codec", "lz4", "--lossless", "--k", 64,
                                   "--tokens", 2000, "--seq-len", 333, "--block-tokens", 256,
                                   "--shard-bytes", 60000],
    "v262144-zstd-q-sampled-topp": ["--seed", 3, "--vocab", 262144, "--codec", "zstd", "--k", 32, "--top-p", 0.8,
                                    "--sampled", "--draws", 30, "--tokens", 1500, "--seq-len", 500,
                                    "--block-tokens", 300],
    "v32000-zstd19-k0-sampled": ["--seed", 4, "--vocab", 32000, "--codec", "zstd:19", "--k", 0, "--sampled",
                                 "--draws", 50, "--tokens", 700, "--seq-len", 128],
    "v262144-none-lossless-sampled": ["--seed", 5, "--vocab", 262144, "--codec", "none", "--lossless", "--k", 16,
                                      "--sampled", "--draws", 12, "--tokens", 700, "--seq-len", 129,
                                      "--block-tokens", 100],
    "v256-lz4-step10-topp": ["--seed", 6, "--vocab", 256, "--codec", "lz4", "--step-log2", 10, "--k", 40,
                             "--top-p", 0.5, "--tokens", 900, "--seq-len", 90, "--block-tokens", 128],
    "v32000-zstd-step0": ["--seed", 7, "--vocab", 32000, "--codec", "zstd", "--step-log2", 0, "--k", 64,
                          "--tokens", 400, "--seq-len", 400],
    # Format 1.0 files (byte planes only, what the writer made before the bucket filters).
    "v32000-zstd-format1.0": ["--seed", 10, "--vocab", 32000, "--codec", "zstd", "--k", 64, "--sampled",
                              "--draws", 10, "--tokens", 900, "--seq-len", 300, "--block-tokens", 256,
                              "--format-minor", 0],
}


@pytest.fixture(scope="module")
def caches(lc_bin, tmp_path_factory):
    root = tmp_path_factory.mktemp("caches")
    out = {name: synth(lc_bin, root / name, *args) for name, args in CONFIGS.items()}
    # Two partitions written independently, then merged without copying shard data.
    merged = root / "partitions"
    for p in range(2):
        synth(lc_bin, merged, "--seed", 8, "--vocab", 32000, "--codec", "zstd", "--k", 16, "--sampled",
              "--draws", 20, "--tokens", 1200, "--seq-len", 150, "--partition", p, "--partitions", 2,
              "--shard-bytes", 20000)
    run(lc_bin, "merge", merged)
    out["partitions-merged"] = str(merged)
    return out


def test_a_real_teachers_references_and_links_match_swift_dump(lc_bin, tmp_path):
    """Format 1.3 on a real teacher's rows (the built-in model over a slice of the built-in
    corpus): its top entries follow the input token, so the writer uses entry references as
    well as next-token links, and the Python reader must rebuild both, at every k."""
    repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir)
    import zstandard
    with open(os.path.join(repo, "Data/corpus/student-train.jsonl.zst"), "rb") as f:
        docs = zstandard.ZstdDecompressor().stream_reader(f).read().decode().splitlines()[:25]
    corpus = tmp_path / "slice.jsonl"
    corpus.write_text("\n".join(docs) + "\n")
    out = tmp_path / "cache"
    run(lc_bin, "teacher", "--model", os.path.join(repo, "Data/teacher"), "--tokenizer", os.path.join(repo, "Data/tokenizer.json"),
        "--corpus", corpus, "--out", out, "--context", 128, "--top-k", 32, "--block-tokens", 2048)
    with lr.Cache(str(out)) as cache:
        columns = {c for s in cache.shards for blk in s.blocks for c in blk["columns"]}
        assert {"entry_refs.0", "next_link"} <= columns, columns
        rows = assert_matches_dump(cache, swift_dump(lc_bin, str(out)))
        for k in (0, 3, 8, 20):
            part = cache.read(k=k)
            assert np.array_equal(part.input_ids, rows.input_ids) and np.array_equal(part.next_logprob.view(np.uint32),
                                                                                   rows.next_logprob.view(np.uint32))
            assert np.array_equal(part.entry_counts, np.minimum(rows.entry_counts, k))
        cache.verify()


@pytest.mark.parametrize("name", list(CONFIGS) + ["partitions-merged"])
def test_every_value_matches_swift_dump(name, caches, lc_bin):
    with lr.Cache(caches[name]) as cache:
        assert cache.tokens > 0
        assert_matches_dump(cache, swift_dump(lc_bin, caches[name]))
        stats = cache.verify()
        assert stats["tokens"] == cache.tokens


@pytest.mark.parametrize("name", ["v32000-lz4-lossless-shards", "v262144-zstd-q-sampled-topp", "v256-lz4-step10-topp",
                                  "partitions-merged"])
def test_prefix_ranges_sequences_and_padding(name, caches):
    with lr.Cache(caches[name]) as cache:
        full = cache.read()
        K = cache.max_entries
        for k in sorted({0, 1, 5, 8, K // 2 + 1, K, K + 3}):
            top = cache.read(k=k)
            assert np.array_equal(top.entry_counts, np.minimum(full.entry_counts, k))
            ids, lps, counts = top.padded_entries(k)
            fids, flps, _ = full.padded_entries(K)
            kk = min(k, K)
            mask = np.arange(kk)[None, :] < counts[:, None]
            assert np.array_equal(np.where(mask, fids[:, :kk], -1), ids[:, :kk])
            assert np.array_equal(np.where(mask, flps[:, :kk], -np.inf), lps[:, :kk])
            assert (ids[:, kk:] == -1).all() and np.isneginf(lps[:, kk:]).all()
            assert np.array_equal(top.sample_ids, full.sample_ids)
            padded = cache.read_padded(k=k)  # the dense path, block by block
            assert padded.entry_ids.shape == (cache.tokens, k)
            assert np.array_equal(padded.entry_counts, counts)
            assert np.array_equal(padded.entry_ids[:, :kk], ids[:, :kk]) and (padded.entry_ids[:, kk:] == -1).all()
            assert np.array_equal(padded.entry_logprobs[:, :kk], lps[:, :kk])
            assert np.isneginf(padded.entry_logprobs[:, kk:]).all()
            assert np.array_equal(padded.input_ids, full.input_ids)
        rng = np.random.default_rng(0)
        for _ in range(20):  # ranges across block and shard boundaries
            a, b = sorted(rng.integers(0, cache.tokens + 1, size=2))
            part = cache.read(int(a), int(b))
            whole = full.slice(int(a), int(b))
            for field in ("input_ids", "entry_offsets", "entry_ids", "sample_offsets", "sample_draws"):
                assert np.array_equal(getattr(part, field), getattr(whole, field)), field
            assert np.array_equal(part.entry_logprobs.view(np.uint32), whole.entry_logprobs.view(np.uint32))
            dense = cache.read_padded(int(a), int(b), k=7)
            assert np.array_equal(dense.entry_ids, part.padded_entries(7)[0])
        for i in range(cache.sequences):
            info, rows = cache.sequence(i)
            assert np.array_equal(rows.input_ids, full.input_ids[info.start:info.start + info.length])


def test_quantised_values_are_the_rounded_lossless_ones(lc_bin, tmp_path):
    """Section 5 from first principles: same seed written lossless and quantised at several steps
    h = m * 2^-b (None: the writer's default, 5 * 2^-8); each decoded value must be
    float32(-round_half_away(-l / h) * h), in exact rational arithmetic, within h/2 (+ float32
    rounding) of l."""
    common = ["--seed", 11, "--vocab", 32000, "--k", 64, "--tokens", 600, "--seq-len", 200, "--codec", "zstd"]
    with lr.Cache(synth(lc_bin, tmp_path / "exact", *common, "--lossless")) as cache:
        exact = cache.read()
    assert (exact.entry_logprobs < 0).all()
    for b, m in ((0, 1), (3, 1), (6, 1), (12, 1), (7, 3), (0, 255), (None, None)):
        flags = [] if b is None else ["--step-log2", b] + ([] if m == 1 else ["--step-multiplier", m])
        with lr.Cache(synth(lc_bin, tmp_path / f"q{b}-{m}", *common, *flags)) as cache:
            q = cache.read()
            if b is None:
                b, m = 8, 5
                # A cache without samples has no 1.4 feature: the writer records 1.3.
                assert cache.shards[0].footer["formatMinorVersion"] == 3
                assert cache.shards[0].footer["logProbs"] == {"encoding": "quantized", "stepLog2": 8, "stepMultiplier": 5}
            else:
                assert "stepMultiplier" not in cache.shards[0].footer["logProbs"] or m != 1
        assert np.array_equal(q.entry_ids, exact.entry_ids)
        assert_same_floats(q.next_logprob, exact.next_logprob, "next_logprob stays exact")
        h = fractions.Fraction(m, 2 ** b)
        Q = [min(int(fractions.Fraction(-float(l)) / h + fractions.Fraction(1, 2)), 2 ** 24 - 1)
             for l in exact.entry_logprobs.tolist()]
        want = -np.array([float(q * h) for q in Q], dtype=np.float64).astype(np.float32)  # Q = 0 gives -0.0
        assert_same_floats(q.entry_logprobs, want, f"step {m}*2^-{b}")
        err = np.abs(q.entry_logprobs.astype(np.float64) - exact.entry_logprobs)
        assert err.max() <= float(h) / 2 + 2.0 ** -23 * np.abs(exact.entry_logprobs).max()
        if (b, m) in ((6, 1), (8, 5)):
            assert err.max() <= 0.01


def test_manifests_and_footers_match_the_schemas(caches):
    schemas = {}
    for name in ("manifest", "footer"):
        with open(os.path.join(SCHEMAS, f"{name}.schema.json")) as f:
            schemas[name] = json.load(f)
        jsonschema.validators.validator_for(schemas[name]).check_schema(schemas[name])
    checked = {"manifest": 0, "footer": 0}
    for path in caches.values():
        for file in sorted(os.listdir(path)):
            if file.startswith("manifest"):
                m = lr.read_manifest(os.path.join(path, file), validate_schema=False)
                jsonschema.validate(m, schemas["manifest"])
                assert ("partition" in m) == (file != "manifest.json")
                checked["manifest"] += 1
            elif file.endswith(".lcs"):
                shard = lr.Shard(os.path.join(path, file), file, validate_schema=False)
                jsonschema.validate(shard.footer, schemas["footer"])
                shard.close()
                checked["footer"] += 1
    assert checked["manifest"] >= 2 * len(caches) and checked["footer"] > len(caches)
    # The schemas are not vacuous: they refuse what the spec forbids.
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"format": "logitcache"}, schemas["manifest"])
    with lr.Cache(caches["partitions-merged"]) as cache:
        m = json.loads(json.dumps(cache.manifest))
        m["shards"][0]["file"] = "../evil.lcs"
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(m, schemas["manifest"])
        ft = json.loads(json.dumps(cache.shards[0].footer))
        ft["blocks"][0]["chunks"][0]["codec"] = "brotli"
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(ft, schemas["footer"])


# ----------------------------------------------------------------------------------------------
# Inputs the Swift writer never produces but the spec allows: both readers must agree.


def test_empty_sequences(lc_bin, tmp_path, caches):
    """Length-0 sequences (section 1 allows n >= 0) at the start, middle and end of a shard."""
    path = str(tmp_path / "empty")
    shutil.copytree(caches["v32000-lz4-lossless-shards"], path)
    os.remove(os.path.join(path, "manifest.part-00000.json"))

    def add_empty(ft):
        st = ft["sequenceTable"]
        for at, key in ((len(st["lengths"]), "f" * 32), (1, "0123456789abcdef" * 2), (0, "0" * 32)):
            st["documentKeys"].insert(at, key)
            st["documentOffsets"].insert(at, 7)
            st["lengths"].insert(at, 0)
        ft["sequences"] += 3

    for shard in cache_edit.shard_files(path):
        cache_edit.rebuild_shard(shard, footer=add_empty)
    cache_edit.refresh_manifest(path)
    with lr.Cache(path) as cache:
        lengths = [cache.sequence_info(i).length for i in range(cache.sequences)]
        assert lengths.count(0) == 3 * len(cache.shards)
        assert cache.sequence(0)[1].tokens == 0
        assert_matches_dump(cache, swift_dump(lc_bin, path))
    run(lc_bin, "verify", path)


FORMAT_1_0_FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir,
                                  "Tests", "Golden", "format-1.0-historical")


def test_a_committed_format_1_0_cache_reads(lc_bin):
    """A cache written before format 1.1 (byte planes only) reads in both readers, identically."""
    with lr.Cache(FORMAT_1_0_FIXTURE) as cache:
        footer = cache.shards[0].footer
        assert "formatMinorVersion" not in footer
        assert {c["filter"] for b in footer["blocks"] for c in b["chunks"]} <= {"raw", "planes"}
        cache.verify()
        assert_matches_dump(cache, swift_dump(lc_bin, FORMAT_1_0_FIXTURE))


_dumps = {}
LAYOUTS = [(4, "raw", "none"), (4, "planes", "lz4"), (1, "raw", "zstd"), (4, "planes", "none"), (3, "planes", "lz4"),
           (1, "planes", "none"), (2, "raw", "lz4"), (1, "buckets", "none"), (4, "buckets", "lz4"),
           (2, "delta-buckets", "zstd"), (4, "delta-buckets", "none")]


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda l: f"w{l[0]}-{l[1]}-{l[2]}")
def test_other_valid_layouts_decode_identically(layout, lc_bin, tmp_path, caches):
    """Chunks in reverse file order, every chunk re-encoded with another width/filter/codec: the
    values must not change for either reader (section 3: readers use the offsets; section 6:
    any width that holds the values is valid). Widths are raised to hold each chunk's values."""
    src = caches["v262144-zstd-q-sampled-topp"]
    want = _dumps.get(src) or _dumps.setdefault(src, swift_dump(lc_bin, src))
    path = str(tmp_path / "layout")
    shutil.copytree(src, path)
    os.remove(os.path.join(path, "manifest.part-00000.json"))
    for shard in cache_edit.shard_files(path):
        cache_edit.rebuild_shard(shard, encoding=lambda b, col, c: layout, reverse=layout[0] % 2 == 1)
    cache_edit.refresh_manifest(path)
    with lr.Cache(path) as cache:
        assert_matches_dump(cache, want)
    assert swift_dump(lc_bin, path) == want, f"Swift reader disagrees on layout {layout}"


# ----------------------------------------------------------------------------------------------
# Faults: every single flipped byte and every truncation gives an error, never garbage.


def small_cache(lc_bin, tmp_path, *extra):
    return synth(lc_bin, tmp_path / "small", "--seed", 9, "--vocab", 32000, "--k", 8, "--sampled", "--draws", 6,
                 "--tokens", 60, "--seq-len", 25, "--block-tokens", 32, *extra)


def read_everything(path):
    with lr.Cache(path, validate_schema=False) as cache:
        return cache.read()


def damage(path, good, flip=None, cut=None):
    """Restores `good` in place, then flips one byte or cuts the file (in-place writes are fast)."""
    fd = os.open(path, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        if size != len(good):
            os.ftruncate(fd, min(size, len(good)))
        os.pwrite(fd, good, 0)
        if flip is not None:
            os.pwrite(fd, bytes([good[flip] ^ 0x5A]), flip)
        if cut is not None:
            os.ftruncate(fd, cut)
    finally:
        os.close(fd)


def probe_offsets(shard_path):
    """Every byte of the header and trailer, the edges of each chunk (first, middle, last byte),
    every 7th chunk byte and every 11th footer byte: each region that a different check guards."""
    shard = lr.Shard(shard_path, os.path.basename(shard_path), validate_schema=False)
    S, F = shard.size, shard.footer_offset
    offsets = set(range(16)) | set(range(S - 40, S)) | set(range(F, S - 40, 11)) | set(range(16, F, 7))
    for block in shard.blocks:
        for c in block["columns"].values():
            if c["size"]:
                offsets |= {c["offset"], c["offset"] + c["size"] // 2, c["offset"] + c["size"] - 1}
    shard.close()
    return sorted(offsets)


@pytest.mark.parametrize("codec", ["zstd", "none"])
def test_flipped_shard_bytes_are_detected(lc_bin, tmp_path, codec):
    path = small_cache(lc_bin, tmp_path, "--codec", codec)
    shard_path = cache_edit.shard_files(path)[0]
    name = os.path.basename(shard_path)
    with open(shard_path, "rb") as f:
        good = f.read()
    reference = read_everything(path)
    offsets = probe_offsets(shard_path)
    assert len(offsets) > 200
    for i in offsets:
        damage(shard_path, good, flip=i)
        # Whole-file checksum (verify) and, without it, the chunk/footer checks of a plain read.
        with pytest.raises(lr.CacheError):
            with lr.Cache(path, validate_schema=False) as cache:
                cache.verify()
        with pytest.raises(lr.CacheError, match=name):
            shard = lr.Shard(shard_path, name, validate_schema=False)
            try:
                for b in range(len(shard.blocks)):
                    shard.block(b)
            finally:
                shard.close()
    damage(shard_path, good)
    assert np.array_equal(read_everything(path).entry_ids, reference.entry_ids)


def test_truncations_are_detected(lc_bin, tmp_path):
    path = small_cache(lc_bin, tmp_path, "--codec", "lz4")
    shard_path = cache_edit.shard_files(path)[0]
    name = os.path.basename(shard_path)
    with open(shard_path, "rb") as f:
        good = f.read()
    S = len(good)
    for n in sorted(set(range(0, 80)) | set(range(80, S - 80, 7)) | set(range(S - 80, S))):
        damage(shard_path, good, cut=n)
        with pytest.raises(lr.CacheError, match=name):
            read_everything(path)
        with pytest.raises(lr.CacheError, match=name):  # structure alone, without the manifest's size
            lr.Shard(shard_path, name, validate_schema=False).close()
    damage(shard_path, good)
    read_everything(path)


def test_every_flipped_or_cut_manifest_byte_is_detected(lc_bin, tmp_path):
    path = small_cache(lc_bin, tmp_path)
    mpath = os.path.join(path, "manifest.json")
    with open(mpath, "rb") as f:
        good = f.read()
    for i in range(len(good)):
        for how in ({"flip": i}, {"cut": i}):
            damage(mpath, good, **how)
            with pytest.raises(lr.CacheError, match="manifest.json"):
                lr.read_manifest(mpath, validate_schema=False)
    damage(mpath, good)
    lr.Cache(path).close()


def test_chunk_errors_name_the_file_block_and_chunk(lc_bin, tmp_path):
    path = small_cache(lc_bin, tmp_path, "--codec", "none")
    shard_path = cache_edit.shard_files(path)[0]
    with lr.Cache(path) as cache:
        c = cache.shards[0].blocks[1]["columns"]["entry_logprobs.0"]
    with open(shard_path, "r+b") as f:
        f.seek(c["offset"] + 1)
        byte = f.read(1)
        f.seek(c["offset"] + 1)
        f.write(bytes([byte[0] ^ 1]))
    with lr.Cache(path) as cache:
        rows = cache.read(0, 32)  # block 0 is intact and still readable
        assert rows.tokens == 32
        with pytest.raises(lr.CacheError, match=r"part-00000-shard-000000\.lcs: block 1 chunk 'entry_logprobs\.0'.*checksum"):
            cache.read(32, 33)
        with pytest.raises(lr.CacheError, match="whole-file checksum"):
            cache.verify()
    assert run(lc_bin, "verify", path, check=False).returncode != 0


def test_non_finite_floats_match_swift_dump(lc_bin, tmp_path):
    """-inf next log-probs and entries (probability 0), +inf and NaN logsumexps are exact float32
    data: both readers return them and both dumps stay strict JSON (strings for non-finite)."""
    # Format 1.2: without next-token links, next_logprob holds every token's value, so index 0 is token 0.
    path = small_cache(lc_bin, tmp_path, "--lossless", "--codec", "lz4", "--format-minor", "2")
    bits = lambda x: int(np.array([x], np.float32).view(np.uint32)[0])
    with lr.Cache(path) as cache:
        last = int(cache.read(0, 1).entry_counts[0]) - 1  # token 0's last entry: -inf keeps the order
        bands = cache.shards[0].bands
    band = max(j for j in range(len(bands) - 1) if bands[j] <= last)  # token 0 opens every band

    def edit(b, col, v):
        if b != 0:
            return None
        if col == "next_logprob":
            v[0] = bits(-np.inf)
        elif col == "logsumexp":
            v[1], v[2] = bits(np.inf), bits(np.nan)
        elif col == f"entry_logprobs.{band}":
            v[last - bands[band]] = bits(-np.inf)
        else:
            return None
        return v
    for shard in cache_edit.shard_files(path):
        cache_edit.rebuild_shard(shard, values=edit)
    cache_edit.refresh_manifest(path)

    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    lines = [strict(line) for line in run(lc_bin, "dump", path, "--json").stdout.splitlines()]
    first = lines[0]["tokens"]
    assert (first[0]["next"], first[1]["lse"], first[2]["lse"], first[0]["logprobs"][-1]) == ("-inf", "inf", "nan", "-inf")
    with lr.Cache(path) as cache:
        rows = assert_matches_dump(cache, lines)
        assert np.isneginf(rows.next_logprob[0]) and np.isnan(rows.logsumexp[2])
        strict(json.dumps(lr.dump(cache)))
    proc = subprocess.run([sys.executable, "-m", "logitcache.reader", path, "--dump"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert strict(proc.stdout)["sequences"][0]["logsumexp"][1:3] == ["inf", "nan"]


# ----------------------------------------------------------------------------------------------
# Values that break the spec behind valid checksums: the reader's own checks must refuse them.


def forged(lc_bin, tmp_path, codec="zstd", **edits):
    path = small_cache(lc_bin, tmp_path, "--codec", codec)
    shard = cache_edit.shard_files(path)[0]
    cache_edit.rebuild_shard(shard, **edits)
    cache_edit.refresh_manifest(path)
    return path


def set_value(column, index, value, block=0):
    def edit(b, col, v):
        if b == block and col == column:
            v[index] = value
            return v
        return None
    return edit


def edit_links(fn):
    """Applies fn to block 0's next_link values in place (the block must have links)."""
    def edit(b, col, v):
        if b == 0 and col == "next_link":
            assert (v > 0).any(), "block 0 has no links to forge"
            fn(v)
            return v
        return None
    return edit


def footer_edit(fn):
    return {"footer": fn}


def repeat_first_id(column):
    """Makes block 0's first position with two or more ids stored in `column` repeat its first
    one (the count column, and sample references (format 1.4) where present, come earlier in
    the block, so they are seen first; with references only the samples they leave are stored)."""
    seen = {}

    def edit(b, col, v):
        if b != 0:
            return None
        if col in ({"entry_ids.0": "entry_count", "sample_ids": "sample_count"}[column], "sample_refs"):
            seen[col] = v.copy()
        elif col == column:
            c = seen.get("entry_count", seen.get("sample_count")).astype(np.int64)
            if column == "sample_ids" and "sample_refs" in seen:
                stored = (seen["sample_refs"] == 0).astype(np.int64)
                c = np.add.reduceat(stored, np.concatenate([[0], np.cumsum(c)[:-1]])) * (c > 0)
            t = int(np.argmax(c >= 2))
            start = int(c[:t].sum())
            v[start + 1] = v[start]
            return v
        return None
    return edit


def overlap_chunks(ft):
    """entry_count starts one byte before logsumexp ends (checksums stay valid)."""
    chunks = {c["column"]: c for c in ft["blocks"][0]["chunks"]}
    lse = chunks["logsumexp"]
    chunks["entry_count"]["offset"] = lse["offset"] + lse["size"] - 1


FORGERIES = {
    "repeated entry id": (dict(values=repeat_first_id("entry_ids.0")), r"repeats entry id"),
    "repeated sampled id": (dict(values=repeat_first_id("sample_ids")), r"repeats sampled id"),
    "NaN logsumexp": (dict(values=set_value("logsumexp", 5, 0x7FC00000)), r"NaN in logsumexp"),
    "overlapping chunks": (footer_edit(overlap_chunks), r"block 0 chunk 'entry_count'.*overlap.*'logsumexp'"),
    "input id = vocabularySize": (dict(values=set_value("input_ids", 3, 32000)), r"input_ids.*vocabularySize"),
    "sample id = vocabularySize": (dict(values=set_value("sample_ids", 0, 32000)), r"sample_ids.*vocabularySize"),
    "dictionary id = vocabularySize": (dict(values=set_value("entry_id_dict", 0, 32000)), r"entry_id_dict.*vocabularySize"),
    "dictionary rank = D": (dict(values=lambda b, col, v: (np.full_like(v, 10 ** 6) if col == "entry_ids.0" and b == 0 else None)),
                            r"entry_ids\.0.*dictionary rank"),
    "entry_count above K": (dict(values=set_value("entry_count", 0, 9)), r"entry_count"),
    "zero draws": (dict(values=set_value("sample_draws", 2, 0)), r"sample_draws"),
    "sample_count too big": (dict(values=set_value("sample_count", 0, 7)), r"sample_count"),
    "quantised running sum": (dict(values=set_value("entry_logprobs.0", 0, 2 ** 24 - 1, block=0)), r"2\^24-1"),
    "missing column": (footer_edit(lambda ft: ft["blocks"][0]["chunks"].pop(1)), r"block 0: missing column 'next_logprob'"),
    "unknown column": (footer_edit(lambda ft: ft["blocks"][0]["chunks"].append(dict(ft["blocks"][0]["chunks"][0], column="extra"))),
                       r"extra"),
    "block tokens": (footer_edit(lambda ft: ft["blocks"][0].update(tokens=31)), r"block 0: 31 tokens"),
    "band count": (footer_edit(lambda ft: [c.update(count=c["count"] + 1) for c in ft["blocks"][0]["chunks"]
                                           if c["column"] == "entry_ids.0"]), r"band 0|entry_ids\.0"),
    "sequence lengths": (footer_edit(lambda ft: ft["sequenceTable"]["lengths"].__setitem__(0, 24)), r"lengths sum"),
    "entry bands": (footer_edit(lambda ft: ft.update(entryBands=[0, 4])), r"entryBands"),
    "footer version": (footer_edit(lambda ft: ft.update(formatVersion=2)), r"formatVersion"),
    "chunk past footer": (footer_edit(lambda ft: ft["blocks"][-1]["chunks"][-1].update(size=10 ** 6)), r"past the footer"),
    "trailing byte": (dict(raw_chunks=lambda b, col, s: s + b"\0" if col == "input_ids" and b == 0 else s),
                      r"block 0 chunk 'input_ids'"),
    # Bucket filters (format 1.1): their own sizes must agree with the symbols.
    "bucket symbol size past the end": (dict(raw_chunks=lambda b, col, s: struct.pack("<I", len(s)) + s[4:]
                                             if col == "entry_ids.0" and b == 0 else s), r"block 0 chunk 'entry_ids\.0'.*symbol"),
    "bucket extra bits short": (dict(raw_chunks=lambda b, col, s: s[:-1] if col == "entry_ids.0" and b == 0 else s),
                                r"block 0 chunk 'entry_ids\.0'.*extra bits"),
    "bucket extra bits long": (dict(raw_chunks=lambda b, col, s: s + b"\0" if col == "entry_logprobs.0" and b == 0 else s),
                               r"block 0 chunk 'entry_logprobs\.0'.*extra bits"),
    "bucket filter in format 1.0": (footer_edit(lambda ft: (ft.pop("formatMinorVersion"), ft["logProbs"].pop("stepMultiplier"))),
                                    r"needs format 1\.1"),
    # Format 1.2: steps that are not powers of two.
    "step multiplier in format 1.1": (footer_edit(lambda ft: ft.update(formatMinorVersion=1)), r"stepMultiplier 5 needs format 1\.2"),
    "step multiplier 0": (footer_edit(lambda ft: ft["logProbs"].update(stepMultiplier=0)), r"stepMultiplier"),
    "footer minor above the reader's": (footer_edit(lambda ft: ft.update(formatMinorVersion=lr.FORMAT_MINOR_VERSION + 1)),
                                         r"formatMinorVersion"),
    # Format 1.4: sample references (section 4.7).
    "sample reference past the entries": (dict(values=set_value("sample_refs", 0, 200)), r"sample_refs"),
    "sample references in format 1.3": (footer_edit(lambda ft: ft.update(formatMinorVersion=3)),
                                        r"sample references need format 1\.4"),
    "stored sampled ids left over": (dict(values=lambda b, col, v: np.append(v, v[:1]) if col == "sample_ids" and b == 0 else None),
                                     r"sample_ids"),
    # Format 1.3: next-token links (section 4).
    "link past band 0": (dict(values=edit_links(lambda v: v.__setitem__(int(np.argmax(v > 0)), 9))),
                         r"block 0 chunk 'next_link'.*link to rank 8"),
    "link at the last token": (dict(values=edit_links(lambda v: (v.__setitem__(int(np.nonzero(v)[0][-1]), 0),
                                                                 v.__setitem__(len(v) - 1, 1)))),
                               r"block 0 chunk 'next_link'.*last token"),
    "a next log-prob delta missing": (dict(values=lambda b, col, v: v[:-1] if b == 0 and col == "next_logprob_delta" else None),
                                      r"block 0 chunk '(next_link|next_logprob|input_ids)"),
    "link column dropped": (footer_edit(lambda ft: ft["blocks"][0]["chunks"].__setitem__(
        slice(None), [c for c in ft["blocks"][0]["chunks"] if c["column"] != "next_link"])), r"come together"),
    "links in format 1.2": (footer_edit(lambda ft: ft.update(formatMinorVersion=2)), r"next-token links need format 1\.3"),
}


@pytest.mark.parametrize("what", list(FORGERIES))
def test_forged_values_are_refused(what, lc_bin, tmp_path):
    edits, pattern = FORGERIES[what]
    path = forged(lc_bin, tmp_path, **edits)
    with pytest.raises(lr.CacheError, match=pattern):
        with lr.Cache(path, validate_schema=False) as cache:
            cache.verify()
    # The Swift verifier finds it too, naming the shard.
    proc = run(lc_bin, "verify", path, check=False)
    assert proc.returncode == 1 and "PROBLEM" in proc.stdout and "shard-000000.lcs" in proc.stdout, proc.stdout + proc.stderr
    # Through the package's native library: errors (or values a plain read need not check),
    # never a crash; its verify report names the problem.
    if logitcache.native_available():
        out = probe(path, "native")
        assert out["verify"]["sound"] is False and any("shard-000000.lcs" in p for p in out["verify"]["problems"]), out
        for what in ("read", "loader"):
            assert out[what] == "ok" or out[what].startswith("CacheError: "), out


def test_repeated_shards_are_refused(lc_bin, tmp_path):
    """Section 7: a manifest naming one shard twice (or two names of one file) is refused."""
    path = small_cache(lc_bin, tmp_path)
    manifest_path = os.path.join(path, "manifest.json")
    good = lr.read_manifest(manifest_path)
    first = good["shards"][0]["file"]
    os.symlink(first, os.path.join(path, "alias.lcs"))
    for second, message in ((first, "listed twice"), ("alias.lcs", None)):
        m = json.loads(json.dumps(good))
        m["shards"] = [m["shards"][0], dict(m["shards"][0], file=second)]
        for key in ("tokens", "sequences", "entries", "samples", "bytes"):
            m["totals"][key] = sum(e[key] for e in m["shards"])
        cache_edit.write_manifest(manifest_path, m)
        with pytest.raises(lr.CacheError, match="listed twice"):
            lr.Cache(path)
        proc = run(lc_bin, "verify", path, check=False)
        assert proc.returncode == 1, proc.stdout
        assert (message or "same file as an earlier shard") in proc.stdout
        assert run(lc_bin, "dump", path, check=False).returncode == 2


def test_shard_names_are_confined_to_the_cache(lc_bin, tmp_path):
    path = small_cache(lc_bin, tmp_path)
    mpath = os.path.join(path, "manifest.json")
    good = lr.read_manifest(mpath)
    shard = good["shards"][0]["file"]
    outside = tmp_path / "outside.lcs"
    shutil.copy(os.path.join(path, shard), outside)
    os.symlink(outside, os.path.join(path, "link.lcs"))
    os.symlink(os.path.join(path, shard), os.path.join(path, "inside-link.lcs"))
    for name, pattern in (("../outside.lcs", "not a plain file name"), (str(outside), "not a plain file name"),
                          ("sub/x.lcs", "not a plain file name"), ("..", "not a plain file name"),
                          ("link.lcs", "outside the cache directory"), ("missing.lcs", "cannot open")):
        m = json.loads(json.dumps(good))
        m["shards"][0]["file"] = name
        cache_edit.write_manifest(mpath, m)
        for schema in (False, True):
            with pytest.raises(lr.CacheError, match=pattern if not schema or name in ("link.lcs", "missing.lcs") else "."):
                lr.Cache(path, validate_schema=schema).close()
    os.makedirs(os.path.join(path, "sub"))
    shutil.copy(outside, os.path.join(path, "sub", "deeper.lcs"))
    os.symlink(os.path.join("sub", "deeper.lcs"), os.path.join(path, "deeper-link.lcs"))
    m = json.loads(json.dumps(good))
    for name in ("inside-link.lcs", "deeper-link.lcs"):  # links that stay inside the directory are fine
        m["shards"][0]["file"] = name
        cache_edit.write_manifest(mpath, m)
        lr.Cache(path).close()
    m["shards"][0]["file"] = "inside-link.lcs"  # the same file twice, once through a link
    m["shards"].append(dict(m["shards"][0], file=shard))
    for key in m["totals"]:
        m["totals"][key] = sum(e[key] for e in m["shards"])
    cache_edit.write_manifest(mpath, m)
    with pytest.raises(lr.CacheError, match="listed twice"):
        lr.Cache(path).close()


# ----------------------------------------------------------------------------------------------
# The CLI


def test_cli(caches, lc_bin, tmp_path):
    path = caches["v262144-zstd-q-sampled-topp"]
    ok = subprocess.run([sys.executable, "-m", "logitcache.reader", path, "--verify", "--json"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    info = json.loads(ok.stdout)
    assert info["ok"] and info["verified"] and info["tokens"] == 1500 and info["vocabularySize"] == 262144
    dumped = subprocess.run([sys.executable, "-m", "logitcache.reader", path, "--dump"], capture_output=True, text=True)
    seqs = json.loads(dumped.stdout)["sequences"]
    assert [s["inputIds"] for s in seqs] == [[t["input"] for t in s["tokens"]] for s in swift_dump(lc_bin, path)]
    bad = str(tmp_path / "bad")
    shutil.copytree(path, bad)
    shard = cache_edit.shard_files(bad)[0]
    with open(shard, "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\0")
    fail = subprocess.run([sys.executable, "-m", "logitcache.reader", bad, "--verify"], capture_output=True, text=True)
    assert fail.returncode == 1 and "error: " in fail.stderr and os.path.basename(shard) in fail.stderr
