"""The Python StudentLoader yields the Swift loader's batches (`logitcache batches --json`)."""

import json

import numpy as np
import pytest

from conftest import run, synth
from logitcache_loader import LoaderError, StudentLoader

B, T, BUFFER = 3, 256, 7

# Several seeds, epochs and ranks over every target mode; tau != 1 for the tempered paths.
CASES = [
    dict(mode="renormalized", k=8, seed=3, epoch=1),
    dict(mode="renormalized", k=16, seed=6, epoch=0, temperature=0.7, rank=0, world=3, drop=True),
    dict(mode="renormalized", k=3, seed=11, epoch=4, temperature=2.0, rank=2, world=3),
    dict(mode="tail", k=16, seed=4, epoch=0, temperature=1.5),
    dict(mode="tail", k=5, seed=5, epoch=2, rank=1, world=2),
    dict(mode="tail", k=0, seed=9, epoch=0),
    dict(mode="sampled", k=20, seed=7, epoch=1),
    dict(mode="sampled", k=24, seed=8, epoch=3, rank=1, world=2, drop=True),
]


@pytest.fixture(scope="module")
def caches(lc_bin, tmp_path_factory):
    d = tmp_path_factory.mktemp("loader")
    # Several shards (rows of 9000 tokens over 4000-token shards) and blocks; sequences longer
    # than T so windows are cut, with a short last window.
    plain = synth(lc_bin, d / "plain", "--tokens", 9000, "--seq-len", 700, "--k", 16, "--block-tokens", 1024,
                  "--vocab", 3000)
    sampled = synth(lc_bin, d / "sampled", "--tokens", 5000, "--seq-len", 300, "--k", 4, "--block-tokens", 512,
                    "--vocab", 3000, "--sampled", "--draws", 20)
    return {"plain": plain, "sampled": sampled}


def loader_args(case):
    return dict(batch_size=B, context=T, k=case["k"], mode=case["mode"], temperature=case.get("temperature", 1.0),
                seed=case["seed"], rank=case.get("rank", 0), world_size=case.get("world", 1), shuffle_buffer=BUFFER,
                remainder="drop" if case.get("drop") else "pad")


def swift_batches(lc_bin, cache, case, *extra):
    a = loader_args(case)
    args = ["batches", cache, "--batch", B, "--context", T, "--k", a["k"], "--mode", a["mode"],
            "--temperature", a["temperature"], "--seed", a["seed"], "--rank", a["rank"], "--world-size", a["world_size"],
            "--shuffle-buffer", BUFFER, "--json", *extra]
    if case.get("drop"):
        args.append("--drop-remainder")
    return [json.loads(line) for line in run(lc_bin, *args).stdout.splitlines() if line.strip()]


def assert_same(swift, py):
    assert len(swift) == len(py) > 0
    for s, p in zip(swift, py):
        assert (s["epoch"], s["index"], s["tokens"]) == (p["epoch"], p["index"], p["tokens"])
        for key in ("windows", "input_ids", "labels", "target_ids", "counts"):
            assert np.array_equal(np.array(s[key], np.int64), np.asarray(p[key]).reshape(-1)), key
        for key in ("target_weights", "tail"):
            np.testing.assert_allclose(np.array(s[key], np.float32), np.asarray(p[key], np.float32).reshape(-1), rtol=2e-6, atol=1e-7,
                                       err_msg=key)


def cache_of(caches, case):
    return caches["sampled" if case["mode"] == "sampled" else "plain"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['mode']}-k{c['k']}-s{c['seed']}-e{c['epoch']}")
def test_python_batches_equal_swift_batches(lc_bin, caches, case):
    cache = cache_of(caches, case)
    swift = swift_batches(lc_bin, cache, case, "--epoch", case["epoch"])
    loader = StudentLoader(cache, **loader_args(case))
    loader.seek(case["epoch"], 0)
    py = loader.take(loader.batches_in_epoch)
    assert_same(swift, py)
    # Real rows carry targets (k = 0 only the whole mass as tail).
    if case["k"] > 0:
        assert any((b["counts"] > 0).any() for b in py)
    elif case["mode"] == "tail":
        assert all((b["tail"][b["labels"] >= 0] == 1).all() for b in py)


