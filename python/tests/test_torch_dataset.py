"""logitcache.torch.LogitCacheDataset / LogitCacheDataLoader: streams per rank and worker,
exact resume, elastic resume over world-size, worker, batch-size and buffer changes.

Ranks are simulated in one process: each has its own dataset (rank=r, world_size=R) and
loader, and all are stepped in lockstep as DDP would. References come from the pure-numpy
`StudentLoader` (no native threads in the parent of forked DataLoader workers)."""

from __future__ import annotations

import contextlib
import gc
import json
import multiprocessing
import os
import shutil
import signal
import time
from typing import Iterator, List, Sequence

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import logitcache  # noqa: E402
from lc_testing import synth  # noqa: E402
from logitcache.torch import LogitCacheDataLoader, LogitCacheDataset, order_fingerprint  # noqa: E402

B, T, K, SEED, BUFFER = 4, 32, 8, 5, 16
ARRAY_KEYS = ("windows", "input_ids", "labels", "target_ids", "target_weights", "tail_mass", "entry_counts")


@pytest.fixture(scope="module")
def cache(lc_bin, tmp_path_factory) -> str:
    """Sequences of 300 tokens (windows of 32 end mid-block), 47 blocks of 256 tokens."""
    return synth(lc_bin, tmp_path_factory.mktemp("ds") / "cache", "--tokens", 12000, "--seq-len", 300, "--vocab", 384,
                 "--k", 16, "--block-tokens", 256, "--seed", 3)


@pytest.fixture(scope="module")
def aligned_cache(lc_bin, tmp_path_factory) -> str:
    """Block-aligned geometry: window w (T = 32) starts at token 32 w, in block w // 8."""
    return synth(lc_bin, tmp_path_factory.mktemp("ds") / "aligned", "--tokens", 8192, "--seq-len", 512, "--vocab", 256,
                 "--k", 16, "--block-tokens", 256, "--seed", 4)


def dataset(path: str, rank: int = 0, world: int = 1, **kw) -> LogitCacheDataset:
    args = dict(batch_size=B, context=T, k=K, mode="tail", seed=SEED, shuffle_buffer=BUFFER)
    args.update(kw)
    return LogitCacheDataset(path, rank=rank, world_size=world, **args)


def reference_batches(path: str, rank: int = 0, world: int = 1, epoch: int = 0, **kw) -> List[dict]:
    """One epoch of one stream from the pure loader."""
    args = dict(batch_size=B, context=T, k=K, mode="tail", seed=SEED, shuffle_buffer=BUFFER)
    args.update(kw)
    with logitcache.StudentLoader(path, rank=rank, world_size=world, backend="pure", **args) as loader:
        loader.seek(epoch, 0)
        return loader.take(loader.batches_in_epoch)


def window_count(path: str) -> int:
    """Windows of T tokens in the cache: every one appears once in a single stream's epoch."""
    seen = sorted(int(w) for b in reference_batches(path, shuffle_buffer=1) for w in b["windows"] if w >= 0)
    assert seen == list(range(len(seen)))
    return len(seen)


def windows(batch) -> List[int]:
    return [int(w) for w in batch["windows"] if w >= 0]


def lockstep(loaders: Sequence[LogitCacheDataLoader], steps: int = -1) -> List[List[dict]]:
    """Steps every rank's loader together: `steps` batches each, or to the end of the epoch
    (asserting every rank ends at the same step, as DDP needs)."""
    its = [iter(l) for l in loaders]
    out: List[List[dict]] = [[] for _ in loaders]
    step = 0
    while steps < 0 or step < steps:
        got = [next(it, None) for it in its]
        if all(g is None for g in got):
            break
        assert all(g is not None for g in got), f"ranks out of lockstep at step {step}: {[g is None for g in got]}"
        for r, g in enumerate(got):
            out[r].append(g)
        step += 1
    return out


def all_windows(runs: Sequence[List[List[dict]]]) -> List[int]:
    return sorted(w for run in runs for rank in run for b in rank for w in windows(b))


def layout(path: str, world: int, workers: int, **kw):
    loaders = [LogitCacheDataLoader(dataset(path, r, world, **kw), num_workers=workers) for r in range(world)]
    return loaders


def states(loaders) -> dict:
    got = [l.state_dict() for l in loaders]
    assert all(s == got[0] for s in got), "ranks disagree on the state"
    json.dumps(got[0])
    return got[0]


# -- one stream ------------------------------------------------------------------------------


