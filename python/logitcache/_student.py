"""`StudentLoader`: the Swift student loader's batches as numpy arrays, native or pure.

See `logitcache.StudentLoader`.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
from ctypes import byref, c_int64, c_void_p
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _native
from . import loader as _pure
from ._cache import Cache, PathLike, resolve_backend
from .loader import LoaderError

Batch = Dict[str, Union[int, np.ndarray]]


class StudentLoader(_native.Resource):
    """Shuffled, resumable, rank-partitioned batches of teacher targets from one cache.

    The batches of the Swift `StudentLoader` (same order, same values), through the native
    library (`backend="native"`), or computed in numpy (`"pure"`; windows, ids, labels and counts
    identical, weights to float32 rounding). `"auto"` takes the backend of `cache` when it is a
    `Cache`, else native when installed.

    Arguments: `batch_size` B windows of `context` T tokens, `k` target slots per token; `mode`
    "renormalized" (top-k renormalised), "tail" (exact top-k plus the uncovered mass) or
    "sampled" (draw counts / N); `temperature` tau (re-tempers a tau_c = 1 cache; a cache captured
    at tau_c != 1 serves only tau = tau_c); `seed` fixes the order of every epoch; `rank` of
    `world_size` streams (disjoint, complete); `shuffle_buffer` windows; `remainder` "pad"
    (padding windows, every window once) or "drop"; `student` = (tokenizer fingerprint,
    vocabulary size) refuses a cache of another tokenizer. `cache` may be an fsspec URL, with
    `remote` the options of `logitcache.remote.ShardStore`: shards are then fetched when the
    loader first needs them (see `Cache`). `decode_threads` and
    `prefetch_blocks` tune the native loader (ignored by the pure one).

    `next()` returns a dict of arrays the caller owns (keep them as long as you like; the native
    backend recycles an earlier batch's arrays only once nothing references them any more):
        epoch, index       int: the batch's epoch and its index in this rank's epoch
        windows            int32 [B]: window index, -1 for a padding window
        input_ids          int32 [B, T] (0 where padded)
        labels             int32 [B, T]: next input id, -1 where padded and at a sequence's end
        target_ids         int32 [B, T, k]: teacher ids, -1 in unused slots
        target_weights     float32 [B, T, k]: the mode's weights, 0 in unused slots
        tail_mass          float32 [B, T]: uncovered mass (tail mode), else 0
        entry_counts       int32 [B, T]: valid slots per token
        tokens             int: real (unpadded) tokens
    Epochs follow each other without end. `state()` after any batch is a small JSON-ready dict
    (the Swift `LoaderState`) that `resume` continues from exactly, in either backend.

    Raises LoaderError for a configuration the cache cannot serve (k above K, no samples,
    a head-tail cache in sampled mode, another tokenizer, a temperature other than the
    capture's, a rank left without a batch) or a state of another configuration or cache, and
    CacheError naming the shard and chunk when the cache is damaged.
    """

    POOL = 4  # most output array sets the native backend recycles

    def __init__(self, cache: Union[PathLike, Cache], *, batch_size: int, context: int, k: int,
                 mode: str = "renormalized", temperature: float = 1.0, seed: int = 0, rank: int = 0,
                 world_size: int = 1, shuffle_buffer: int = 64, remainder: str = "pad",
                 student: Optional[Tuple[str, int]] = None, decode_threads: int = 1, prefetch_blocks: int = 4,
                 backend: str = "auto", remote: Optional[dict] = None):
        self._owned: Optional[Cache] = None  # a Cache opened here for a URL, closed with the loader
        self._source = None  # the remote.NativeShardSource the native loader reads shards through
        if not isinstance(cache, Cache) and "://" in os.fspath(cache):
            cache = self._owned = Cache(cache, backend=backend, remote=remote)
        elif remote:
            raise TypeError(f"remote options apply to URLs only, not to the local path {os.fspath(cache)!r}")
        if isinstance(cache, Cache):
            if backend == "auto":
                backend = cache.backend
            path = cache.path
        else:
            path = os.fspath(cache)
        self.backend: str = resolve_backend(backend)
        self.path: str = path
        self.batch_size, self.context, self.k = int(batch_size), int(context), int(k)
        self.mode, self.temperature, self.seed = mode, float(temperature), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.shuffle_buffer, self.remainder = int(shuffle_buffer), remainder
        self.decode_threads, self.prefetch_blocks = int(decode_threads), int(prefetch_blocks)
        self._lock = threading.Lock()
        self._handle: Optional[c_void_p] = None
        self._pure: Optional[_pure.StudentLoader] = None
        self._pool: List[Batch] = []  # output array sets of the native backend (see _output_arrays)
        self._pool_refs = 0
        if mode not in _pure.MODES:
            raise LoaderError(f"loader configuration: mode {mode!r} is not one of {', '.join(_pure.MODES)}")
        if remainder not in ("pad", "drop"):
            raise LoaderError(f"loader configuration: remainder {remainder!r} is not pad or drop")
        if not 0 <= self.seed < 1 << 64:
            raise LoaderError(f"loader configuration: seed {self.seed} must lie in 0..<2^64")
        if student is not None:
            fp, vocab = student
            student = (str(fp), int(vocab))
        if self.backend == "native":
            if not math.isfinite(self.temperature):  # JSON cannot carry it to the library: the same refusal here
                lo, hi = _pure.TEMPERATURE_RANGE
                raise LoaderError(f"loader configuration: temperature {self.temperature} must be in {lo}...{hi} "
                                  "(outside it the targets leave float range)")
            lib = _native.require()
            config = {"batchSize": self.batch_size, "contextLength": self.context, "k": self.k, "mode": mode,
                      "temperature": self.temperature, "seed": self.seed, "rank": self.rank,
                      "worldSize": self.world_size, "shuffleBuffer": self.shuffle_buffer, "remainder": remainder,
                      "decodeThreads": self.decode_threads, "prefetchBlocks": self.prefetch_blocks}
            if student is not None:
                config["tokenizerFingerprint"], config["vocabularySize"] = student
            handle = c_void_p()
            encoded = json.dumps(config).encode()
            if isinstance(cache, Cache) and cache._handle is not None:
                # Over the open cache: a remote one keeps fetching shards on demand for the loader.
                status = lib.lc_loader_open_cache(cache._handle, encoded, byref(handle))
                self._source = cache._source.retain() if cache._source is not None and status == _native.OK else None
            else:
                status = lib.lc_loader_open(_native.encode_path(path), encoded, byref(handle))
            if status != _native.OK:
                self._close_owned()
            _native.check(status, "lc_loader_open", loader=True)
            self._handle = handle
        else:
            reader = cache._reader if isinstance(cache, Cache) and cache._reader is not None else path
            self._pure = _pure.StudentLoader(reader, self.batch_size, self.context, self.k, mode=mode,
                                             temperature=self.temperature, seed=self.seed, rank=self.rank,
                                             world_size=self.world_size, shuffle_buffer=self.shuffle_buffer,
                                             remainder=remainder, student=student,
                                             decode_threads=self.decode_threads, prefetch_blocks=self.prefetch_blocks)

    # -- lifetime

    def close(self) -> None:
        """Stops the native loader's threads and releases it (idempotent)."""
        with self._lock:
            if self._handle is not None:
                _native.library().lc_loader_close(self._handle)
                self._handle = None
            self._pure = None
            if self._source is not None:
                self._source.drop()
                self._source = None
            self._close_owned()

    def _close_owned(self) -> None:
        if self._owned is not None:
            self._owned.close()
            self._owned = None

    def _live(self):
        if self._handle is None and self._pure is None:
            raise LoaderError("the loader is closed")

    # -- identity

    @property
    def fingerprint(self) -> str:
        """Hash of the fields that fix the batches (`LoaderConfiguration.fingerprint`): a
        state resumes only a loader with the same one."""
        return _pure.configuration_fingerprint(self.batch_size, self.context, self.k, self.mode, self.temperature,
                                               self.seed, self.rank, self.world_size, self.shuffle_buffer, self.remainder)

    @property
    def order_fingerprint(self) -> str:
        """Hash of what every layout of an elastic resume shares: T and the seed."""
        return _pure.order_fingerprint(self.context, self.seed)

    # -- position

    def _position(self) -> Tuple[int, int, int]:
        with self._lock:
            self._live()
            if self._handle is not None:
                e, b, n = c_int64(), c_int64(), c_int64()
                _native.check(_native.library().lc_loader_position(self._handle, byref(e), byref(b), byref(n)),
                              "lc_loader_position", loader=True)
                return e.value, b.value, n.value
            p = self._pure
            return p.epoch, p.batch_index, p.batches_in_epoch

    @property
    def epoch(self) -> int:
        """Epoch of the next batch."""
        return self._position()[0]

    @property
    def batch_index(self) -> int:
        """Index of the next batch inside its epoch (this rank's batches)."""
        return self._position()[1]

    @property
    def batches_in_epoch(self) -> int:
        """This rank's batches in the current epoch (equal for every rank)."""
        return self._position()[2]

    def state(self) -> dict:
        """The position of the next batch: {"version", "epoch", "batch", "configuration",
        "cache"[, "segments"]}, the Swift `LoaderState` (JSON-ready)."""
        with self._lock:
            self._live()
            if self._handle is not None:
                lib = _native.library()
                return json.loads(_native.call_string(lib.lc_loader_state, "lc_loader_state", self._handle, loader=True))
            return self._pure.state()

    def resume(self, state: dict) -> None:
        """Continues exactly where `state` was taken (by this backend or the other, or the
        Swift loader). A state with "segments" resumes an epoch begun under other layouts
        (elastic resume, see `segment`). Raises LoaderError for a state of another
        configuration or cache."""
        with self._lock:
            self._live()
            if self._handle is not None:
                _native.check(_native.library().lc_loader_resume(self._handle, json.dumps(state).encode()),
                              "lc_loader_resume", loader=True)
            else:
                self._pure.resume(state)

    def seek(self, epoch: int, batch: int) -> None:
        """Moves to batch `batch` of epoch `epoch` (the epoch's batch count means the start of
        the next epoch)."""
        epoch, batch = int(epoch), int(batch)
        with self._lock:
            self._live()
            if self._handle is not None:
                _native.check(_native.library().lc_loader_seek(self._handle, epoch, batch), "lc_loader_seek", loader=True)
            else:
                self._pure.seek(epoch, batch)

    def segment(self, consumed_batches: Sequence[int]) -> dict:
        """This layout as an elastic-resume segment after each of its `world_size` streams r
        took `consumed_batches[r]` batches of the current epoch.

        To resume epoch e at another world size (or batch size or buffer) with the same T and
        seed, give every new loader the state {"version": 1, "epoch": e, "batch": 0,
        "configuration": new.fingerprint, "cache": <manifest checksum>, "segments": earlier +
        [old.segment(counts)]}, where `earlier` are the segments of the old states (if any).
        The new streams then hand out exactly the windows the old ones had not."""
        return _pure.epoch_segment(self.world_size, self.batch_size, self.shuffle_buffer, self.remainder,
                                   [int(c) * self.batch_size for c in consumed_batches], self.order_fingerprint)

    # -- batches

    def _empty_batch(self) -> Batch:
        B, T, k = self.batch_size, self.context, self.k
        return {"windows": np.empty(B, np.int32), "input_ids": np.empty((B, T), np.int32),
                "labels": np.empty((B, T), np.int32), "target_ids": np.empty((B, T, k), np.int32),
                "target_weights": np.empty((B, T, k), np.float32), "tail_mass": np.empty((B, T), np.float32),
                "entry_counts": np.empty((B, T), np.int32)}

    def _output_arrays(self) -> Batch:
        """Arrays for the next native batch: a set from the pool that nobody else references any
        more (the caller dropped that batch and every view of it), else a new set.

        Fresh large arrays cost page faults on every batch (measured: +40 % CPU per batch at
        B=8, T=1024, k=64), so up to POOL sets are recycled; a set is reused only when its arrays'
        reference counts show that the pool alone holds them, so a batch the caller keeps (or a
        tensor or view made from it) is never overwritten."""
        for arrays in self._pool:
            if all(sys.getrefcount(a) <= self._pool_refs for a in arrays.values()):
                return dict(arrays)
        arrays = self._empty_batch()
        if len(self._pool) < self.POOL:
            self._pool.append(arrays)
            if self._pool_refs == 0:
                self._pool_refs = max(sys.getrefcount(a) for a in arrays.values())  # held by the pool alone
            arrays = dict(arrays)
        return arrays

    def _next_native(self, out: Batch) -> Batch:
        b = _native.lc_batch(out["windows"].ctypes.data, out["input_ids"].ctypes.data, out["labels"].ctypes.data,
                             out["target_ids"].ctypes.data, out["target_weights"].ctypes.data,
                             out["tail_mass"].ctypes.data, out["entry_counts"].ctypes.data, 0, 0, 0)
        _native.check(_native.library().lc_loader_next(self._handle, byref(b)), "lc_loader_next", loader=True)
        out["epoch"], out["index"], out["tokens"] = b.epoch, b.index, b.tokens
        return out

    def next(self) -> Batch:
        """The next batch as a dict of numpy arrays the caller owns (see the class docstring)."""
        with self._lock:
            self._live()
            if self._handle is not None:
                return self._next_native(self._output_arrays())
            return next(self._pure)

    def next_into(self, out: Mapping[str, np.ndarray]) -> Batch:
        """The next batch written into the caller's arrays `out` (the array keys of `next()`,
        C-contiguous, with `next()`'s dtypes and shapes), e.g. a shared-memory slot. Returns a
        dict of those arrays plus epoch, index and tokens. The native backend decodes straight
        into them; the pure one copies its batch in. Raises ValueError for a missing or
        mis-shaped array."""
        want = self._empty_batch()
        for key, a in want.items():
            got = out.get(key)
            if not isinstance(got, np.ndarray) or got.dtype != a.dtype or got.shape != a.shape \
                    or not got.flags.c_contiguous or not got.flags.writeable:
                raise ValueError(f"next_into: out[{key!r}] must be a writeable C-contiguous {a.dtype} array of shape "
                                 f"{a.shape}")
        with self._lock:
            self._live()
            if self._handle is not None:
                return self._next_native({key: out[key] for key in want})
            batch = next(self._pure)
        for key in want:
            np.copyto(out[key], batch[key])
        return {**{key: out[key] for key in want}, "epoch": batch["epoch"], "index": batch["index"],
                "tokens": batch["tokens"]}

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        return self.next()

    def take(self, n: int) -> List[Batch]:
        """The next n batches."""
        return [self.next() for _ in range(int(n))]

    def __repr__(self) -> str:
        return (f"StudentLoader({self.path!r}, backend={self.backend!r}, B={self.batch_size}, T={self.context}, "
                f"k={self.k}, mode={self.mode!r}, rank {self.rank} of {self.world_size})")
