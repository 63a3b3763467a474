"""`CacheWriter`: one partition of a cache written through the Swift writer (native only).

See `logitcache.CacheWriter`.
"""

from __future__ import annotations

import json
import os
import threading
from ctypes import byref, c_void_p
from typing import Mapping, Optional, Tuple, Union

import numpy as np

from . import _native
from ._cache import PathLike
from .reader import CacheError

DocumentKey = Union[bytes, str, int]
M64 = (1 << 64) - 1


def document_key_words(key: DocumentKey) -> Tuple[int, int]:
    """(high, low) 64-bit words of a 128-bit document key given as 16 bytes (big-endian, as its
    hex rendering), 32 hex digits, or an int in [0, 2^128)."""
    if isinstance(key, (bytes, bytearray, memoryview)):
        b = bytes(key)
        if len(b) != 16:
            raise ValueError(f"document key of {len(b)} bytes; it needs 16")
        value = int.from_bytes(b, "big")
    elif isinstance(key, str):
        if len(key) != 32 or any(c not in "0123456789abcdefABCDEF" for c in key):
            raise ValueError(f"document key {key!r} is not 32 hex digits")
        value = int(key, 16)
    elif isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        value = int(key)
        if not 0 <= value < 1 << 128:
            raise ValueError(f"document key {value} outside [0, 2^128)")
    else:
        raise TypeError(f"document key must be 16 bytes, 32 hex digits or an int, not {type(key).__name__}")
    return value >> 64, value & M64


def _int32(name: str, a, shape_n: int, ndim: int) -> np.ndarray:
    """`a` as C-contiguous int32 with ndim dims and n rows; ValueError if values would wrap."""
    x = np.asarray(a)
    if x.ndim != ndim or x.shape[0] != shape_n:
        raise ValueError(f"{name}: shape {x.shape}, expected {'[n]' if ndim == 1 else '[n, width]'} with n = {shape_n}")
    if x.dtype != np.int32:
        if x.dtype.kind not in "iu" and x.size:
            raise ValueError(f"{name}: dtype {x.dtype}, expected integers")
        if x.size and (int(x.min()) < -(1 << 31) or int(x.max()) >= 1 << 31):
            raise ValueError(f"{name}: values outside int32")
    return np.ascontiguousarray(x, dtype=np.int32)


def _float32(name: str, a, shape_n: int, ndim: int) -> np.ndarray:
    x = np.asarray(a)
    if x.ndim != ndim or x.shape[0] != shape_n:
        raise ValueError(f"{name}: shape {x.shape}, expected {'[n]' if ndim == 1 else '[n, width]'} with n = {shape_n}")
    if x.dtype.kind not in "fiu" and x.size:
        raise ValueError(f"{name}: dtype {x.dtype}, expected floats")
    return np.ascontiguousarray(x, dtype=np.float32)


def _prefix_counts(name: str, ids: np.ndarray) -> np.ndarray:
    """[n] count of leading non-negative ids per row; ValueError when an id follows a -1."""
    valid = ids >= 0
    counts = valid.sum(axis=1).astype(np.int32)
    width = ids.shape[1]
    if width and not np.array_equal(valid, np.arange(width)[None, :] < counts[:, None]):
        row = int(np.argmax((valid != (np.arange(width)[None, :] < counts[:, None])).any(axis=1)))
        raise ValueError(f"{name}: row {row} has an id after a -1 (unused slots must come last)")
    return counts