def test_single_stream_is_the_loaders_epoch_and_advances(cache):
    ref = reference_batches(cache)
    loader = LogitCacheDataLoader(dataset(cache))
    got = list(loader)
    assert [b["windows"].tolist() for b in got] == [r["windows"].tolist() for r in ref]
    for g, r in zip(got, ref):
        assert isinstance(g["input_ids"], torch.Tensor) and g["input_ids"].dtype == torch.int32
        assert g["input_ids"].shape == (B, T) and g["target_ids"].shape == (B, T, K)
        for key in ("input_ids", "labels", "target_ids", "entry_counts"):
            assert np.array_equal(g[key].numpy(), r[key]), key
        for key in ("target_weights", "tail_mass"):
            assert np.allclose(g[key].numpy(), r[key], atol=1e-6), key
        assert g["epoch"] == 0 and isinstance(g["tokens"], int)
    s = loader.state_dict()
    assert s["epoch"] == 1 and s["segments"] == [] and loader.epoch == 1
    assert [b["windows"].tolist() for b in loader] == [r["windows"].tolist() for r in reference_batches(cache, epoch=1)]


def test_plain_dataloader_and_set_epoch(cache):
    ds = dataset(cache)
    dl = torch.utils.data.DataLoader(ds, batch_size=None)
    first = [b["windows"].tolist() for b in dl]
    assert first == [b["windows"].tolist() for b in dl], "a plain DataLoader repeats the epoch until set_epoch"
    ds.set_epoch(2)
    assert [b["windows"].tolist() for b in dl] == [r["windows"].tolist() for r in reference_batches(cache, epoch=2)]


def test_order_fingerprint_matches_the_loader(cache):
    with logitcache.StudentLoader(cache, batch_size=B, context=T, k=K, seed=SEED, backend="pure") as l:
        assert l.order_fingerprint == order_fingerprint(T, SEED) == dataset(cache).order_fingerprint


# -- ranks and workers -----------------------------------------------------------------------


def test_ranks_and_workers_cover_the_epoch_once(cache):
    n = window_count(cache)
    run = lockstep(layout(cache, world=2, workers=2))
    per_rank = {len(r) for r in run}
    assert len(per_rank) == 1
    L = reference_batches(cache, rank=0, world=4)
    assert per_rank == {2 * len(L)}, "each rank yields workers * L batches"
    assert all_windows([run]) == list(range(n))
    # stream (r, w) = r * 2 + w; the DataLoader takes workers in turn
    for r in range(2):
        for w in range(2):
            ref = reference_batches(cache, rank=r * 2 + w, world=4)
            assert [b["windows"].tolist() for b in run[r][w::2]] == [x["windows"].tolist() for x in ref]


