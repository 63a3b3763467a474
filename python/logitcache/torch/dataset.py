"""A LogitCache cache as a PyTorch dataset: whole batches per rank and worker, exact resume,
elastic resume over a change of world size or worker count.

    ds = LogitCacheDataset("cache/", batch_size=8, context=1024, k=32, mode="tail", seed=1)
    loader = LogitCacheDataLoader(ds, num_workers=2, pin_memory=True)
    for batch in loader:                       # the rest of one epoch of this rank
        logits = model(batch["input_ids"].long()).logits
        loss = loss_from_batch(logits, batch, mode="tail").total
        ...
        if time_to_save:
            torch.save({"model": ..., "data": loader.state_dict()}, path)   # rank 0 alone may save
    # later, on any world size or worker count:
    loader.load_state_dict(saved["data"])

**Streams.** The Swift loader's order (`EpochOrder` in Sources/StudentLoader/EpochPlan.swift)
deals an epoch's permuted blocks to "ranks"; here each of those is one *stream*: the pair
(data-parallel rank r, DataLoader worker w) of a run with R ranks and W workers is stream
`r * W + w` of `R * W`. A stream decodes only its own blocks, inside its worker process (no
native handle is opened in the parent, so forking workers is safe). With `remainder="pad"`
(or "drop") every stream has the same L batches per epoch, and the DataLoader takes its
workers in turn, so each rank yields `W * L` batches per epoch, in lockstep with the others.
`num_workers=0` counts as one worker in the main process.

Rank and world size come from the arguments, else from `torch.distributed` when a process
group is initialised at construction, else from the `RANK` / `WORLD_SIZE` (or `LOCAL_RANK` /
`LOCAL_WORLD_SIZE`) environment variables, else 0 of 1.

**Epochs.** One pass of `iter(loader)` is the rest of the current epoch. `LogitCacheDataLoader`
moves to the next epoch by itself when a pass ends; with a plain `DataLoader(ds,
batch_size=None)` (no counting, no state) call `ds.set_epoch(e)` before each pass, as with
`DistributedSampler`.

**State.** `LogitCacheDataLoader.state_dict()` after n batches of this rank's epoch is

    {"version": 1, "epoch": e, "cache": <manifest checksum>,
     "order": <order fingerprint: context length and seed>,
     "targets": {"k", "mode", "temperature"},
     "worldSize": R, "numWorkers": W,          (the run shape of the last segment, else null)
     "segments": [...earlier layouts of epoch e..., current layout]}

where a layout is the Swift `EpochSegment` {"worldSize": R * W (streams, not ranks),
"batchSize", "shuffleBuffer", "remainder", "consumed": [windows each stream has taken],
"order"}, and stream (r, w) has taken `B *` |{i in [0, n) : i % W == w}| windows (n counted
from where the layout began). A layout that has taken nothing is left out; after the last
batch of an epoch the state is epoch e + 1 with no segments. Every rank of a DDP job steps in
lockstep and so computes the same dict: rank 0 may save it alone, and every rank loads that
one file.

**Exact resume.** Loaded into the same world size, worker count, batch size, shuffle buffer
and remainder policy, the state continues the very same order: the remaining batches are the
ones the uninterrupted run would have yielded, in the same order.

**Elastic resume.** Loaded into any other layout (world size, worker count, batch size,
shuffle buffer or remainder policy), the saved layouts become the epoch's *segments* and the
new layout starts one: each new stream opens its loader and resumes epoch e with batch 0 and
those segments, so its order is the Swift order over only the windows the earlier layouts did
not hand out (blocks still holding such windows are dealt to the new streams as usual, and
padding again gives every stream the same batch count). Across any chain of resizes every
window of the epoch is handed out exactly once (padding windows aside, and with
`remainder="pad"`; "drop" drops a different remainder per layout), and which batch holds which
window is a deterministic function of the saved state and the new layout. Like MosaicML
Streaming's canonical nodes, the rule separates what fixes the *data* from what only fixes
its *delivery*:

* must stay the same: the cache (manifest checksum), the context length T and the seed (they
  fix the windows and the block permutation of every epoch), and k, mode and temperature
  (they fix the targets); `load_state_dict` refuses a state that differs in any of them;
* may change: world size, worker count, batch size, shuffle buffer, remainder policy, decode
  threads, prefetch depth.

The next epoch after an elastic resume is the plain order of the new layout.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .. import LoaderError, StudentLoader
from ._ring import BatchRing, Field, RingWriter

__all__ = ["LogitCacheDataLoader", "LogitCacheDataset", "distributed_rank_and_world_size", "order_fingerprint"]

_MODES = ("renormalized", "tail", "sampled")
_M64 = (1 << 64) - 1
_STATE_VERSION = 1


def order_fingerprint(context: int, seed: int) -> str:
    """`LoaderConfiguration.orderFingerprint` in Swift: FNV-1a 64 of "T|seed", 16 hex digits.

    Equals `StudentLoader.order_fingerprint` of any loader with this context length and seed;
    computed here so the parent process need not open a loader."""
    h = 0xCBF29CE484222325
    for b in f"{int(context)}|{int(seed) & _M64}".encode():
        h = ((h ^ b) * 0x100000001B3) & _M64
    return f"{h:016x}"


def distributed_rank_and_world_size() -> Tuple[int, int]:
    """(rank, world size) of this process: `torch.distributed` when a process group is
    initialised, else `RANK` / `WORLD_SIZE`, else `LOCAL_RANK` / `LOCAL_WORLD_SIZE`, else (0, 1).

    Raises ValueError when only one of a pair of variables is set or the values are not a rank
    inside its world size."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    for rank_key, world_key in (("RANK", "WORLD_SIZE"), ("LOCAL_RANK", "LOCAL_WORLD_SIZE")):
        r, n = os.environ.get(rank_key), os.environ.get(world_key)
        if r is None and n is None:
            continue
        if r is None or n is None:
            raise ValueError(f"{rank_key}={r!r} and {world_key}={n!r}: set both or neither "
                             "(or pass rank= and world_size=)")
        rank, world = int(r), int(n)
        if not (world >= 1 and 0 <= rank < world):
            raise ValueError(f"{rank_key}={rank} must lie in 0..<{world_key}={world}")
        return rank, world
    return 0, 1