def test_resume_mid_epoch_across_languages(lc_bin, caches):
    """A state saved mid-epoch by either loader continues the other's stream, past the epoch's end."""
    case = dict(mode="tail", k=8, seed=21, epoch=0, temperature=1.3, rank=1, world=2)
    cache = cache_of(caches, case)
    loader = StudentLoader(cache, **loader_args(case))
    n = loader.batches_in_epoch
    assert n >= 4
    whole = swift_batches(lc_bin, cache, case, "--epoch", 1, "--count", n + 3)
    py_whole = StudentLoader(cache, **loader_args(case))
    py_whole.seek(1, 0)
    assert_same(whole, py_whole.take(n + 3))
    for cut in (1, n // 2, n - 1):
        # Swift's state after batch `cut` resumes the Python loader ...
        state = whole[cut - 1]["state"]
        loader.resume(state)
        assert loader.state() == state
        assert_same(whole[cut:], loader.take(len(whole) - cut))
        # ... and the Python loader's state resumes the Swift one.
        loader.resume(state)
        loader.take(1)
        resumed = swift_batches(lc_bin, cache, case, "--resume", json.dumps(loader.state()), "--count", len(whole) - cut - 1)
        assert_same(whole[cut + 1:], resumed)


def test_resume_refuses_other_configuration_or_cache(caches):
    a = StudentLoader(caches["plain"], batch_size=2, context=T, k=4, seed=1)
    a.take(2)
    other_seed = StudentLoader(caches["plain"], batch_size=2, context=T, k=4, seed=2)
    with pytest.raises(LoaderError, match="configuration"):
        other_seed.resume(a.state())
    other_cache = StudentLoader(caches["sampled"], batch_size=2, context=T, k=4, seed=1)
    with pytest.raises(LoaderError, match="cache"):
        other_cache.resume(a.state())
    with pytest.raises(LoaderError, match="outside epoch"):
        a.resume(dict(a.state(), batch=10 ** 6))


def test_ranks_disjoint_and_complete(caches):
    """Every window once per epoch over the ranks, disjoint, equal batch counts (pad policy)."""
    world = 3
    seen, counts = [], set()
    for r in range(world):
        loader = StudentLoader(caches["plain"], batch_size=B, context=T, k=2, seed=5, rank=r, world_size=world)
        loader.seek(2, 0)
        batches = loader.take(loader.batches_in_epoch)
        counts.add(len(batches))
        seen += [int(w) for b in batches for w in b["windows"] if w >= 0]
    assert len(counts) == 1
    assert sorted(seen) == list(range(len(loader.windows)))


def test_refusals(caches):
    with pytest.raises(LoaderError, match="tokenizer fingerprint"):
        StudentLoader(caches["plain"], 2, 64, 4, student=("another", 3000))
    with pytest.raises(LoaderError, match="vocabulary size"):
        StudentLoader(caches["plain"], 2, 64, 4, student=("synthetic-vocab-3000", 3001))
    with pytest.raises(LoaderError, match="exceeds the cache's K"):
        StudentLoader(caches["plain"], 2, 64, 17)
    with pytest.raises(LoaderError, match="no samples"):
        StudentLoader(caches["plain"], 2, 64, 16, mode="sampled")
    with pytest.raises(LoaderError, match="temperature 1"):
        StudentLoader(caches["sampled"], 2, 64, 20, mode="sampled", temperature=2)
    with pytest.raises(LoaderError, match="no batch"):
        StudentLoader(caches["plain"], 10 ** 4, 64, 4, remainder="drop")


def test_torch_dataset_matches_loader(caches):
    torch = pytest.importorskip("torch")
    from logitcache_loader import TorchBatches
    args = dict(batch_size=B, context=T, k=4, mode="tail", seed=13)
    ref = StudentLoader(caches["plain"], **args)
    ref.seek(0, 2)
    want = ref.take(ref.batches_in_epoch + 2)
    start = dict(ref.state(), epoch=0, batch=2)
    for workers in (0, 2):
        ds = TorchBatches(caches["plain"], count=len(want), state=start, **args)
        got = list(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers))
        assert [(g["epoch"], g["index"]) for g in got] == [(w["epoch"], w["index"]) for w in want]
        for g, w in zip(got, want):
            for key in ("input_ids", "labels", "target_ids", "target_weights", "tail"):
                assert np.array_equal(g[key].numpy(), w[key]), key
