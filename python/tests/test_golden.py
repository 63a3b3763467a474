"""Golden caches (Tests/Golden, see its README): one committed cache per format version a reader
accepts, each with `expected.jsonl`, the `logitcache dump --json` of every decoded value when it
was written. Both readers must keep decoding every golden to exactly those values, and every
format minor version up to the reader's must have one (a new version adds a directory; goldens
are never regenerated). The Swift side is Tests/ShardFormatTests/GoldenCacheTests.swift."""

import os
import re

import numpy as np
import pytest

import logitcache as lc
import logitcache.reader as lr
from lc_testing import REPO, assert_matches_dump, assert_same_floats, flatten_dump, parse_dump

GOLDEN = os.path.join(REPO, "Tests", "Golden")
NAMES = sorted(d for d in os.listdir(GOLDEN) if os.path.isdir(os.path.join(GOLDEN, d)))
NAME = re.compile(r"format-1\.(\d+)(-[a-z0-9.-]+)?")


def expected(name):
    with open(os.path.join(GOLDEN, name, "expected.jsonl")) as f:
        lines = parse_dump(f.read())
    assert lines and sum(s["length"] for s in lines) > 0, f"{name}: expected.jsonl holds no values"
    return lines


@pytest.fixture(params=["pure", "native"])
def backend(request):
    if request.param == "native":
        request.getfixturevalue("native")
    return request.param


def test_every_format_minor_version_has_a_golden():
    """A reader that accepts format 1.N must have Tests/Golden/format-1.N (written once, when the
    version was added, by tools/make_golden_caches.sh)."""
    assert lr.FORMAT_MINOR_VERSION >= 3
    missing = [m for m in range(lr.FORMAT_MINOR_VERSION + 1) if f"format-1.{m}" not in NAMES]
    assert not missing, f"no golden cache for format 1.{missing}: add Tests/Golden/format-1.N (tools/make_golden_caches.sh)"


@pytest.mark.parametrize("name", NAMES)
def test_a_golden_holds_the_version_it_names(name):
    m = NAME.fullmatch(name)
    assert m, f"Tests/Golden/{name}: golden directories are named format-1.N or format-1.N-what"
    minor = int(m.group(1))
    assert minor <= lr.FORMAT_MINOR_VERSION
    with lr.Cache(os.path.join(GOLDEN, name)) as cache:
        assert cache.manifest["formatVersion"] == 1
        for shard in cache.shards:
            assert shard.footer.get("formatMinorVersion", 0) == minor, shard.name


@pytest.mark.parametrize("name", NAMES)
def test_the_numpy_reader_decodes_every_golden_value(name):
    with lr.Cache(os.path.join(GOLDEN, name)) as cache:
        assert cache.tokens > 0
        assert_matches_dump(cache, expected(name))


@pytest.mark.parametrize("name", NAMES)
def test_the_cache_api_decodes_every_golden_value(name, backend):
    """`logitcache.Cache` (native: the Swift reader through the C ABI; pure: the numpy reader)."""
    meta, want = flatten_dump(expected(name))
    with lc.Cache(os.path.join(GOLDEN, name), backend=backend) as cache:
        assert cache.backend == backend
        assert cache.sequences == len(meta)
        start = 0
        for i, (key, offset, length) in enumerate(meta):
            assert cache.sequence(i) == lc.SequenceInfo(i, start, length, offset, key), f"sequence {i}"
            start += length
        assert cache.tokens == start == len(want["input_ids"]) > 0
        rows = cache.read()
        assert np.array_equal(rows.input_ids, want["input_ids"])
        assert_same_floats(rows.next_token_logprobs, want["next_logprob"], "next-token log-probs")
        assert_same_floats(rows.logsumexps, want["logsumexp"], "logsumexps")
        assert np.array_equal(rows.entry_counts, want["entry_counts"])
        valid = np.arange(cache.max_entries)[None, :] < rows.entry_counts[:, None]
        assert np.array_equal(rows.entry_ids[valid], want["entry_ids"])  # row-major: position order, then rank
        assert_same_floats(rows.entry_logprobs[valid], want["entry_logprobs"], "entry log-probs")
        assert (rows.entry_ids[~valid] == -1).all() and np.isneginf(rows.entry_logprobs[~valid]).all()
        samples = cache.read_samples()
        assert np.array_equal(np.diff(samples.offsets), want["sample_counts"])
        assert np.array_equal(samples.ids, want["sample_ids"])
        assert np.array_equal(samples.draws, want["sample_draws"])


@pytest.mark.parametrize("name", NAMES)
def test_a_golden_verifies(name, backend):
    path = os.path.join(GOLDEN, name)
    tokens = sum(s["length"] for s in expected(name))
    with lc.Cache(path, backend=backend) as cache:
        shards = len(cache.manifest["shards"])
    assert lc.verify(path, backend=backend) == {"sound": True, "problems": [], "shardsChecked": shards,
                                                "tokensChecked": tokens}
    if backend == "pure":
        with lr.Cache(path) as cache:
            assert cache.verify()["tokens"] == tokens
