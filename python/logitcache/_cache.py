"""`Cache`: one cache directory read through the native library or the pure-numpy reader.

Both backends give the same arrays (the pure reader is the spec's independent proof; the native
one is the Swift reader the `logitcache` command uses). See `logitcache.Cache`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from ctypes import byref, c_int64, c_void_p
from typing import NamedTuple, Optional, Union

import numpy as np

from . import _native
from . import reader as _reader
from .reader import CacheError

PathLike = Union[str, "os.PathLike[str]"]
BACKENDS = ("auto", "native", "pure")


def native_available() -> bool:
    """Whether the native (Swift) library is installed and usable (ABI version checked).

    False when none is installed (pure-numpy fallback). A library that is present but broken
    raises `_native.NativeLibraryError` here rather than being silently skipped."""
    return _native.library() is not None


def resolve_backend(backend: str) -> str:
    """"native" or "pure" for a requested backend ("auto" takes native when it is installed).

    Raises ValueError for an unknown name and RuntimeError for "native" without the library."""
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if backend == "pure":
        return "pure"
    if _native.library() is None:
        if backend == "native":
            _native.require()
        return "pure"
    return "native"


@dataclasses.dataclass(frozen=True)
class Rows:
    """Teacher targets of n consecutive positions with their top k entries (a prefix read).

    Position i's valid entries are `entry_ids[i, :entry_counts[i]]`, in descending probability;
    the cells past the count hold id -1 and log-prob -inf (so `exp` of them is 0)."""

    input_ids: np.ndarray            # int32 [n]
    next_token_logprobs: np.ndarray  # float32 [n]: exact teacher log-prob of the real next token
    logsumexps: np.ndarray           # float32 [n]: full-vocabulary logsumexp of logits / temperature
    entry_counts: np.ndarray         # int32 [n], each <= k
    entry_ids: np.ndarray            # int32 [n, k], -1 past the count
    entry_logprobs: np.ndarray       # float32 [n, k] nats, -inf past the count

    def __len__(self) -> int:
        return len(self.input_ids)


class Samples(NamedTuple):
    """Sampled entries of n positions as CSR: position i's are `ids[offsets[i]:offsets[i + 1]]`."""

    offsets: np.ndarray  # int64 [n + 1], offsets[0] = 0
    ids: np.ndarray      # int32 [S]
    draws: np.ndarray    # uint32 [S], each >= 1


@dataclasses.dataclass(frozen=True)
class SequenceInfo:
    """One cache sequence: positions [start, start + length) of its document."""

    index: int            # global sequence index
    start: int            # global index of its first position
    length: int           # positions
    document_offset: int  # token offset of its first position inside its document
    document_key: str     # 128-bit document key, 32 lowercase hex digits (high word first)


def _owned(a: np.ndarray, dtype) -> np.ndarray:
    """`a` as a C-contiguous, writeable array owning its data (copied only when needed)."""
    return np.require(a, dtype=dtype, requirements=["C", "W", "O"])


