"""`logitcache.CacheWriter` (native): rows written from Python read back identically through
both backends and the Swift command, partitions merge, an unfinished writer resumes, and bad
input is refused with a CacheError naming the problem."""

import json
import os

import numpy as np
import pytest

import logitcache as lc
from lc_testing import FINGERPRINTS, random_rows, run, write_cache

pytestmark = pytest.mark.usefixtures("native")

DEFAULT_STEP = 5 / 256  # the format's default log-prob step (format 1.2+), error <= step / 2


def expected_rows(written, k):
    """The rows a reader should give for `written` (write_cache's result), concatenated."""
    cat = lambda key: np.concatenate([rows[key] for _, rows in written])
    ids = cat("entry_ids")[:, :k]
    counts = (ids >= 0).sum(axis=1)
    return cat("input_ids"), cat("next_token_logprobs"), cat("logsumexps"), counts, ids, cat("entry_logprobs")[:, :k]


def check_round_trip(path, written, k, step, backend):
    x, nx, lse, counts, ids, lps = expected_rows(written, k)
    with lc.Cache(path, backend=backend) as c:
        assert c.tokens == len(x) and c.sequences == len(written)
        rows = c.read(0, c.tokens, k)
        assert np.array_equal(rows.input_ids, x)
        assert np.array_equal(rows.next_token_logprobs, nx) and np.array_equal(rows.logsumexps, lse)
        assert np.array_equal(rows.entry_counts, counts) and np.array_equal(rows.entry_ids, ids)
        valid = ids >= 0
        if step is None or not valid.any():
            assert np.array_equal(rows.entry_logprobs[valid], lps[valid])
        else:
            err = np.abs(rows.entry_logprobs[valid].astype(np.float64) - lps[valid])
            assert err.max() <= step / 2 + 1e-5 * np.abs(lps[valid]).max() and err.max() > 0
        assert np.isneginf(rows.entry_logprobs[~valid]).all()
        start = 0
        for i, (key, rows_i) in enumerate(written):
            s = c.sequence(i)
            assert (s.start, s.length) == (start, len(rows_i["input_ids"]))
            assert s.document_key == f"{key:032x}" and s.document_offset == 10 * (key - 1)
            start += s.length
        if "sample_ids" in written[0][1]:
            sids = np.concatenate([r["sample_ids"] for _, r in written])
            sdraws = np.concatenate([r["sample_draws"] for _, r in written])
            got = c.read_samples()
            assert np.array_equal(got.ids, sids[sids >= 0]) and np.array_equal(got.draws, sdraws[sids >= 0])
            assert np.array_equal(np.diff(got.offsets), (sids >= 0).sum(axis=1))


POLICIES = {
    "top-k": dict(policy="top-k", k=8),
    "top-p": dict(policy="top-p", k=8),
    "sampled": dict(policy="sampled", k=0, samples=20),
    "top-k+sampled": dict(policy="top-k+sampled", k=6, samples=12),
    "head-tail": dict(policy="head-tail", k=4, samples=10),
}


@pytest.mark.parametrize("name", list(POLICIES))
def test_round_trip_every_policy_through_both_backends_and_the_swift_command(name, tmp_path, lc_bin):
    path = str(tmp_path / name)
    args = POLICIES[name]
    written = write_cache(path, temperature=0.8, seed=3, **args)
    for backend in ("native", "pure"):
        check_round_trip(path, written, args["k"], DEFAULT_STEP, backend)
    assert lc.verify(path) == {"sound": True, "problems": [], "shardsChecked": 1, "tokensChecked": 791}
    assert lc.verify(path, backend="pure")["sound"]
    assert run(lc_bin, "verify", path, check=False).returncode == 0
    m = lc.Cache(path).manifest
    assert m["fingerprints"] == FINGERPRINTS and m["vocabularySize"] == 500
    assert m["capture"]["policy"] == args["policy"] and m["capture"]["k"] == args["k"] and m["capture"]["temperature"] == 0.8
    assert m["capture"]["samples"] == args.get("samples", 0)


@pytest.mark.parametrize("options,step", [
    (dict(codec="none", log_probs="float32"), None),
    (dict(codec="lz4", log_probs="quantized", step_log2=8, step_multiplier=3), 3 / 256),
    (dict(codec="zstd", level=19, log_probs="quantized", step_log2=4), 1 / 16),
], ids=["none-float32", "lz4-3/256", "zstd19-1/16"])
def test_codecs_and_log_prob_encodings(options, step, tmp_path):
    path = str(tmp_path / "c")
    written = write_cache(path, k=16, seed=5, **options)
    for backend in ("native", "pure"):
        check_round_trip(path, written, 16, step, backend)
        check_round_trip(path, written, 5, step, backend)  # a prefix read
    enc = lc.Cache(path).manifest["encoding"]
    assert enc["logProbs"] == ("float32" if step is None else "quantized")


