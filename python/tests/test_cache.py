"""`logitcache.Cache`: the native and pure backends read the same values from caches of every
format version, refuse the same things, and a damaged cache is a CacheError from the native
library, never a crash of the interpreter."""

import dataclasses
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

import logitcache as lc
import cache_edit
from lc_testing import REPO, probe, synth

FORMAT_1_0_FIXTURE = os.path.join(REPO, "Tests", "Golden", "format-1.0-historical")

# Every format minor version the writer makes (0: byte planes, 1: bucket filters, 2: steps m*2^-b,
# 3: next-token links and entry references), lossless and quantised, with samples, top-p, K = 0,
# several shards and blocks.
CONFIGS = {
    **{f"format-1.{m}": ["--seed", 20 + m, "--vocab", 32000, "--k", 16, "--sampled", "--draws", 10, "--tokens", 1500,
                         "--seq-len", 300, "--block-tokens", 256, "--format-minor", m, "--shard-bytes", 40000] for m in range(4)},
    **{f"format-1.{m}-lossless": ["--seed", 30 + m, "--vocab", 3000, "--k", 8, "--lossless", "--tokens", 900,
                                  "--seq-len", 200, "--block-tokens", 128, "--format-minor", m] for m in (0, 3)},
    "topp-lz4": ["--seed", 3, "--vocab", 262144, "--codec", "lz4", "--k", 32, "--top-p", 0.8, "--tokens", 700,
                 "--seq-len", 350, "--block-tokens", 100],
    "k0-sampled-none": ["--seed", 4, "--vocab", 500, "--codec", "none", "--k", 0, "--sampled", "--draws", 30,
                        "--tokens", 400, "--seq-len", 1],
    "step10-zstd19": ["--seed", 6, "--vocab", 256, "--codec", "zstd:19", "--step-log2", 10, "--k", 40,
                      "--tokens", 500, "--seq-len", 90, "--block-tokens", 64],
}


@pytest.fixture(scope="module")
def caches(lc_bin, tmp_path_factory):
    root = tmp_path_factory.mktemp("caches")
    out = {name: synth(lc_bin, root / name, *args) for name, args in CONFIGS.items()}
    merged = root / "partitions"
    for p in range(3):
        synth(lc_bin, merged, "--seed", 8, "--vocab", 2000, "--k", 8, "--tokens", 900, "--seq-len", 150,
              "--partition", p, "--partitions", 3, "--block-tokens", 100)
    lc.merge(merged) if lc.native_available() else subprocess.run([lc_bin, "merge", str(merged)], check=True)
    out["partitions-merged"] = str(merged)
    out["committed-format-1.0"] = FORMAT_1_0_FIXTURE
    return out


def assert_rows_equal(a: lc.Rows, b: lc.Rows):
    for f in dataclasses.fields(lc.Rows):
        x, y = getattr(a, f.name), getattr(b, f.name)
        assert x.dtype == y.dtype and x.shape == y.shape, (f.name, x.dtype, y.dtype, x.shape, y.shape)
        assert np.array_equal(x, y), f.name


NAMES = list(CONFIGS) + ["partitions-merged", "committed-format-1.0"]