def test_two_workers_decode_disjoint_blocks(aligned_cache):
    n = window_count(aligned_cache)
    assert n == 8192 // T
    loader = LogitCacheDataLoader(dataset(aligned_cache, shuffle_buffer=8), num_workers=2)
    got = list(loader)
    units = [{w // (256 // T) for b in got[j::2] for w in windows(b)} for j in range(2)]
    assert units[0] and units[1] and not units[0] & units[1], units
    assert sorted(w for b in got for w in windows(b)) == list(range(n))


def test_rank_from_environment(cache, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    ds = LogitCacheDataset(cache, batch_size=B, context=T, k=K)
    assert (ds.rank, ds.world_size) == (1, 3)
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        LogitCacheDataset(cache, batch_size=B, context=T, k=K)
    monkeypatch.delenv("RANK")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert LogitCacheDataset(cache, batch_size=B, context=T, k=K).world_size == 2
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert LogitCacheDataset(cache, batch_size=B, context=T, k=K).world_size == 1


# -- exact resume ----------------------------------------------------------------------------


def same_batches(a: Sequence[dict], b: Sequence[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for key in ARRAY_KEYS:
            assert torch.equal(x[key], y[key]), key
        assert (x["epoch"], x["index"], x["tokens"]) == (y["epoch"], y["index"], y["tokens"])


@pytest.mark.parametrize("workers,world", [(0, 1), (2, 1), (2, 2)])
def test_resume_same_layout_equals_the_uninterrupted_run(cache, workers, world):
    whole = lockstep(layout(cache, world, workers))
    cut = 3  # odd: the workers had taken unequal counts
    first = layout(cache, world, workers)
    head = lockstep(first, cut)
    s = states(first)
    assert s["epoch"] == 0 and len(s["segments"]) == 1
    g = s["segments"][0]
    W = max(1, workers)
    expected = [B * len(range(j, cut, W)) for j in range(W)] * world
    assert g == {"worldSize": world * W, "batchSize": B, "shuffleBuffer": BUFFER, "remainder": "pad",
                 "consumed": expected, "order": order_fingerprint(T, SEED)}
    second = layout(cache, world, workers)
    for l in second:
        l.load_state_dict(json.loads(json.dumps(s)))
    tail = lockstep(second)
    for r in range(world):
        same_batches(head[r] + tail[r], whole[r])
    assert states(second)["epoch"] == 1 and states(second)["segments"] == []


def test_state_dict_counts_only_batches_handed_out(cache):
    loader = LogitCacheDataLoader(dataset(cache), num_workers=2)
    it = iter(loader)
    next(it)
    assert loader.state_dict()["segments"][0]["consumed"] == [B, 0]
    next(it)
    next(it)
    assert loader.state_dict()["segments"][0]["consumed"] == [2 * B, B]
    del it
    # a new pass continues where the last one stopped (one batch was prefetched, not counted)
    rest = list(loader)
    ref = [b for j in range(2) for b in reference_batches(cache, rank=j, world=2)]
    assert 3 + len(rest) == len(ref)


# -- elastic resume --------------------------------------------------------------------------


ELASTIC = [
    # (world, workers, extra settings), cut after n batches per rank of each but the last layout
    pytest.param([(4, 0, {}), (2, 0, {})], [3], id="world4-to-2"),
    pytest.param([(2, 0, {}), (3, 0, {})], [5], id="world2-to-3"),
    pytest.param([(1, 2, {}), (1, 0, {})], [5], id="workers2-to-1"),
    pytest.param([(2, 0, {}), (3, 0, {"batch_size": 3, "shuffle_buffer": 5}), (1, 2, {})], [4, 3],
                 id="chain-2-3-1x2-batch-and-buffer"),
]


@pytest.mark.parametrize("layouts,cuts", ELASTIC)
def test_elastic_resume_hands_out_every_window_once(cache, layouts, cuts):
    n = window_count(cache)

    def run_chain():
        runs, state = [], None
        for i, (world, workers, extra) in enumerate(layouts):
            loaders = layout(cache, world, workers, **extra)
            if state is not None:
                for l in loaders:
                    l.load_state_dict(state)
            run = lockstep(loaders, cuts[i] if i < len(cuts) else -1)
            runs.append(run)
            state = states(loaders)
        return runs, state

    runs, final = run_chain()
    assert final["epoch"] == 1 and final["segments"] == []
    assert all_windows(runs) == list(range(n)), "every window exactly once across the layouts"
    # deterministic: the same chain hands out the same batches
    again, _ = run_chain()
    assert [[[b["windows"].tolist() for b in rank] for rank in run] for run in runs] == \
        [[[b["windows"].tolist() for b in rank] for rank in run] for run in again]


def test_elastic_state_carries_the_earlier_layouts(cache):
    four = layout(cache, 4, 0)
    lockstep(four, 2)
    s4 = states(four)
    two = layout(cache, 2, 0)
    for l in two:
        l.load_state_dict(s4)
    lockstep(two, 1)
    s2 = states(two)
    assert s2["segments"][0] == s4["segments"][0]
    assert s2["segments"][1]["worldSize"] == 2 and s2["segments"][1]["consumed"] == [B, B]
    assert (s2["worldSize"], s2["numWorkers"]) == (2, 1)


def test_load_state_dict_refuses_other_data(cache, aligned_cache):
    l = layout(cache, 1, 0)[0]
    lockstep([l], 2)
    s = l.state_dict()
    for other in (dataset(cache, seed=SEED + 1), dataset(cache, context=T + 1), dataset(cache, k=K - 1),
                  dataset(cache, mode="renormalized"), dataset(cache, temperature=2.0), dataset(aligned_cache)):
        with pytest.raises(logitcache.LoaderError):
            LogitCacheDataLoader(other).load_state_dict(s)
    bad = json.loads(json.dumps(s))
    bad["segments"][0]["consumed"] = [-4]
    with pytest.raises(logitcache.LoaderError, match="segment 0"):
        l.load_state_dict(bad)
    # batch size and buffer may change
    LogitCacheDataLoader(dataset(cache, batch_size=3, shuffle_buffer=7)).load_state_dict(s)


def test_loader_arguments_that_would_break_batching_are_refused(cache):
    for kw in ({"batch_size": 2}, {"shuffle": True}, {"persistent_workers": True, "num_workers": 1},
               {"in_order": False, "num_workers": 2}, {"collate_fn": lambda b: b}):
        with pytest.raises(ValueError):
            LogitCacheDataLoader(dataset(cache), **kw)


def test_changing_the_position_during_a_pass_is_refused(cache):
    loader = LogitCacheDataLoader(dataset(cache))
    start = loader.state_dict()
    it = iter(loader)
    next(it)
    loader.load_state_dict(start)
    with pytest.raises(RuntimeError, match="position changed"):
        next(it)
    old = iter(loader)
    next(old)
    new = iter(loader)
    with pytest.raises(RuntimeError, match="superseded"):
        next(old)
    assert next(new)["index"] == 1, "the newer pass continues after the one batch handed out"


def test_streams_open_in_the_workers_not_in_the_parent(cache, tmp_path, monkeypatch):
    record = tmp_path / "pids"
    original = LogitCacheDataset.open_stream

    def recording(self, stream, streams):
        with open(record, "a") as f:
            f.write(f"{os.getpid()} {stream} {streams}\n")
        return original(self, stream, streams)

    monkeypatch.setattr(LogitCacheDataset, "open_stream", recording)
    loaders = layout(cache, 2, 2)
    lockstep(loaders, 3)
    rows = [line.split() for line in record.read_text().splitlines()]
    assert sorted((int(s), int(n)) for _, s, n in rows) == [(s, 4) for s in range(4)]
    assert all(int(pid) != os.getpid() for pid, _, _ in rows), rows


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_errors_surface_from_the_worker(cache, workers):
    loader = LogitCacheDataLoader(dataset(cache, k=64), num_workers=workers)  # the cache has K = 16
    with pytest.raises(logitcache.LoaderError, match="k = 64"):
        next(iter(loader))
    with pytest.raises(logitcache.LoaderError, match="batch size"):
        dataset(cache, batch_size=0)


# -- transport: shared-memory batch slots ----------------------------------------------------


def stream_reference(path: str, workers: int, epoch: int) -> List[dict]:
    """One epoch of a rank with `workers` workers, from `num_workers=0` loaders of its streams
    (rank w of `workers` is stream w), dealt in turn as the DataLoader takes its workers."""
    per_stream = []
    for w in range(workers):
        ds = dataset(path, rank=w, world=workers)
        ds.set_epoch(epoch)
        per_stream.append(list(LogitCacheDataLoader(ds)))
    assert len({len(s) for s in per_stream}) == 1
    return [s[i] for i in range(len(per_stream[0])) for s in per_stream]


def identical(got: Sequence[dict], want: Sequence[dict]) -> None:
    """Bit for bit: keys in order, dtypes, shapes, values, ints."""
    assert len(got) == len(want)
    for i, (x, y) in enumerate(zip(got, want)):
        assert list(x) == list(y), i
        for key in ARRAY_KEYS:
            assert x[key].dtype == y[key].dtype and x[key].shape == y[key].shape, (i, key)
            assert np.array_equal(x[key].numpy().view(np.uint8), y[key].numpy().view(np.uint8)), (i, key)
        assert (x["epoch"], x["index"], x["tokens"]) == (y["epoch"], y["index"], y["tokens"]), i


def snapshot(batch: dict) -> dict:
    return {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


@pytest.mark.parametrize("workers,slots", [(1, None), (2, None), (3, None), (2, 1), (3, 1)])
def test_workers_hand_out_the_batches_of_loaders_without_workers(cache, workers, slots):
    """Passes cut by breaks and resumed, into the next epoch: the same batches, bit for bit, as
    the streams read without workers; and every batch kept stays as it was handed out (the
    slots it came through were refilled many times since)."""
    want = stream_reference(cache, workers, 0) + stream_reference(cache, workers, 1)
    loader = LogitCacheDataLoader(dataset(cache), num_workers=workers, slots_per_worker=slots)
    got, at_receipt = [], []
    for cut in (3, 1, 5, None, 4):  # None: to the end of epoch 0
        for i, batch in enumerate(loader):
            got.append(batch)
            at_receipt.append(snapshot(batch))
            if cut is not None and i + 1 == cut:
                break
    identical(got, want[:len(got)])
    assert got[-1]["epoch"] == 1 and len(got) == len(want) // 2 + 4
    identical(got, at_receipt)


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_workers_started_without_fork(cache, start_method):
    loader = LogitCacheDataLoader(dataset(cache), num_workers=2, multiprocessing_context=start_method)
    identical(list(loader), stream_reference(cache, 2, 0))


def test_pin_memory_hands_out_the_same_batches(cache):
    # Without an accelerator torch only warns and does not pin; with one the slots are copied
    # straight into pinned memory. Either way the batches are the same.
    loader = LogitCacheDataLoader(dataset(cache), num_workers=2, pin_memory=True)
    with pytest.warns(UserWarning, match="pin_memory") if not torch.accelerator.is_available() \
            else contextlib.nullcontext():
        got = list(loader)
    identical(got, stream_reference(cache, 2, 0))
    if torch.accelerator.is_available():
        assert all(b["target_ids"].is_pinned() for b in got)


def test_slots_per_worker_below_one_is_refused(cache):
    with pytest.raises(ValueError, match="slots_per_worker"):
        LogitCacheDataLoader(dataset(cache), num_workers=1, slots_per_worker=0)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fails the test with TimeoutError instead of hanging when the block takes longer."""
    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: a hang")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def new_children(before: Sequence[multiprocessing.Process]) -> List[multiprocessing.Process]:
    return [p for p in multiprocessing.active_children() if p not in before]


def test_an_abandoned_pass_lets_waiting_workers_exit_cleanly(cache):
    """One slot per worker: after two batches both workers wait for the main process to free
    their slot. Breaking off the pass must let them end at once, not leave them for torch's
    shutdown to terminate after its 5 s join timeout per worker (their exit code is 0 either
    way: torch's workers exit quietly on their parent's SIGTERM, so the time tells)."""
    loader = LogitCacheDataLoader(dataset(cache), num_workers=2, slots_per_worker=1)
    before = multiprocessing.active_children()
    with deadline(30):
        it = iter(loader)
        next(it)
        next(it)
        workers = new_children(before)
        assert len(workers) == 2
        time.sleep(0.5)  # both have filled their slot by now and wait
        t0 = time.perf_counter()
        del it  # as a `break` does
        for p in workers:
            p.join(10)
        elapsed = time.perf_counter() - t0
    assert all(p.exitcode is not None for p in workers)
    assert elapsed < 4, f"workers took {elapsed:.1f} s to end: they were terminated, not woken"
    # the next pass continues after the two batches handed out
    assert next(iter(loader))["index"] == 1


@pytest.fixture
def damaged_cache(cache, tmp_path) -> str:
    """The cache with one byte flipped in a chunk 60 % into its shard: decoding the block that
    holds it fails with CacheError (checksum mismatch), some batches into the epoch."""
    out = str(tmp_path / "damaged")
    shutil.copytree(cache, out)
    shard = os.path.join(out, next(f for f in os.listdir(out) if f.endswith(".lcs")))
    with open(shard, "r+b") as f:
        f.seek(os.path.getsize(shard) * 6 // 10)
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte ^ 0xFF]))
    return out


def test_an_exception_in_a_worker_surfaces_in_the_main_process(damaged_cache):
    loader = LogitCacheDataLoader(dataset(damaged_cache), num_workers=2, slots_per_worker=1)
    before = multiprocessing.active_children()
    with deadline(60):
        it = iter(loader)
        next(it)  # the damage is met mid-epoch
        workers = new_children(before)
        assert len(workers) == 2
        with pytest.raises(logitcache.CacheError, match="checksum mismatch"):
            for _ in it:
                pass
        del it
        gc.collect()  # the failed pass (kept alive by the exception's traceback) shuts its workers down
        for p in workers:
            p.join(10)
    assert all(p.exitcode is not None for p in workers)


def test_a_killed_worker_surfaces_in_the_main_process(cache):
    loader = LogitCacheDataLoader(dataset(cache), num_workers=2, slots_per_worker=1)
    before = multiprocessing.active_children()
    with deadline(60):
        it = iter(loader)
        next(it)
        workers = new_children(before)
        assert len(workers) == 2
        with pytest.raises(RuntimeError, match="DataLoader worker"):
            # torch's SIGCHLD handler may raise as soon as the kill lands
            os.kill(workers[1].pid, signal.SIGKILL)
            for _ in it:
                pass
        del it
        gc.collect()
        for p in workers:
            p.join(10)
    assert all(p.exitcode is not None for p in workers)