def test_partitions_publish_independently_and_merge(tmp_path, lc_bin):
    path = str(tmp_path / "parts")
    parts = [write_cache(path, seed=10 + p, lengths=(120 + p, 30, 77), partition=p, partition_count=3) for p in range(3)]
    assert not os.path.exists(os.path.join(path, "manifest.json"))
    assert sorted(f for f in os.listdir(path) if f.startswith("manifest.part-")) == \
        [f"manifest.part-{p:05d}.json" for p in range(3)]
    merged = lc.merge(path)
    assert merged["totals"]["tokens"] == sum(len(r["input_ids"]) for part in parts for _, r in part)
    assert [s["partition"] for s in merged["shards"]] == [0, 1, 2]
    for backend in ("native", "pure"):
        check_round_trip(path, [x for part in parts for x in part], 8, DEFAULT_STEP, backend)
    assert run(lc_bin, "verify", path, check=False).returncode == 0
    with pytest.raises(lc.CacheError):
        lc.merge(str(tmp_path / "empty-dir-that-does-not-exist"))


def test_an_unfinished_writer_resumes_after_its_published_shards(tmp_path):
    lengths = (200, 150, 260, 90, 300, 50, 120)
    # Reference: one uninterrupted run.
    whole = write_cache(str(tmp_path / "whole"), lengths=lengths, seed=7, target_shard_bytes=15000)
    # A run that stops after 5 sequences without finishing: only full shards stay.
    path = str(tmp_path / "resumed")
    write_cache(path, lengths=lengths[:5], seed=7, target_shard_bytes=15000, finish=False)
    assert not os.path.exists(os.path.join(path, "manifest.json"))
    with lc.CacheWriter(path, vocabulary_size=500, fingerprints=FINGERPRINTS,
                        capture={"policy": "top-k", "k": 8, "temperature": 1.0, "seed": 0}, block_tokens=64,
                        target_shard_bytes=15000) as w:
        resumed = w.resumed_sequences
    assert 0 < resumed < 5, resumed
    # Rerun the whole job: it skips the sequences the published shards hold.
    rest = write_cache(path, lengths=lengths, seed=7, target_shard_bytes=15000)
    assert [key for key, _ in rest] == list(range(resumed + 1, len(lengths) + 1))
    for backend in ("native", "pure"):
        check_round_trip(path, whole, 8, DEFAULT_STEP, backend)
    a, b = lc.Cache(str(tmp_path / "whole")), lc.Cache(path)
    assert np.array_equal(a.read().entry_logprobs, b.read().entry_logprobs)


def test_the_context_manager_finishes_only_on_a_clean_exit(tmp_path):
    path = str(tmp_path / "c")
    rng = np.random.default_rng(1)
    with pytest.raises(RuntimeError, match="teacher died"):
        with lc.CacheWriter(path, vocabulary_size=300, fingerprints=FINGERPRINTS, capture={"policy": "top-k", "k": 4}) as w:
            w.begin_sequence("00" * 16)
            w.append(**random_rows(rng, 10, 300, 4))
            w.end_sequence()
            raise RuntimeError("teacher died")
    assert not os.path.exists(os.path.join(path, "manifest.json"))
    with lc.CacheWriter(path, vocabulary_size=300, fingerprints=FINGERPRINTS, capture={"policy": "top-k", "k": 4}) as w:
        assert w.resumed_sequences == 0
        for key in (b"\x01" * 16, "ab" * 16, (1 << 127) + 5):
            w.begin_sequence(key, 3)
            w.append(**random_rows(rng, 5, 300, 4))
            w.end_sequence()
        w.add_cost(15, 2.5e9, 0.25)
        w.add_cost(15, 0.5e9, 0.25)
    c = lc.Cache(path)
    assert [c.sequence(i).document_key for i in range(3)] == ["01" * 16, "ab" * 16, f"{(1 << 127) + 5:032x}"]
    assert c.manifest["teacherCost"] == {"tokens": 30, "flops": 3e9, "seconds": 0.5}
    with pytest.raises(lc.CacheError, match="closed"):
        w.begin_sequence(0)


def test_a_second_writer_of_a_partition_is_refused(tmp_path):
    from logitcache import _native
    args = dict(vocabulary_size=300, fingerprints=FINGERPRINTS, capture={"policy": "top-k", "k": 4})
    first = lc.CacheWriter(str(tmp_path / "c"), **args)
    with pytest.raises(lc.CacheError) as e:
        lc.CacheWriter(str(tmp_path / "c"), **args)
    assert e.value.status == _native.ERR_LOCKED
    other = lc.CacheWriter(str(tmp_path / "c"), partition=1, partition_count=2, **args)  # another partition is fine
    other.close()
    first.close()
    lc.CacheWriter(str(tmp_path / "c"), **args).close()  # released


def open_writer(tmp_path, **capture):
    w = lc.CacheWriter(str(tmp_path / "w"), vocabulary_size=100, fingerprints=FINGERPRINTS,
                       capture={"policy": "top-k", "k": 3, **capture})
    w.begin_sequence(1)
    return w