def _cache_directory(cache: Any, remote: Optional[dict] = None) -> Tuple[str, Optional[str]]:
    """(the local cache directory, the cache's URL or None): a path as given; for a URL, the
    local directory of `logitcache.remote.ShardStore` with the verified manifest (shards are
    fetched on demand by each stream's loader)."""
    if isinstance(cache, str) and "://" in cache:
        from .. import remote as _remote
        if _remote.is_url(cache):
            with _remote.ShardStore(cache, **(remote or {})) as store:
                return store.directory, cache
    if remote:
        raise TypeError("remote options apply to URLs only")
    if isinstance(cache, (str, os.PathLike)):
        return os.fspath(cache), None
    for name in ("directory", "path", "root"):
        value = getattr(cache, name, None)
        if isinstance(value, (str, os.PathLike)):
            return os.fspath(value), None
    raise TypeError(f"cache must be a directory path or a logitcache.Cache, not {type(cache).__name__}")


@dataclass(frozen=True)
class _Layout:
    """How one run splits an epoch: R ranks of W workers, each a stream of the Swift order."""

    world_size: int
    workers: int
    batch_size: int
    shuffle_buffer: int
    remainder: str

    @property
    def streams(self) -> int:
        return self.world_size * self.workers


@dataclass
class _Open:
    """The layout running in the epoch: its run shape and each stream's windows taken."""

    layout: _Layout
    consumed: List[int]


@dataclass
class _Progress:
    """Where the epoch stands: `earlier` are closed layouts (Swift `EpochSegment` dicts, each
    having taken something), `current` the layout that ran last, if it may be continued."""

    epoch: int = 0
    earlier: List[Dict[str, Any]] = field(default_factory=list)
    current: Optional[_Open] = None