class CacheWriter(_native.Resource):
    """Writes one partition of a cache through the Swift writer (the native library).

    `directory` is created if needed (by the writer, once the description is accepted). `fingerprints` = {"teacher", "tokenizer", "corpus"};
    `capture` = {"policy": "top-k" | "top-p" | "sampled" | "head-tail" | "top-k+sampled", "k",
    "topP" (top-p only), "samples" (draws, sampled policies), "temperature", "seed"} (manifest
    keys; "top_p" is accepted for "topP"). `partition` of `partition_count` writers publish
    independently; `merge(directory)` then builds manifest.json (with one partition, `finish`
    writes it). `codec` "zstd" (`level` 1...19), "lz4" or "none"; `log_probs` None (the format's
    default quantisation), "float32" (lossless) or "quantized" with `step_log2` b and
    `step_multiplier` m (step m * 2^-b nats). `origin` = {"tool", "teacher", "device", "note"}
    (only "tool" required) is recorded in the manifest: who wrote the targets, from what, where.

    Opening resumes a partition an earlier run left unfinished: its published shards are kept
    and `resumed_sequences` says how many sequences they hold; skip that many and go on.

        with CacheWriter("cache/", vocabulary_size=V, fingerprints=fp, capture=cap) as w:
            for i, doc in enumerate(documents):
                if i < w.resumed_sequences:
                    continue
                w.begin_sequence(doc.key, 0)
                w.append(inputs, next_logprobs, lse, entry_ids, entry_logprobs)   # n positions
                w.end_sequence()

    The context manager finishes on a clean exit and only releases the writer (shards already
    published stay, a rerun resumes) when the block raised. Raises CacheError naming the problem
    for a bad description or bad values (ids >= V, log-probs not descending, NaN, ...), and
    RuntimeError when the native library is not installed.
    """

    def __init__(self, directory: PathLike, *, vocabulary_size: int, fingerprints: Mapping[str, str],
                 capture: Mapping[str, object], partition: int = 0, partition_count: int = 1, codec: str = "zstd",
                 level: int = 3, log_probs: Optional[str] = None, step_log2: Optional[int] = None,
                 step_multiplier: Optional[int] = None, block_tokens: int = 8192, target_shard_bytes: int = 256 << 20,
                 origin: Optional[Mapping[str, str]] = None):
        lib = _native.require()
        self.directory: str = os.fspath(directory)
        cap = dict(capture)
        if "top_p" in cap:
            cap["topP"] = cap.pop("top_p")
        description = {"vocabularySize": int(vocabulary_size), "fingerprints": dict(fingerprints), "capture": cap,
                       "partition": int(partition), "partitionCount": int(partition_count), "codec": codec,
                       "blockTokens": int(block_tokens), "targetShardBytes": int(target_shard_bytes)}
        if origin is not None:
            description["origin"] = {key: str(value) for key, value in origin.items() if value is not None}
        if codec == "zstd":
            description["level"] = int(level)
        for key, value in (("logProbs", log_probs), ("stepLog2", step_log2), ("stepMultiplier", step_multiplier)):
            if value is not None:
                description[key] = value
        self.max_entries: int = int(cap.get("k", 0))
        self._lock = threading.Lock()
        self._finished = False
        handle = c_void_p()
        _native.check(lib.lc_writer_open(_native.encode_path(self.directory), json.dumps(description).encode(),
                                         byref(handle)), "lc_writer_open")
        self._handle: Optional[c_void_p] = handle
        self.resumed_sequences: int = int(lib.lc_writer_resumed_sequences(handle))

    def _live(self) -> c_void_p:
        if self._handle is None:
            raise CacheError(f"{self.directory}: the writer is closed")
        return self._handle

    def begin_sequence(self, document_key: DocumentKey, document_offset: int = 0) -> None:
        """Opens a sequence: the positions from token `document_offset` of the document whose
        128-bit key is `document_key` (16 bytes, 32 hex digits or an int < 2^128)."""
        high, low = document_key_words(document_key)
        with self._lock:
            _native.check(_native.library().lc_writer_begin_sequence(self._live(), high, low, int(document_offset)),
                          "lc_writer_begin_sequence")

    def append(self, input_ids, next_token_logprobs, logsumexps, entry_ids=None, entry_logprobs=None,
               entry_counts=None, sample_ids=None, sample_draws=None, sample_counts=None) -> None:
        """Appends n positions to the open sequence.

        input_ids [n] int, next_token_logprobs [n] (exact log-prob of the real next token),
        logsumexps [n] (full-vocabulary logsumexp of logits / temperature); entry_ids and
        entry_logprobs [n, K'] (K' <= K) in descending probability, the first entry_counts[i]
        of row i used (without entry_counts: the ids before the first -1); for sampled
        policies sample_ids and sample_draws [n, S'] with sample_counts (or -1 ids) likewise.
        If a position is refused (CacheError), the positions before it were appended."""
        x = np.asarray(input_ids)
        if x.ndim != 1:
            raise ValueError(f"input_ids: shape {x.shape}, expected [n]")
        n = len(x)
        x = _int32("input_ids", x, n, 1)
        nx = _float32("next_token_logprobs", next_token_logprobs, n, 1)
        lse = _float32("logsumexps", logsumexps, n, 1)
        if entry_ids is None:
            if entry_logprobs is not None:
                raise ValueError("entry_logprobs without entry_ids")
            ids, lps = np.full((n, 0), -1, np.int32), np.zeros((n, 0), np.float32)
        else:
            ids = _int32("entry_ids", entry_ids, n, 2)
            if entry_logprobs is None:
                raise ValueError("entry_ids without entry_logprobs")
            lps = _float32("entry_logprobs", entry_logprobs, n, 2)
            if lps.shape != ids.shape:
                raise ValueError(f"entry_logprobs: shape {lps.shape}, entry_ids {ids.shape}")
        counts = _prefix_counts("entry_ids", ids) if entry_counts is None else _int32("entry_counts", entry_counts, n, 1)
        samples = sample_ids is not None or sample_draws is not None or sample_counts is not None
        if samples:
            if sample_ids is None or sample_draws is None:
                raise ValueError("sample_ids and sample_draws go together")
            sids = _int32("sample_ids", sample_ids, n, 2)
            sd = np.asarray(sample_draws)
            if sd.shape != sids.shape:
                raise ValueError(f"sample_draws: shape {sd.shape}, sample_ids {sids.shape}")
            if sd.size and (sd.dtype.kind not in "iu" or int(sd.min()) < 0 or int(sd.max()) >= 1 << 32):
                raise ValueError("sample_draws: values must be integers in [0, 2^32)")
            sd = np.ascontiguousarray(sd, dtype=np.uint32)
            scounts = _prefix_counts("sample_ids", sids) if sample_counts is None else _int32("sample_counts", sample_counts, n, 1)
            s_args = (scounts.ctypes.data, sids.ctypes.data, sd.ctypes.data, sids.shape[1])
        else:
            s_args = (None, None, None, 0)
        with self._lock:
            status = _native.library().lc_writer_append(
                self._live(), n, x.ctypes.data, nx.ctypes.data, lse.ctypes.data, counts.ctypes.data,
                ids.ctypes.data, lps.ctypes.data, ids.shape[1], *s_args)
            _native.check(status, "lc_writer_append")

    def end_sequence(self) -> None:
        """Closes the open sequence."""
        with self._lock:
            _native.check(_native.library().lc_writer_end_sequence(self._live()), "lc_writer_end_sequence")

    def add_cost(self, tokens: int, flops: float, seconds: float) -> None:
        """Adds to the teacher cost the manifest records (positions, FLOPs, wall seconds)."""
        with self._lock:
            _native.check(_native.library().lc_writer_add_cost(self._live(), int(tokens), float(flops), float(seconds)),
                          "lc_writer_add_cost")

    def finish(self) -> dict:
        """Publishes the last shard and the partition manifest (with one partition, also
        manifest.json) and returns the partition manifest. The writer is closed afterwards."""
        with self._lock:
            lib = _native.library()
            text = _native.call_string(lib.lc_writer_finish, "lc_writer_finish", self._live())
            self._finished = True
        self.close()
        return json.loads(text)

    def close(self) -> None:
        """Releases the writer (idempotent). Without `finish`, the shards already published stay
        and a writer opened on the same partition resumes after them."""
        with self._lock:
            if self._handle is not None:
                _native.library().lc_writer_close(self._handle)
                self._handle = None

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and self._handle is not None and not self._finished:
            self.finish()
        else:
            self.close()