BAD_ROWS = [
    (dict(entry_ids=[[100, 1, 2]], entry_logprobs=[[-1, -2, -3]]), r"entry id 100 outside 0\.\.<100"),
    (dict(entry_ids=[[5, 1, 2]], entry_logprobs=[[-1, -0.5, -3]]), r"not descending"),
    (dict(entry_ids=[[5, 5, 2]], entry_logprobs=[[-1, -2, -3]]), r"entry id 5 appears twice"),
    (dict(entry_ids=[[5, 1, 2]], entry_logprobs=[[-1, np.nan, -3]]), r"(?i)nan"),
    (dict(entry_ids=[[5, 1, 2]], entry_logprobs=[[0.5, -2, -3]]), r"positive"),
    (dict(input_ids=[100]), r"input id 100 outside"),
    (dict(logsumexps=[np.nan]), r"logsumexp (?i:nan)"),
    (dict(entry_ids=[[5, 1, 2, 3]], entry_logprobs=[[-1, -2, -3, -4]]), r"4 entries exceed K = 3"),
]


@pytest.mark.parametrize("bad,pattern", BAD_ROWS, ids=[p for _, p in BAD_ROWS])
def test_bad_rows_are_refused_naming_the_problem(tmp_path, bad, pattern):
    w = open_writer(tmp_path)
    rows = dict(input_ids=[1], next_token_logprobs=[-1.0], logsumexps=[2.0], entry_ids=[[5, 1, 2]], entry_logprobs=[[-1, -2, -3]])
    w.append(**rows)  # a good row first
    with pytest.raises(lc.CacheError, match=pattern):
        w.append(**dict(rows, **bad))
    w.close()


def test_bad_descriptions_and_calls(tmp_path):
    args = dict(vocabulary_size=100, fingerprints=FINGERPRINTS)
    for capture, pattern in [({"policy": "top-q", "k": 3}, r'policy "top-q"'),
                             ({"policy": "sampled", "k": 3, "samples": 5}, r"sampled with k = 3"),
                             ({"policy": "top-k", "k": 3, "samples": 5}, r"top-k with k = 3.*samples = 5"),
                             ({"policy": "top-p", "k": 3}, r"top-p with k = 3, topP = none"),
                             ({"policy": "top-k", "k": 3, "temperature": 0}, r"temperature 0"),
                             ({"policy": "top-k"}, r"missing key \"k\"")]:
        with pytest.raises(lc.CacheError, match=pattern):
            lc.CacheWriter(str(tmp_path / "x"), capture=capture, **args)
    assert not os.path.exists(tmp_path / "x")  # nothing is created for a refused description
    cap = {"policy": "top-k", "k": 3}
    for options, pattern in [(dict(codec="brotli"), r'codec "brotli"'), (dict(level=25), r"level 25"),
                             (dict(step_log2=4), r"stepLog2 / stepMultiplier need logProbs"),
                             (dict(log_probs="quantized"), r"needs stepLog2"),
                             (dict(partition=2, partition_count=2), r"partition 2 of 2")]:
        with pytest.raises(lc.CacheError, match=pattern):
            lc.CacheWriter(str(tmp_path / "y"), capture=cap, **args, **options)
    w = lc.CacheWriter(str(tmp_path / "z"), capture=cap, **args)
    with pytest.raises(lc.CacheError, match="outside a sequence"):
        w.append([1], [-1.0], [0.0])
    w.begin_sequence(0)
    with pytest.raises(lc.CacheError, match="inside an open sequence"):
        w.begin_sequence(1)
    with pytest.raises(lc.CacheError, match="finish inside an open sequence"):
        w.finish()
    w.close()


def test_python_side_argument_checks(tmp_path):
    w = open_writer(tmp_path)
    with pytest.raises(ValueError, match="id after a -1"):
        w.append([1], [-1.0], [0.0], entry_ids=[[3, -1, 2]], entry_logprobs=[[-1, -2, -3]])
    with pytest.raises(ValueError, match="shape"):
        w.append([1, 2], [-1.0], [0.0, 0.0])
    with pytest.raises(ValueError, match="int32"):
        w.append(np.array([1 << 40]), [-1.0], [0.0])
    with pytest.raises(ValueError, match="32 hex digits"):
        w.begin_sequence("xyz")
    with pytest.raises(ValueError, match="16"):
        w.begin_sequence(b"short")
    with pytest.raises(ValueError, match="2\\^128"):
        w.begin_sequence(1 << 128)
    # Explicit counts: slots past the count are ignored whatever they hold.
    w.append([1], [-1.0], [0.0], entry_ids=[[3, 7, 7]], entry_logprobs=[[-1, -2, 5]], entry_counts=[2])
    w.end_sequence()
    w.finish()
    rows = lc.Cache(str(tmp_path / "w")).read()
    assert rows.entry_ids.tolist() == [[3, 7, -1]]
