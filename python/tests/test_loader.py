"""`logitcache.StudentLoader`, both backends, yields the Swift loader's batches
(`logitcache batches --json`): the native backend bit for bit, the numpy one with windows, ids,
labels and counts identical and weights to float32 rounding. Resume crosses languages and
backends; elastic resume (a state with "segments") hands out every window once."""

import json

import numpy as np
import pytest

import logitcache as lc
import logitcache.loader as numpy_loader
from lc_testing import run, synth, write_cache

B, T, BUFFER = 3, 256, 7
INT_KEYS = ("windows", "input_ids", "labels", "target_ids", "entry_counts")
FLOAT_KEYS = ("target_weights", "tail_mass")

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
CASE_IDS = [f"{c['mode']}-k{c['k']}-s{c['seed']}-e{c['epoch']}" for c in CASES]


@pytest.fixture(params=["pure", "native"])
def backend(request):
    if request.param == "native":
        request.getfixturevalue("native")
    return request.param


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


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Caches only the Python writer makes: captured at tau_c != 1, and head-tail."""
    if not lc.native_available():
        pytest.skip("the native library is not installed (the caches are written through it)")
    d = tmp_path_factory.mktemp("written")
    out = {}
    for name, args in {"tau0.5": dict(temperature=0.5), "tau2-sampled": dict(policy="top-k+sampled", samples=12, temperature=2.0),
                       "head-tail": dict(policy="head-tail", k=4, samples=10)}.items():
        write_cache(str(d / name), lengths=(300, 250, 40, 1, 200), **args)
        out[name] = str(d / name)
    return out


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
    out = []
    for line in run(lc_bin, *args).stdout.splitlines():
        if line.strip():
            b = json.loads(line)
            out.append(b)
    return out


def assert_same(want, got, exact: bool):
    """Batches equal: ints exactly, floats exactly or to float32 rounding."""
    assert len(want) == len(got) > 0
    for s, p in zip(want, got):
        assert (s["epoch"], s["index"], s["tokens"]) == (p["epoch"], p["index"], p["tokens"])
        for key in INT_KEYS:
            assert np.array_equal(np.asarray(s[key], np.int64).reshape(-1), np.asarray(p[key]).reshape(-1)), key
        for key in FLOAT_KEYS:
            a, b = np.asarray(s[key], np.float32).reshape(-1), np.asarray(p[key], np.float32).reshape(-1)
            if exact:
                assert np.array_equal(a, b), key
            else:
                np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-7, err_msg=key)


def cache_of(caches, case):
    return caches["sampled" if case["mode"] == "sampled" else "plain"]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_batches_equal_swift_batches(lc_bin, caches, case, backend):
    cache = cache_of(caches, case)
    swift = swift_batches(lc_bin, cache, case, "--epoch", case["epoch"])
    loader = lc.StudentLoader(cache, backend=backend, **loader_args(case))
    assert loader.backend == backend
    loader.seek(case["epoch"], 0)
    got = loader.take(loader.batches_in_epoch)
    assert_same(swift, got, exact=backend == "native")
    b = got[0]
    k = case["k"]
    assert b["input_ids"].shape == (B, T) and b["target_ids"].shape == (B, T, k) and b["windows"].shape == (B,)
    assert (b["input_ids"].dtype, b["target_weights"].dtype, b["tail_mass"].dtype, b["entry_counts"].dtype) == \
        (np.int32, np.float32, np.float32, np.int32)
    # Real rows carry targets (k = 0 only the whole mass as tail).
    if k > 0:
        assert any((b["entry_counts"] > 0).any() for b in got)
    elif case["mode"] == "tail":
        assert all((b["tail_mass"][b["labels"] >= 0] == 1).all() for b in got)
    # The state after the last batch is the Swift one.
    assert loader.state() == swift[-1]["state"]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_native_and_pure_backends_agree_across_an_epoch_end(caches, case, native):
    cache = cache_of(caches, case)
    a = lc.StudentLoader(cache, backend="native", decode_threads=2, prefetch_blocks=2, **loader_args(case))
    b = lc.StudentLoader(cache, backend="pure", **loader_args(case))
    assert a.fingerprint == b.fingerprint == a.state()["configuration"]
    assert a.order_fingerprint == b.order_fingerprint
    a.seek(case["epoch"], 1)
    b.seek(case["epoch"], 1)
    n = a.batches_in_epoch + 2
    assert a.batches_in_epoch == b.batches_in_epoch
    for _ in range(n):
        assert_same([a.next()], [b.next()], exact=False)
        assert a.state() == b.state()
    assert a.epoch == b.epoch == case["epoch"] + 1 and a.batch_index == b.batch_index == 3


def test_native_batches_are_the_callers_to_keep(caches, native):
    """A batch (or any array, view or tensor of it) the caller holds is never overwritten; the
    arrays of batches nobody holds any more are recycled."""
    loader = lc.StudentLoader(caches["plain"], backend="native", batch_size=2, context=64, k=4, seed=1)
    kept = loader.take(12)  # more batches than the recycled sets
    copies = [{key: v.copy() for key, v in b.items() if isinstance(v, np.ndarray)} for b in kept]
    view = loader.next()["target_weights"][1:]  # only a view of one array survives
    view_copy = view.copy()
    addresses = set()
    for _ in range(20):
        b = loader.next()
        addresses.add(b["target_ids"].ctypes.data)
        del b
    for b, c in zip(kept, copies):
        for key, v in c.items():
            assert np.array_equal(b[key], v), key
    assert np.array_equal(view, view_copy)
    assert len(addresses) <= 2  # dropped batches' arrays came back
    assert not addresses & {b["target_ids"].ctypes.data for b in kept}


@pytest.mark.parametrize("other", ["pure", "native"])
def test_resume_mid_epoch_across_languages_and_backends(lc_bin, caches, backend, other):
    """A state saved mid-epoch by the Swift CLI, or by either backend, continues the stream, past
    the epoch's end."""
    if other == "native" and not lc.native_available():
        pytest.skip("the native library is not installed")
    case = dict(mode="tail", k=8, seed=21, epoch=0, temperature=1.3, rank=1, world=2)
    cache = cache_of(caches, case)
    loader = lc.StudentLoader(cache, backend=backend, **loader_args(case))
    n = loader.batches_in_epoch
    assert n >= 4
    whole = swift_batches(lc_bin, cache, case, "--epoch", 1, "--count", n + 3)
    exact = backend == "native"
    for cut in (1, n // 2, n - 1):
        # Swift's state after batch `cut` resumes this loader ...
        state = whole[cut - 1]["state"]
        loader.resume(state)
        assert loader.state() == state and (loader.epoch, loader.batch_index) == (1, cut)
        assert_same(whole[cut:], loader.take(len(whole) - cut), exact)
        # ... its state resumes the other backend ...
        loader.resume(state)
        loader.take(1)
        moved = lc.StudentLoader(cache, backend=other, **loader_args(case))
        moved.resume(loader.state())
        assert_same(whole[cut + 1:], moved.take(len(whole) - cut - 1), exact and other == "native")
        # ... and the Swift one.
        resumed = swift_batches(lc_bin, cache, case, "--resume", json.dumps(loader.state()), "--count", len(whole) - cut - 1)
        assert_same(whole[cut + 1:], resumed, exact=True)


def test_resume_refuses_other_configuration_or_cache(caches, backend):
    a = lc.StudentLoader(caches["plain"], backend=backend, batch_size=2, context=T, k=4, seed=1)
    a.take(2)
    other_seed = lc.StudentLoader(caches["plain"], backend=backend, batch_size=2, context=T, k=4, seed=2)
    with pytest.raises(lc.LoaderError, match="configuration"):
        other_seed.resume(a.state())
    other_cache = lc.StudentLoader(caches["sampled"], backend=backend, batch_size=2, context=T, k=4, seed=1)
    with pytest.raises(lc.LoaderError, match="cache"):
        other_cache.resume(a.state())
    with pytest.raises(lc.LoaderError, match="outside epoch"):
        a.resume(dict(a.state(), batch=10 ** 6))
    with pytest.raises(lc.LoaderError, match="order"):
        a.resume(dict(a.state(), segments=[dict(a.segment([1]), order="0123456789abcdef")]))
    with pytest.raises(lc.LoaderError, match="consumed"):
        a.resume(dict(a.state(), segments=[a.segment([10 ** 6])]))
    # The loader is still usable at its old position after refusals.
    assert a.batch_index == 2


def test_ranks_disjoint_and_complete(caches, backend):
    """Every window once per epoch over the ranks, disjoint, equal batch counts (pad policy)."""
    world = 3
    seen, counts = [], set()
    for r in range(world):
        loader = lc.StudentLoader(caches["plain"], backend=backend, batch_size=B, context=T, k=2, seed=5, rank=r,
                                  world_size=world)
        loader.seek(2, 0)
        batches = loader.take(loader.batches_in_epoch)
        counts.add(len(batches))
        seen += [int(w) for b in batches for w in b["windows"] if w >= 0]
    assert len(counts) == 1
    windows = len(numpy_loader.StudentLoader(caches["plain"], B, T, 2).windows)
    assert sorted(seen) == list(range(windows))


def refusal_message(cache, backend, **args):
    with pytest.raises(lc.LoaderError) as e:
        lc.StudentLoader(cache, backend=backend, **args)
    return str(e.value)


REFUSALS = [
    ("plain", dict(batch_size=2, context=64, k=4, student=("another", 3000)), "tokenizer fingerprint"),
    ("plain", dict(batch_size=2, context=64, k=4, student=("synthetic-vocab-3000", 3001)), "vocabulary size"),
    ("plain", dict(batch_size=2, context=64, k=17), "exceeds the cache's K"),
    ("plain", dict(batch_size=2, context=64, k=16, mode="sampled"), "no samples"),
    ("sampled", dict(batch_size=2, context=64, k=20, mode="sampled", temperature=2), "capture temperature"),
    ("sampled", dict(batch_size=2, context=64, k=3, mode="sampled"), "cannot hold up to 20"),
    ("plain", dict(batch_size=10 ** 4, context=64, k=4, remainder="drop"), "no batch"),
    ("plain", dict(batch_size=0, context=64, k=4), "batch size 0"),
    ("plain", dict(batch_size=2, context=64, k=4, rank=2, world_size=2), "rank 2"),
    ("plain", dict(batch_size=2, context=64, k=4, temperature=0.0), "temperature 0.0"),
]


@pytest.mark.parametrize("name,args,pattern", REFUSALS, ids=[r[2] for r in REFUSALS])
def test_refusals_name_the_problem_alike_in_both_backends(caches, name, args, pattern, backend):
    message = refusal_message(caches[name], backend, **args)
    assert pattern in message
    if backend == "native":
        assert message == refusal_message(caches[name], "pure", **args)


def test_unknown_names_are_refused(caches):
    with pytest.raises(lc.LoaderError, match="mode 'top'"):
        lc.StudentLoader(caches["plain"], backend="pure", batch_size=2, context=64, k=4, mode="top")
    with pytest.raises(lc.LoaderError, match="remainder 'cut'"):
        lc.StudentLoader(caches["plain"], batch_size=2, context=64, k=4, remainder="cut")
    with pytest.raises(ValueError, match="backend"):
        lc.StudentLoader(caches["plain"], batch_size=2, context=64, k=4, backend="fast")


# ---- Elastic resume: an epoch begun at one world size continues at another


def run_layout(cache, backend, world, batch, buffer, taken, epoch, earlier, seed=1, k=2):
    """Streams of one layout resumed after `earlier` segments; stream r takes `taken[r]` batches
    (None: to the epoch's end). Returns (windows handed out per stream, this layout's segment)."""
    out, counts = [], []
    for r in range(world):
        loader = lc.StudentLoader(cache, backend=backend, batch_size=batch, context=64, k=k, seed=seed, rank=r,
                                  world_size=world, shuffle_buffer=buffer)
        state = {"version": 1, "epoch": epoch, "batch": 0, "configuration": loader.fingerprint,
                 "cache": loader.state()["cache"]}
        if earlier:
            state["segments"] = earlier
        loader.resume(state)
        assert loader.state() == state
        n = loader.batches_in_epoch if taken[r] is None else taken[r]
        batches = loader.take(n)
        assert all(b["epoch"] == epoch for b in batches)
        counts.append(n)
        out.append([int(w) for b in batches for w in b["windows"]])
        if earlier and n:
            # A mid-epoch state keeps the segments, and a fresh loader resumes it exactly.
            saved = loader.state()
            assert saved["segments"] == earlier and saved["batch"] == n
    return out, loader.segment(counts)


LAYOUTS = {
    # [(world, batch, buffer, batches taken per stream or None = to the end)], the last runs to the end.
    "4->2": [(4, 2, 5, [3, 1, 0, 2]), (2, 3, 7, None)],
    "3->5": [(3, 4, 3, [2, 2, 1]), (5, 2, 9, None)],
    "4->2->3": [(4, 2, 5, [1, 2, 3, 0]), (2, 5, 2, [2, 1]), (3, 3, 4, None)],
}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_elastic_resume_hands_out_every_window_once(caches, name, backend):
    cache = caches["plain"]
    epoch, segments, handed = 1, [], []
    for world, batch, buffer, taken in LAYOUTS[name]:
        taken = taken or [None] * world
        windows, seg = run_layout(cache, backend, world, batch, buffer, taken, epoch, list(segments))
        handed += [w for ws in windows for w in ws if w >= 0]
        segments.append(seg)
    total = len(numpy_loader.StudentLoader(cache, 2, 64, 2).windows)
    assert len(handed) == total and sorted(handed) == list(range(total))


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_elastic_resume_is_the_same_in_both_backends(caches, name, native):
    cache = caches["plain"]
    segments = []
    for world, batch, buffer, taken in LAYOUTS[name]:
        taken = taken or [None] * world
        a, seg_a = run_layout(cache, "native", world, batch, buffer, taken, 2, list(segments), seed=4)
        b, seg_b = run_layout(cache, "pure", world, batch, buffer, taken, 2, list(segments), seed=4)
        assert a == b and seg_a == seg_b
        segments.append(seg_a)


def test_elastic_segments_follow_the_swift_rule(caches):
    """The numpy seen set is what the rule says: segment i's streams take their orders over what
    earlier segments left, and their first consumed[r] windows become seen."""
    base = numpy_loader.StudentLoader(caches["plain"], 2, 64, 2, seed=3)
    units, total = base.unit_starts, len(base.windows)
    g0 = numpy_loader.epoch_segment(3, 2, 4, "pad", [4, 2, 0], base.order_fingerprint)
    seen0 = numpy_loader.seen_windows(units, 3, 0, [g0])
    want = set()
    for r, c in enumerate(g0["consumed"]):
        want |= {w for w in numpy_loader.epoch_order(units, 3, 0, r, 3, 4, 2, "pad")[:c] if w >= 0}
    assert set(np.nonzero(seen0)[0].tolist()) == want and len(want) == 6
    g1 = numpy_loader.epoch_segment(2, 3, 5, "drop", [3, 6], base.order_fingerprint)
    seen1 = numpy_loader.seen_windows(units, 3, 0, [g0, g1])
    later = set()
    for r, c in enumerate(g1["consumed"]):
        order = numpy_loader.epoch_order(units, 3, 0, r, 2, 5, 3, "drop", seen=seen0)
        assert not (set(order) & want)  # later layouts never repeat a seen window
        later |= {w for w in order[:c] if w >= 0}
    assert set(np.nonzero(seen1)[0].tolist()) == want | later and len(later) == 9
    # With nothing seen, the rule is the plain one.
    assert numpy_loader.epoch_order(units, 3, 0, 1, 2, 5, 3, "pad", seen=np.zeros(total, bool)) == \
        numpy_loader.epoch_order(units, 3, 0, 1, 2, 5, 3, "pad")


# ---- Capture temperature and policy


def test_a_cache_captured_at_another_temperature_serves_only_that_temperature(written, backend):
    path = written["tau0.5"]
    for mode in ("renormalized", "tail"):
        with pytest.raises(lc.LoaderError, match=r"temperature 1\.0 differs from the capture temperature 0\.5 "
                                                 r"\(the logits are gone.*use temperature 0\.5"):
            lc.StudentLoader(path, backend=backend, batch_size=2, context=32, k=4, mode=mode)
    loader = lc.StudentLoader(path, backend=backend, batch_size=2, context=32, k=4, temperature=0.5, seed=2)
    # Stored log-probs are already at tau_c: they are used as they are, not tempered again.
    batch = loader.next()
    with lc.Cache(path, backend="pure") as c:
        table = numpy_loader.window_table(c._reader, 32)[0]
        checked = 0
        for b, w in enumerate(batch["windows"]):
            if w < 0:
                continue
            first, n = int(table[w][0]), int(table[w][1])
            lp = c.read(first, first + n, 4).entry_logprobs.astype(np.float64)
            with np.errstate(invalid="ignore"):
                e = np.where(np.isfinite(lp), np.exp(lp - lp[:, :1]), 0.0)
            z = e.sum(axis=1, keepdims=True)
            want = e / np.where(z > 0, z, 1)
            np.testing.assert_allclose(batch["target_weights"][b, :n], want, rtol=1e-5, atol=1e-7)
            checked += int((z > 0).sum())
        assert checked > 0


def test_sampled_targets_need_the_capture_temperature(written, caches, backend):
    path = written["tau2-sampled"]
    with pytest.raises(lc.LoaderError, match=r"temperature 1\.0 differs from the capture temperature 2\.0 \(sampled draws"):
        lc.StudentLoader(path, backend=backend, batch_size=2, context=32, k=12, mode="sampled")
    assert lc.StudentLoader(path, backend=backend, batch_size=2, context=32, k=12, mode="sampled", temperature=2.0).next()["tokens"] > 0
    # A tau_c = 1 cache re-tempers exact entries, but not draws.
    assert lc.StudentLoader(caches["plain"], backend=backend, batch_size=2, context=32, k=4, temperature=2.0).next()["tokens"] > 0
    with pytest.raises(lc.LoaderError, match=r"temperature 2\.0 differs from the capture temperature 1\.0"):
        lc.StudentLoader(caches["sampled"], backend=backend, batch_size=2, context=32, k=20, mode="sampled", temperature=2.0)


def test_a_head_tail_cache_is_refused_in_sampled_mode(written, backend):
    path = written["head-tail"]
    with pytest.raises(lc.LoaderError, match="head-tail cache draws its samples from the mass outside the head"):
        lc.StudentLoader(path, backend=backend, batch_size=2, context=32, k=10, mode="sampled")
    # Its exact head serves the other modes.
    for mode in ("renormalized", "tail"):
        b = lc.StudentLoader(path, backend=backend, batch_size=2, context=32, k=4, mode=mode).next()
        assert (b["entry_counts"] > 0).any()


def test_torch_dataset_matches_loader(caches):
    """The numpy loader's TorchBatches (kept for the existing users; see logitcache.torch)."""
    torch = pytest.importorskip("torch")
    from logitcache.loader import TorchBatches
    args = dict(batch_size=B, context=T, k=4, mode="tail", seed=13)
    ref = numpy_loader.StudentLoader(caches["plain"], **args)
    ref.seek(0, 2)
    want = ref.take(ref.batches_in_epoch + 2)
    start = dict(ref.state(), epoch=0, batch=2)
    for workers in (0, 2):
        ds = TorchBatches(caches["plain"], count=len(want), state=start, **args)
        got = list(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers))
        assert [(g["epoch"], g["index"]) for g in got] == [(w["epoch"], w["index"]) for w in want]
        for g, w in zip(got, want):
            for key in ("input_ids", "labels", "target_ids", "target_weights", "tail_mass"):
                assert np.array_equal(g[key].numpy(), w[key]), key