@dataclass(frozen=True)
class _Plan:
    """One pass: the epoch, the segments before this layout, and each stream's windows taken
    in this layout so far (the pass resumes every stream at `consumed[s] // B`)."""

    epoch: int
    earlier: Tuple[Dict[str, Any], ...]
    layout: _Layout
    consumed: Tuple[int, ...]

    def taken(self, rank: int) -> int:
        """Batches rank `rank` has taken in this layout (its streams' total)."""
        W, B = self.layout.workers, self.layout.batch_size
        return sum(self.consumed[rank * W:(rank + 1) * W]) // B

    def stream_of(self, rank: int, worker: int) -> int:
        """The stream worker `worker` of rank `rank` serves in this pass: the DataLoader's
        i-th batch of the pass comes from worker i % W, and is the rank's batch
        `taken + i`, which belongs to stream `(taken + i) % W` of the rank."""
        W = self.layout.workers
        return rank * W + (worker + self.taken(rank)) % W


def _round_robin(counts: Sequence[int], W: int) -> bool:
    """Whether batch counts per stream of one rank are those of n batches dealt in turn."""
    n = sum(counts)
    return list(counts) == [n // W + (1 if j < n % W else 0) for j in range(W)]


class LogitCacheDataset(IterableDataset):
    """Batches of a LogitCache cache for one data-parallel rank, as dicts of tensors.

    Use with `LogitCacheDataLoader(ds, num_workers=W)` (stateful) or `DataLoader(ds,
    batch_size=None, num_workers=W)`. Each batch has the `logitcache.StudentLoader` keys:
    `windows` [B] int32 (-1 for padding), `input_ids`, `labels` [B, T] int32 (label -1: no
    target), `target_ids` [B, T, k] int32 (-1: unused slot), `target_weights` [B, T, k] float32,
    `tail_mass` [B, T] float32, `entry_counts` [B, T] int32, and the ints `epoch`, `index` (the
    stream's batch in its order) and `tokens` (real tokens). See the module docstring for
    streams, epochs and (elastic) resumption.

    Args:
        cache: the cache directory (a path, or a `logitcache.Cache` whose directory is read),
            or an fsspec URL (`remote`: the options of `logitcache.remote.ShardStore`): the
            manifest is fetched here; each stream's loader fetches the shards it reads, verified,
            into the store's local directory.
        batch_size, context, k, mode, temperature, seed, shuffle_buffer, remainder, student,
            decode_threads, prefetch_blocks, backend: as `logitcache.StudentLoader`; B windows
            per batch of T tokens with k target slots.
        rank, world_size: this process's data-parallel rank; None: from torch.distributed or
            the environment (`distributed_rank_and_world_size`), resolved here.

    Raises:
        `logitcache.LoaderError` (a ValueError) for settings out of range or an unreadable
        manifest; ValueError for a half-set or out-of-range RANK / WORLD_SIZE; TypeError for a
        `cache` that names no directory. The loader's own checks (k above the cache's K,
        another tokenizer, a temperature the cache cannot serve, damaged shards) run where the
        stream opens, in the worker, and surface from the first `next()` as `LoaderError` or
        `CacheError`.
    """

    def __init__(self, cache: Any, *, batch_size: int, context: int, k: int, mode: str = "renormalized",
                 temperature: float = 1.0, seed: int = 0, shuffle_buffer: int = 64, remainder: str = "pad",
                 student: Optional[Tuple[str, int]] = None, decode_threads: int = 1, prefetch_blocks: int = 4,
                 backend: str = "auto", rank: Optional[int] = None, world_size: Optional[int] = None,
                 remote: Optional[Dict[str, Any]] = None) -> None:
        super().__init__()
        #: The cache's URL when it is remote (each stream's loader fetches shards on demand), else None.
        self.url: Optional[str]
        self.cache_directory: str
        self.cache_directory, self.url = _cache_directory(cache, remote)
        self.remote: Optional[Dict[str, Any]] = dict(remote) if remote else None
        self.batch_size, self.context, self.k = int(batch_size), int(context), int(k)
        self.mode, self.temperature, self.seed = str(mode), float(temperature), int(seed)
        self.shuffle_buffer, self.remainder = int(shuffle_buffer), str(remainder)
        self.student = student
        if backend == "auto" and not isinstance(cache, (str, os.PathLike)):
            backend = getattr(cache, "backend", backend)  # an open Cache's backend, as StudentLoader does
        self.decode_threads, self.prefetch_blocks, self.backend = int(decode_threads), int(prefetch_blocks), str(backend)
        if rank is None and world_size is None:
            rank, world_size = distributed_rank_and_world_size()
        elif rank is None or world_size is None:
            raise ValueError("pass both rank and world_size, or neither (then they come from torch.distributed "
                             "or the environment)")
        self.rank, self.world_size = int(rank), int(world_size)
        self._check_settings()
        manifest = self._read_manifest()
        #: The manifest's checksum (the cache's identity in every state).
        self.cache_checksum: str = manifest["checksum"]
        #: The cache's vocabulary size V (a student's output width).
        self.vocabulary_size: int = int(manifest["vocabularySize"])
        self._progress = _Progress()
        # Set by LogitCacheDataLoader only while its workers start, so they take it along:
        # then they fill its shared-memory slots instead of yielding tensors.
        self._ring: Optional[BatchRing] = None

    def _check_settings(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise LoaderError(f"loader configuration: {what}")
        need(self.batch_size >= 1, f"batch size {self.batch_size} must be >= 1")
        need(self.context >= 1, f"context length {self.context} must be >= 1")
        need(self.k >= 0, f"k {self.k} must be >= 0")
        need(self.mode in _MODES, f"mode {self.mode!r} is not one of {', '.join(_MODES)}")
        need(math.isfinite(self.temperature) and self.temperature > 0,
             f"temperature {self.temperature} must be finite and > 0")
        need(0 <= self.seed <= _M64, f"seed {self.seed} must lie in 0...2^64-1")
        need(self.shuffle_buffer >= 1, f"shuffle buffer {self.shuffle_buffer} must be >= 1")
        need(self.remainder in ("pad", "drop"), f"remainder {self.remainder!r} is not pad or drop")
        need(self.world_size >= 1 and 0 <= self.rank < self.world_size,
             f"rank {self.rank} must lie in 0..<world size {self.world_size}")

    def _read_manifest(self) -> Dict[str, Any]:
        """manifest.json as JSON (only its checksum and vocabulary size are used here: the
        loader in each worker checks the cache fully)."""
        path = os.path.join(self.cache_directory, "manifest.json")
        try:
            with open(path, "rb") as f:
                manifest = json.loads(f.read())
        except (OSError, ValueError) as e:
            raise LoaderError(f"{self.cache_directory}: cannot read manifest.json: {e}") from e
        if not (isinstance(manifest, dict) and isinstance(manifest.get("checksum"), str)
                and isinstance(manifest.get("vocabularySize"), int)):
            raise LoaderError(f"{path}: no manifest checksum or vocabulary size")
        return manifest

    # -- order and epochs ----------------------------------------------------------------------

    @property
    def order_fingerprint(self) -> str:
        """The Swift order fingerprint (context length and seed) every segment must carry."""
        return order_fingerprint(self.context, self.seed)

    @property
    def epoch(self) -> int:
        """The epoch the next pass reads."""
        return self._progress.epoch

    def set_epoch(self, epoch: int) -> None:
        """Makes the next pass read epoch `epoch` from its start; a no-op when `epoch` is the
        current one, so a resumed mid-epoch position survives `set_epoch(resumed_epoch)`."""
        if epoch < 0:
            raise ValueError(f"epoch {epoch} < 0")
        if epoch != self._progress.epoch:
            self._progress = _Progress(epoch=int(epoch))

    def _layout(self, num_workers: int) -> _Layout:
        """The run shape of this dataset under a DataLoader with `num_workers` workers."""
        return _Layout(self.world_size, max(1, int(num_workers)), self.batch_size, self.shuffle_buffer, self.remainder)

    def _segment(self, layout: _Layout, consumed: Sequence[int]) -> Dict[str, Any]:
        return {"worldSize": layout.streams, "batchSize": layout.batch_size, "shuffleBuffer": layout.shuffle_buffer,
                "remainder": layout.remainder, "consumed": [int(c) for c in consumed], "order": self.order_fingerprint}

    @staticmethod
    def _continuable(current: _Open) -> bool:
        """Whether a layout's progress can be continued by the same run shape: whole batches,
        the same counts on every rank, dealt to each rank's workers in turn (then resumed
        ranks stay in lockstep and the order is the uninterrupted one)."""
        layout, consumed = current.layout, current.consumed
        W, B = layout.workers, layout.batch_size
        if len(consumed) != layout.streams or any(c < 0 or c % B for c in consumed):
            return False
        block = consumed[:W]
        return all(consumed[r * W:(r + 1) * W] == block for r in range(layout.world_size)) and \
            _round_robin([c // B for c in block], W)

    def _plan(self, num_workers: int) -> _Plan:
        """What a pass under `num_workers` workers reads: the current layout continued when it
        has the same run shape, else closed as a segment and a new layout begun."""
        p, layout = self._progress, self._layout(num_workers)
        earlier = list(p.earlier)
        if p.current is not None:
            if p.current.layout == layout and self._continuable(p.current):
                return _Plan(p.epoch, tuple(earlier), layout, tuple(p.current.consumed))
            if any(p.current.consumed):
                earlier.append(self._segment(p.current.layout, p.current.consumed))
        return _Plan(p.epoch, tuple(earlier), layout, (0,) * layout.streams)

    # -- iteration (inside the worker) ---------------------------------------------------------

    def open_stream(self, stream: int, streams: int) -> StudentLoader:
        """A `logitcache.StudentLoader` for one stream (opened in the calling process)."""
        return StudentLoader(self.url or self.cache_directory, remote=self.remote if self.url else None, batch_size=self.batch_size, context=self.context, k=self.k,
                             mode=self.mode, temperature=self.temperature, seed=self.seed, rank=stream,
                             world_size=streams, shuffle_buffer=self.shuffle_buffer, remainder=self.remainder,
                             student=self.student, decode_threads=self.decode_threads,
                             prefetch_blocks=self.prefetch_blocks, backend=self.backend)

    def _stream_batches(self, plan: _Plan, stream: int, writer: Optional[RingWriter]) -> Iterator[Dict[str, Any]]:
        """The batches of one stream for the rest of `plan`'s epoch: as tensors, or with
        `writer` decoded into its ring's slots and announced by small messages."""
        layout, B = plan.layout, plan.layout.batch_size
        if plan.consumed[stream] % B:
            raise LoaderError(f"resume state: stream {stream} consumed {plan.consumed[stream]} windows, "
                              f"not whole batches of {B}")
        start = plan.consumed[stream] // B
        loader = self.open_stream(stream, layout.streams)
        try:
            if plan.earlier or start:
                state: Dict[str, Any] = {"version": 1, "epoch": plan.epoch, "batch": start,
                                         "configuration": loader.fingerprint, "cache": self.cache_checksum}
                if plan.earlier:
                    state["segments"] = [dict(g) for g in plan.earlier]
                loader.resume(state)
            else:
                loader.seek(plan.epoch, 0)
            for _ in range(max(0, loader.batches_in_epoch - start)):
                if writer is None:
                    batch = loader.next()
                else:
                    arrays = writer.acquire()
                    if arrays is None:  # the pass was closed: nobody reads further batches
                        return
                    batch = loader.next_into(arrays)
                if batch["epoch"] != plan.epoch:  # pragma: no cover - a loader bug, not a user error
                    raise RuntimeError(f"stream {stream} left epoch {plan.epoch} early")
                yield _to_tensors(batch) if writer is None else writer.message(batch)
        finally:
            close = getattr(loader, "close", None)
            if callable(close):
                close()

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        plan = self._plan(workers)
        writer = self._ring.writer(worker) if self._ring is not None and info is not None else None
        return self._stream_batches(plan, plan.stream_of(self.rank, worker), writer)

    # -- state -------------------------------------------------------------------------------

    def _begin(self, plan: _Plan) -> None:
        """Adopts `plan` as the progress (called in the parent when a counted pass starts)."""
        self._progress = _Progress(plan.epoch, [dict(g) for g in plan.earlier], _Open(plan.layout, list(plan.consumed)))

    def _count(self, plan: _Plan, yielded: int) -> None:
        """Records the pass's `yielded`-th batch (1-based) for every rank (lockstep)."""
        current = self._progress.current
        if current is None or current.layout != plan.layout or sum(current.consumed) != \
                sum(plan.consumed) + (yielded - 1) * plan.layout.batch_size * plan.layout.world_size:
            raise RuntimeError("the position changed during a pass (set_epoch, load_state_dict or another "
                               "iter()); start a new pass with iter(loader)")
        W, B = plan.layout.workers, plan.layout.batch_size
        j = (plan.taken(self.rank) + yielded - 1) % W
        for r in range(plan.layout.world_size):
            current.consumed[r * W + j] += B

    def _finish_epoch(self) -> None:
        self._progress = _Progress(self._progress.epoch + 1)

    def state_dict(self) -> Dict[str, Any]:
        """The position (see the module docstring); JSON-ready."""
        p = self._progress
        segments = [{**g, "consumed": list(g["consumed"])} for g in p.earlier]
        world = workers = None
        if p.current is not None and any(p.current.consumed):
            segments.append(self._segment(p.current.layout, p.current.consumed))
            world, workers = p.current.layout.world_size, p.current.layout.workers
        return {"version": _STATE_VERSION, "epoch": p.epoch, "cache": self.cache_checksum,
                "order": self.order_fingerprint,
                "targets": {"k": self.k, "mode": self.mode, "temperature": self.temperature},
                "worldSize": world, "numWorkers": workers, "segments": segments}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resumes at `state` (from `state_dict` of any layout); the next pass continues it.

        Raises `logitcache.LoaderError` naming the field when the state is malformed or was
        made for another cache, context length, seed, k, mode or temperature."""
        def bad(what: str) -> Exception:
            return LoaderError(f"resume state: {what}")
        if not isinstance(state, Mapping):
            raise bad(f"must be a dict, not {type(state).__name__}")
        if state.get("version") != _STATE_VERSION:
            raise bad(f"version {state.get('version')!r} is not {_STATE_VERSION}")
        if state.get("cache") != self.cache_checksum:
            raise bad(f"made for cache {state.get('cache')}, this cache ({self.cache_directory}) is {self.cache_checksum}")
        if state.get("order") != self.order_fingerprint:
            raise bad(f"made with order {state.get('order')} (context length and seed), this dataset has "
                      f"{self.order_fingerprint} (T={self.context}, seed={self.seed})")
        targets = {"k": self.k, "mode": self.mode, "temperature": self.temperature}
        if state.get("targets") != targets:
            raise bad(f"made for targets {state.get('targets')}, this dataset reads {targets}")
        epoch = state.get("epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise bad(f"epoch {epoch!r} must be an int >= 0")
        segments = state.get("segments") or []
        if not isinstance(segments, list):
            raise bad("segments must be a list")
        keys = {"worldSize", "batchSize", "shuffleBuffer", "remainder", "consumed", "order"}
        is_int = lambda x: isinstance(x, int) and not isinstance(x, bool)  # noqa: E731
        for i, g in enumerate(segments):
            if not isinstance(g, Mapping) or set(g) != keys:
                raise bad(f"segment {i} must have exactly the keys {sorted(keys)}")
            if g["order"] != self.order_fingerprint:
                raise bad(f"segment {i} was made with order {g['order']}, this dataset has {self.order_fingerprint}")
            ok = (is_int(g["worldSize"]) and g["worldSize"] >= 1 and isinstance(g["consumed"], list)
                  and len(g["consumed"]) == g["worldSize"] and all(is_int(c) and c >= 0 for c in g["consumed"])
                  and is_int(g["batchSize"]) and g["batchSize"] >= 1
                  and is_int(g["shuffleBuffer"]) and g["shuffleBuffer"] >= 1 and g["remainder"] in ("pad", "drop"))
            if not ok:
                raise bad(f"segment {i} is not a valid layout: {dict(g)}")
        earlier = [{k: (list(v) if k == "consumed" else v) for k, v in g.items()} for g in segments if any(g["consumed"])]
        current = None
        world, workers = state.get("worldSize"), state.get("numWorkers")
        if earlier and is_int(world) and is_int(workers) and world >= 1 and workers >= 1:
            last = earlier[-1]
            layout = _Layout(world, workers, last["batchSize"], last["shuffleBuffer"], last["remainder"])
            if layout.streams == last["worldSize"]:
                current = _Open(layout, list(earlier.pop()["consumed"]))
        self._progress = _Progress(epoch, earlier, current)


def _batch_fields(batch_size: int, context: int, k: int) -> List[Field]:
    """The arrays of a batch (`StudentLoader.next`'s, in its order): name, dtype, shape."""
    B, T = batch_size, context
    return [("windows", np.int32, (B,)), ("input_ids", np.int32, (B, T)), ("labels", np.int32, (B, T)),
            ("target_ids", np.int32, (B, T, k)), ("target_weights", np.float32, (B, T, k)),
            ("tail_mass", np.float32, (B, T)), ("entry_counts", np.int32, (B, T))]


def _to_tensors(batch: Mapping[str, Any]) -> Dict[str, Any]:
    """numpy arrays -> tensors (sharing memory; each batch's arrays are its own), ints kept."""
    out: Dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, np.ndarray):
            out[key] = torch.from_numpy(value)
        elif isinstance(value, np.integer):
            out[key] = int(value)
        else:
            out[key] = value
    return out


def _taken_from_slots(messages: Iterator[Dict[str, int]], ring: BatchRing, pin_memory: bool) -> Iterator[Dict[str, Any]]:
    """The batches of a pass with workers. Each message's slot is copied out and freed as soon
    as the message arrives (the in-order freeing the ring relies on); when the pass ends, is
    abandoned (a `break`) or fails, the ring is closed, so workers waiting for a slot end their
    streams and torch's shutdown finds them done instead of terminating them."""
    try:
        for message in messages:
            yield ring.take(message, pin_memory)
    finally:
        ring.close()


class LogitCacheDataLoader(DataLoader):
    """A `DataLoader` over a `LogitCacheDataset` that counts its batches and can save and
    restore its exact position, including across a change of world size or worker count.

    Batching is the dataset's (`batch_size=None`); other `DataLoader` arguments (`num_workers`,
    `pin_memory`, `prefetch_factor`, `timeout`, `multiprocessing_context`, ...) pass through.
    Each `iter()` is the rest of the current epoch; when it ends the loader is at the next
    epoch's start, by itself: there is no `set_epoch` here (so a `Trainer` that calls one
    with its own epoch count cannot undo a resumed position). A pass abandoned midway (a
    `break`) is continued by the next `iter()`. The batch counted is the one handed to the
    caller (one more is fetched ahead), so `state_dict()` taken after using a batch resumes
    with the next one.

    **Transport.** With workers, each pass gives every worker `slots_per_worker` batch slots in
    shared memory (default `prefetch_factor + 1`: a worker then never waits for the main process
    while the DataLoader's prefetching keeps it busy; fewer slots save shared memory, B * T *
    (8 k + 16) bytes per slot, at the cost of such waits). A worker decodes each batch straight
    into its next free slot and sends only the slot's number; the main process copies the slot
    into the batch it hands out (into pinned memory with `pin_memory`) and frees the slot, so
    batches are the caller's to keep, equal bit for bit to those of `num_workers=0` loaders of
    the same streams. Works with the fork, spawn and forkserver start methods.

    Raises ValueError for `batch_size`, `sampler`, `batch_sampler`, `shuffle`, `collate_fn`,
    `in_order=False` (batches are counted as coming from the workers in turn, and the slots are
    freed in that order), `persistent_workers=True` (workers read the position only when a pass
    starts) or `slots_per_worker` < 1.
    """

    def __init__(self, dataset: LogitCacheDataset, num_workers: int = 0, *, slots_per_worker: Optional[int] = None,
                 **kwargs: Any) -> None:
        if not isinstance(dataset, LogitCacheDataset):
            raise TypeError(f"dataset must be a LogitCacheDataset, not {type(dataset).__name__}")
        for key in ("batch_size", "sampler", "batch_sampler", "shuffle", "collate_fn"):
            if kwargs.get(key) is not None and not (key == "shuffle" and kwargs[key] is False):
                raise ValueError(f"{key} is the dataset's (it yields whole batches in its own order); do not pass it")
            kwargs.pop(key, None)
        if kwargs.get("in_order") is False:
            raise ValueError("in_order=False is not supported: batches are counted per worker in turn")
        if kwargs.get("persistent_workers"):
            raise ValueError("persistent_workers=True is not supported: each pass starts its workers at the "
                             "loader's position")
        if slots_per_worker is not None and int(slots_per_worker) < 1:
            raise ValueError(f"slots_per_worker {slots_per_worker} must be >= 1")
        super().__init__(dataset, batch_size=None, num_workers=num_workers, **kwargs)
        self.slots_per_worker: Optional[int] = None if slots_per_worker is None else int(slots_per_worker)
        self._passes = 0

    @property
    def workers(self) -> int:
        """Streams per rank: `num_workers`, or 1 without workers."""
        return max(1, self.num_workers)

    @property
    def epoch(self) -> int:
        """The epoch the next batch belongs to."""
        return self.dataset.epoch

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        ds: LogitCacheDataset = self.dataset
        plan = ds._plan(self.workers)
        ds._begin(plan)
        self._passes += 1
        if self.num_workers == 0:
            return self._counted(super().__iter__(), plan, self._passes)
        slots = self.slots_per_worker if self.slots_per_worker is not None else self.prefetch_factor + 1
        # The DataLoader's own context (torch.multiprocessing: the default one, when None), so
        # the semaphores may be pickled to spawned workers.
        context = self.multiprocessing_context if self.multiprocessing_context is not None else torch.multiprocessing
        ring = BatchRing(_batch_fields(ds.batch_size, ds.context, ds.k), self.num_workers, slots, context)
        ds._ring = ring
        try:
            it = super().__iter__()  # starts the workers, each with the dataset and so the ring
        finally:
            ds._ring = None
        # torch's own decision: pin_memory asked for and an accelerator present.
        pin = bool(getattr(it, "_pin_memory", False))
        return self._counted(_taken_from_slots(it, ring, pin), plan, self._passes)

    def _counted(self, it: Iterator[Dict[str, Any]], plan: _Plan, pass_id: int) -> Iterator[Dict[str, Any]]:
        # One batch is held back so the last one of the epoch is known when it is handed out:
        # the state then already points at the next epoch.
        ds: LogitCacheDataset = self.dataset
        try:
            ahead = next(it)
        except StopIteration:
            ds._finish_epoch()
            return
        yielded = 0
        while True:
            current = ahead
            try:
                ahead = next(it)
                last = False
            except StopIteration:
                last = True
            if pass_id != self._passes:
                raise RuntimeError("this pass was superseded by a newer iter(loader); use one pass at a time")
            yielded += 1
            ds._count(plan, yielded)
            if last:
                ds._finish_epoch()
            yield current
            if last:
                return

    def state_dict(self) -> Dict[str, Any]:
        """The position after the batches handed out so far (module docstring); JSON-ready.
        In DDP every rank returns the same dict."""
        return self.dataset.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continues from `state` with the next `iter()` (exactly, or elastically when the
        layout differs; see the module docstring)."""
        self.dataset.load_state_dict(state)