@pytest.mark.parametrize("name", NAMES)
def test_native_and_pure_read_the_same_values(name, caches, native):
    with lc.Cache(caches[name], backend="native") as a, lc.Cache(caches[name], backend="pure") as b:
        assert (a.backend, b.backend) == ("native", "pure")
        for key in ("tokens", "sequences", "vocabulary_size", "max_entries", "max_samples"):
            assert getattr(a, key) == getattr(b, key), key
        assert a.manifest == b.manifest
        assert a.tokens > 0
        K, n = a.max_entries, a.tokens
        cuts = sorted({0, 1, n // 3, n // 2 + 7, n - 1, n})
        for k in sorted({0, min(1, K), K // 2, K}):
            assert_rows_equal(a.read(0, n, k), b.read(0, n, k))
            for lo, hi in zip(cuts, cuts[1:]):  # ranges that start and end inside blocks and shards
                assert_rows_equal(a.read(lo, hi, k), b.read(lo, hi, k))
        whole = a.read()
        assert whole.entry_ids.shape == (n, K)
        valid = np.arange(K)[None, :] < whole.entry_counts[:, None]
        assert (whole.entry_ids[~valid] == -1).all() and np.isneginf(whole.entry_logprobs[~valid]).all()
        assert (whole.entry_ids[valid] >= 0).all() and (whole.entry_ids < a.vocabulary_size).all()
        for lo, hi in [(0, n), (n // 3, n // 2 + 7)]:
            sa, sb = a.read_samples(lo, hi), b.read_samples(lo, hi)
            for x, y in zip(sa, sb):
                assert x.dtype == y.dtype and np.array_equal(x, y)
            assert sa.offsets[0] == 0 and len(sa.offsets) == hi - lo + 1 and sa.offsets[-1] == len(sa.ids) == len(sa.draws)
        if a.max_samples:
            assert len(a.read_samples().ids) > 0 and (a.read_samples().draws >= 1).all()
        for i in range(a.sequences):
            assert a.sequence(i) == b.sequence(i)
        assert sum(a.sequence(i).length for i in range(a.sequences)) == n
        assert a.verify() == b.verify() == {"sound": True, "problems": [], "shardsChecked": len(a.manifest["shards"]),
                                            "tokensChecked": n}


def test_rows_match_the_swift_dump(caches, lc_bin, backend_any):
    from lc_testing import swift_dump
    path = caches["format-1.3"]
    with lc.Cache(path, backend=backend_any) as c:
        rows = c.read()
        samples = c.read_samples()
        t = 0
        for seq in swift_dump(lc_bin, path):
            for tok in seq["tokens"]:
                assert rows.input_ids[t] == tok["input"]
                assert rows.entry_ids[t, :rows.entry_counts[t]].tolist() == tok["ids"]
                assert samples.ids[samples.offsets[t]:samples.offsets[t + 1]].tolist() == tok["sample_ids"]
                assert samples.draws[samples.offsets[t]:samples.offsets[t + 1]].tolist() == tok["sample_draws"]
                assert rows.next_token_logprobs[t] == np.float32(tok["next"]) and rows.logsumexps[t] == np.float32(tok["lse"])
                t += 1
        assert t == c.tokens


@pytest.fixture(params=["pure", "native"])
def backend_any(request):
    if request.param == "native":
        request.getfixturevalue("native")
    return request.param


def test_refusals_alike_in_both_backends(caches, backend_any):
    path = caches["format-1.3"]
    with lc.Cache(path, tokenizer_fingerprint="synthetic-vocab-32000", backend=backend_any) as c:
        K, n = c.max_entries, c.tokens
        with pytest.raises(lc.CacheError, match=rf"k = {K + 1} outside 0\.\.\.K = {K}"):
            c.read(0, 10, K + 1)
        with pytest.raises(IndexError):
            c.read(5, n + 1)
        with pytest.raises(IndexError):
            c.read(7, 6)
        with pytest.raises(IndexError):
            c.sequence(c.sequences)
        with pytest.raises(IndexError):
            c.read_samples(-1, 3)
    with pytest.raises(lc.CacheError):
        c.read(0, 1)  # closed
    with pytest.raises(lc.CacheError, match=r"manifest\.json: tokenizer fingerprint synthetic-vocab-32000 differs from the expected gpt2"):
        lc.Cache(path, tokenizer_fingerprint="gpt2", backend=backend_any)
    with pytest.raises(lc.CacheError):
        lc.Cache(os.path.join(path, "nowhere"), backend=backend_any)
    with pytest.raises(ValueError, match="backend"):
        lc.Cache(path, backend="fastest")


# ---- Damage: errors, never a crash

def damaged(lc_bin, tmp_path, how):
    path = synth(lc_bin, tmp_path / how, "--seed", 2, "--vocab", 1000, "--k", 8, "--tokens", 1200, "--seq-len", 200,
                 "--block-tokens", 128)
    shard = cache_edit.shard_files(path)[0]
    if how == "flipped chunk byte":
        with open(shard, "r+b") as f:
            f.seek(600)
            b = f.read(1)
            f.seek(600)
            f.write(bytes([b[0] ^ 0x10]))
    elif how == "truncated shard":
        with open(shard, "r+b") as f:
            f.truncate(os.path.getsize(shard) - 100)
    elif how == "shard outside the directory":
        mpath = os.path.join(path, "manifest.json")
        m = json.load(open(mpath))
        m["shards"][0]["file"] = "../" + m["shards"][0]["file"]
        cache_edit.write_manifest(mpath, m)
    elif how == "garbage manifest":
        with open(os.path.join(path, "manifest.json"), "w") as f:
            f.write("{not json")
    elif how == "missing shard":
        os.unlink(shard)
    return path


DAMAGE = ["flipped chunk byte", "truncated shard", "shard outside the directory", "garbage manifest", "missing shard"]


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_cache_is_a_cache_error_in_both_backends(lc_bin, tmp_path, how, native):
    path = damaged(lc_bin, tmp_path, how)
    results = {backend: probe(path, backend) for backend in ("native", "pure")}
    for backend, out in results.items():
        assert out["read"].startswith("CacheError: "), (backend, out)
        assert out["loader"].startswith("CacheError: "), (backend, out)
        assert out["verify"]["sound"] is False and out["verify"]["problems"], (backend, out)
    if how == "flipped chunk byte":
        # The shard and the chunk are named; the loader reports the cache, not its configuration.
        for out in results.values():
            assert "part-00000-shard-000000.lcs" in out["read"] and "checksum" in out["read"]
        assert "chunk" in results["native"]["read"] and "cache failed verification" in results["native"]["loader"]


def test_native_error_statuses(lc_bin, tmp_path, native):
    from logitcache import _native
    path = damaged(lc_bin, tmp_path, "flipped chunk byte")
    with lc.Cache(path, backend="native") as c:
        with pytest.raises(lc.CacheError) as e:
            c.read()
    assert e.value.status == _native.ERR_CHECKSUM and e.value.call == "lc_cache_read"
    (tmp_path / "b").mkdir()
    with pytest.raises(lc.CacheError) as e:
        lc.Cache(damaged(lc_bin, tmp_path / "b", "shard outside the directory"), backend="native")
    assert e.value.status == _native.ERR_UNSAFE_PATH
    with pytest.raises(lc.LoaderError) as e:
        lc.StudentLoader(path, backend="native", batch_size=2, context=64, k=99)
    assert e.value.status == _native.ERR_UNSUPPORTED and e.value.call == "lc_loader_open"