class Cache(_native.Resource):
    """A cache directory, opened and checked (manifest and every shard footer).

    `tokenizer_fingerprint`, when given, refuses a cache of another tokenizer. `backend`:
    "native" (the Swift reader through the C ABI), "pure" (the numpy reader), or "auto"
    (native when installed). Not thread-safe beyond a lock around each call; open one `Cache`
    per thread for parallel reads. Close it (or use `with`) to unmap its shards.

        with Cache("cache/") as c:
            rows = c.read(0, 1024, k=8)    # Rows: [1024] and [1024, 8] arrays

    `path` may also be an fsspec URL (`s3://`, `gs://`, `http(s)://`, `file://`; needs the
    `[remote]` extra), with `remote` the options of `logitcache.remote.ShardStore` (local_dir,
    max_bytes, prefetch, retries, timeout, storage_options). Shards land in a local directory
    and are verified against the manifest before use. Opening reads only the shards' footers (range
    requests); a shard is fetched when a read first touches it, and the next `prefetch` shards
    follow in the background. `path` is then that local directory.

    Raises CacheError naming the file (and block and chunk) for a damaged or foreign cache.
    """

    def __init__(self, path: PathLike, tokenizer_fingerprint: Optional[str] = None, backend: str = "auto",
                 remote: Optional[dict] = None):
        self.path: str = os.fspath(path)
        self.backend: str = resolve_backend(backend)
        self._lock = threading.Lock()
        self._handle: Optional[c_void_p] = None
        self._reader: Optional[_reader.Cache] = None
        self.url: Optional[str] = None
        self._source = None  # remote.NativeShardSource of a native cache at a URL
        lazy = None
        if "://" in self.path:
            from . import remote as _remote  # fsspec is an optional extra
            if _remote.is_url(self.path):
                self.url = self.path
                if self.backend == "native":
                    self._source = _remote.NativeShardSource(_remote.ShardStore(self.url, **(remote or {}))).retain()
                    self.path = self._source.store.directory
                else:
                    lazy = _remote.open_cache(self.url, lazy=True, **(remote or {}))
                    self.path = lazy.store.directory
        elif remote:
            raise TypeError(f"remote options apply to URLs only, not to the local path {self.path!r}")
        if self.backend == "native":
            lib = _native.require()
            handle = c_void_p()
            fp = tokenizer_fingerprint.encode() if tokenizer_fingerprint is not None else None
            where = _native.encode_path(self.path)
            if self._source is None:
                status = lib.lc_cache_open(where, fp, byref(handle))
            else:
                source = self._source
                status = lib.lc_cache_open_source(where, fp, byref(source.struct), source.open_shards(), byref(handle))
            if status != _native.OK and self._source is not None:
                self._source.drop()
                self._source = None
            _native.check(status, "lc_cache_open")
            self._handle = handle
            try:
                self.manifest: dict = json.loads(_native.call_string(lib.lc_cache_manifest, "lc_cache_manifest", handle))
                info = _native.lc_cache_info()
                _native.check(lib.lc_cache_info_get(handle, byref(info)), "lc_cache_info_get")
            except BaseException:
                self.close()
                raise
            self.tokens: int = info.tokens
            self.sequences: int = info.sequences
            self.vocabulary_size: int = info.vocabulary_size
            self.max_entries: int = info.max_entries
            self.max_samples: int = info.max_samples
        else:
            r = lazy if lazy is not None else _reader.Cache(self.path)
            self._reader = r
            m = r.manifest
            if tokenizer_fingerprint is not None and m["fingerprints"]["tokenizer"] != tokenizer_fingerprint:
                r.close()
                raise CacheError(f"{os.path.join(r.directory, r.manifest_name)}: tokenizer fingerprint "
                                 f"{m['fingerprints']['tokenizer']} differs from the expected {tokenizer_fingerprint}")
            self.manifest = m
            self.tokens = r.tokens
            self.sequences = r.sequences
            self.vocabulary_size = r.vocabulary_size
            # As the Swift reader: K is the capture's k; maxSamples the first shard's (all agree).
            self.max_entries = int(m["capture"]["k"])
            self.max_samples = r.shards[0].max_samples if r.shards else int(m["capture"].get("samples", 0))

    # -- lifetime

    def close(self) -> None:
        """Releases the cache (idempotent); later reads raise CacheError."""
        with self._lock:
            if self._handle is not None:
                _native.library().lc_cache_close(self._handle)
                self._handle = None
            if self._source is not None:
                self._source.drop()
                self._source = None
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def __repr__(self) -> str:
        return (f"Cache({self.path!r}, backend={self.backend!r}: {self.tokens} tokens, {self.sequences} sequences, "
                f"V={self.vocabulary_size}, K={self.max_entries})")

    def _live(self):
        if self._handle is None and self._reader is None:
            raise CacheError(f"{self.path}: the cache is closed")

    # -- metadata

    @property
    def capture(self) -> dict:
        """The manifest's capture settings (policy, k, topP, samples, temperature, seed)."""
        return self.manifest["capture"]

    def sequence(self, index: int) -> SequenceInfo:
        """Sequence `index` (0 <= index < sequences); IndexError outside."""
        index = int(index)
        if not 0 <= index < self.sequences:
            raise IndexError(f"sequence {index} outside [0, {self.sequences})")
        with self._lock:
            self._live()
            if self._handle is not None:
                q = _native.lc_sequence_info()
                _native.check(_native.library().lc_cache_sequence(self._handle, index, byref(q)), "lc_cache_sequence")
                return SequenceInfo(index, q.first_token, q.length, q.document_offset,
                                    f"{q.document_high:016x}{q.document_low:016x}")
            s = self._reader.sequence_info(index)
            return SequenceInfo(index, s.start, s.length, s.document_offset, s.document_key)

    # -- rows

    def _range(self, start: int, stop: Optional[int]) -> tuple:
        start, stop = int(start), self.tokens if stop is None else int(stop)
        if not 0 <= start <= stop <= self.tokens:
            raise IndexError(f"positions [{start}, {stop}) outside [0, {self.tokens})")
        return start, stop

    def read(self, start: int = 0, stop: Optional[int] = None, k: Optional[int] = None) -> Rows:
        """Positions [start, stop) with their first k <= K entries (k defaults to K).

        Returns `Rows` of n = stop - start positions: [n] and [n, k] arrays (see `Rows`).
        Raises IndexError for a range outside the cache, CacheError for k outside 0...K or a
        damaged chunk (file, block and chunk named)."""
        start, stop = self._range(start, stop)
        k = self.max_entries if k is None else int(k)
        if not 0 <= k <= self.max_entries:
            e = CacheError(f"k = {k} outside 0...K = {self.max_entries}")
            e.status = _native.ERR_UNSUPPORTED
            raise e
        n = stop - start
        with self._lock:
            self._live()
            if self._handle is not None:
                out = Rows(np.empty(n, np.int32), np.empty(n, np.float32), np.empty(n, np.float32),
                           np.empty(n, np.int32), np.empty((n, k), np.int32), np.empty((n, k), np.float32))
                rows = _native.lc_rows(*(getattr(out, f.name).ctypes.data for f in dataclasses.fields(out)))
                _native.check(_native.library().lc_cache_read(self._handle, start, stop, k, byref(rows)), "lc_cache_read")
                return out
            p = self._reader.read_padded(start, stop, k, pad_id=-1)
        return Rows(_owned(p.input_ids, np.int32), _owned(p.next_logprob, np.float32), _owned(p.logsumexp, np.float32),
                    _owned(p.entry_counts, np.int32), _owned(p.entry_ids.reshape(n, k), np.int32),
                    _owned(p.entry_logprobs.reshape(n, k), np.float32))

    def read_samples(self, start: int = 0, stop: Optional[int] = None) -> Samples:
        """Sampled entries (ids and draw counts) of positions [start, stop) as CSR `Samples`;
        empty for every position of a cache without samples."""
        start, stop = self._range(start, stop)
        n = stop - start
        with self._lock:
            self._live()
            if self._handle is not None:
                lib = _native.library()
                capacity = n * self.max_samples
                offsets = np.empty(n + 1, np.int64)
                ids, draws = np.empty(capacity, np.int32), np.empty(capacity, np.uint32)
                needed = c_int64()
                _native.check(lib.lc_cache_read_samples(self._handle, start, stop, offsets.ctypes.data, ids.ctypes.data,
                                                        draws.ctypes.data, capacity, byref(needed)), "lc_cache_read_samples")
                s = needed.value
                return Samples(offsets, ids[:s].copy() if s < capacity else ids, draws[:s].copy() if s < capacity else draws)
            t = self._reader.read(start, stop, 0)
        return Samples(_owned(t.sample_offsets, np.int64), _owned(t.sample_ids, np.int32), _owned(t.sample_draws, np.uint32))

    def verify(self) -> dict:
        """Checks every shard's bytes, chunk checksum and value rule; see `logitcache.verify`.
        A cache at a URL has every shard fetched first (`ShardStore.materialize`)."""
        if self.url is not None:
            store = self._source.store if self._source is not None else getattr(self._reader, "store", None)
            if store is not None:
                store.materialize()
        return verify(self.path, backend=self.backend)


def verify(path: PathLike, backend: str = "auto") -> dict:
    """Checks a cache: every shard's bytes against the manifest, every chunk checksum and every
    value rule. Returns {"sound": bool, "problems": [str], "shardsChecked": int,
    "tokensChecked": int}; a damaged cache is reported there, not raised.

    The native check lists every problem it finds; the pure one stops at the first."""
    path = os.fspath(path)
    if resolve_backend(backend) == "native":
        lib = _native.require()
        return json.loads(_native.call_string(lib.lc_verify, "lc_verify", _native.encode_path(path)))
    try:
        with _reader.Cache(path) as c:
            r = c.verify()
        return {"sound": True, "problems": [], "shardsChecked": r["shards"], "tokensChecked": r["tokens"]}
    except CacheError as e:
        return {"sound": False, "problems": [str(e)], "shardsChecked": 0, "tokensChecked": 0}


def merge(path: PathLike) -> dict:
    """Builds `manifest.json` in `path` from every partition manifest there (no shard data is
    copied) and returns it. Native only. Raises CacheError when the partitions disagree or one
    is missing."""
    lib = _native.require()
    return json.loads(_native.call_string(lib.lc_merge, "lc_merge", _native.encode_path(os.fspath(path))))

