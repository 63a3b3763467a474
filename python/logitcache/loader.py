"""Student batches from a LogitCache cache: the Swift `StudentLoader`'s batches, in numpy.

The order is `EpochOrder` of Sources/StudentLoader/EpochPlan.swift, a pure function of the
manifest, seed, epoch, rank, world size, shuffle buffer and remainder policy; targets are
`TargetConverter` of Sources/StudentLoader/TargetRows.swift. Windows, input ids, labels,
target ids and counts equal the Swift loader's exactly; weights and tail mass agree to float32
rounding (numpy's float32 exp and libm's expf may differ in the last bit). A `state()` is the
Swift `LoaderState` as a dict, so either loader resumes where the other stopped, also after a
change of world size (elastic resume: a state with "segments", see `seen_windows`).

This is the pure-numpy backend of `logitcache.StudentLoader`; use that class, which picks the
native (Swift) loader when the library is installed.

    loader = StudentLoader("cache/", batch_size=8, context=1024, k=32, mode="tail", seed=1)
    for batch in loader.take(100):
        batch["input_ids"], batch["labels"], batch["target_ids"], batch["target_weights"], ...
    saved = loader.state()          # later: loader.resume(saved)

`TorchBatches` wraps it as a PyTorch `IterableDataset` (torch is imported when it is first used).
"""

import math
import os
import struct
from typing import Iterator, Optional

import numpy as np

from ._splitmix import INCREMENT, M64, SplitMix64
from .reader import Cache

MODES = ("renormalized", "tail", "sampled")


class LoaderError(ValueError):
    """A configuration, cache or resume state the loader cannot serve (message names which)."""


INT64_MAX = (1 << 63) - 1
TEMPERATURE_RANGE = (1e-3, 1e3)  # `LoaderConfiguration.temperatureRange`: outside it p^(1/tau) leaves float range


def physical_memory_bytes() -> int:
    """This machine's physical memory (`physicalMemoryBytes` in Swift: sysconf, 1 TiB if unknown)."""
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 40
    return pages * size if pages > 0 and size > 0 else 1 << 40


def _swift_double(x: float) -> str:
    """`x` as Swift's `description` of a Double prints it in these messages (1000.0, 0.001, 1e-05, inf)."""
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return repr(float(x))


def _mix(a: int, b: int) -> int:
    return SplitMix64(a ^ ((b * INCREMENT) & M64)).next()


def permutation_seed(seed: int, epoch: int) -> int:
    return _mix(_mix(seed, epoch & M64), 0x5045524D)


def buffer_seed(seed: int, epoch: int, rank: int) -> int:
    return _mix(_mix(seed, epoch & M64), (0x42554600 + rank) & M64)


def fnv1a(data: bytes) -> int:
    """FNV-1a 64, as `fnv1a` in Sources/StudentLoader/LoaderConfiguration.swift."""
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & M64
    return h


def window_table(cache: Cache, context: int):
    """(windows int64 [W, 3] of (first token, length, sequence end), unit_starts [U + 1]).

    Sequences cut in cache order into windows of `context` tokens; a unit is the run of windows
    whose first tokens lie in one block of one shard (`WindowTable` in Swift)."""
    block = max(1, int(cache.manifest["encoding"]["blockTokens"]))
    starts = cache.shard_token_starts
    windows, units, last, shard = [], [], None, 0
    for i in range(cache.sequences):
        info = cache.sequence_info(i)
        end = info.start + info.length
        t = info.start
        while t < end:
            while shard + 1 < len(starts) - 1 and starts[shard + 1] <= t:
                shard += 1
            key = (shard, (t - int(starts[shard])) // block)
            if key != last:
                units.append(len(windows))
                last = key
            windows.append((t, min(context, end - t), end))
            t += context
    units.append(len(windows))
    return np.array(windows, dtype=np.int64).reshape(-1, 3), units


def _permutation(units: int, seed: int, epoch: int) -> list:
    """Units in epoch `epoch`'s permuted order (Fisher-Yates, `EpochOrder.permutation`)."""
    perm = list(range(units))
    rng = SplitMix64(permutation_seed(seed, epoch))
    for i in range(units - 1, 0, -1):
        j = rng.next() % (i + 1)
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def epoch_order(unit_starts, seed, epoch, rank, world, buffer, batch, remainder="pad", seen=None) -> list:
    """Window indices of one rank's epoch, -1 for padding, a multiple of `batch` long
    (`EpochOrder.windows` in Swift: units permuted, dealt to ranks, then a shuffle buffer).

    `seen` (bool [windows], from `seen_windows`) marks windows earlier layouts of the epoch
    handed out (elastic resume): units with no unseen window drop out before dealing, seen
    windows are skipped, and the remainder rule counts unseen windows only. None = nothing seen."""
    starts = np.asarray(unit_starts, dtype=np.int64)
    U = len(starts) - 1
    live = _permutation(U, seed, epoch)
    if seen is None:
        unseen_in = np.diff(starts)
    else:
        unseen = ~np.asarray(seen, dtype=bool)
        unseen_in = np.add.reduceat(unseen.astype(np.int64), starts[:-1]) if U else np.zeros(0, np.int64)
        live = [u for u in live if unseen_in[u] > 0]
    counts = [0] * world
    for p, u in enumerate(live):
        counts[p % world] += int(unseen_in[u])
    out, buf = [], []
    brng = SplitMix64(buffer_seed(seed, epoch, rank))
    for p in range(rank, len(live), world):
        u = live[p]
        for w in range(int(starts[u]), int(starts[u + 1])):
            if seen is not None and not unseen[w]:
                continue
            if len(buf) < buffer:
                buf.append(w)
                continue
            j = brng.next() % buffer
            out.append(buf[j])
            buf[j] = w
    while buf:
        j = brng.next() % len(buf)
        out.append(buf[j])
        buf[j] = buf[-1]
        buf.pop()
    if remainder == "pad":
        total = -(-max(counts) // batch) * batch
        out += [-1] * (total - len(out))
    else:
        out = out[:min(counts) // batch * batch]
    return out


SEGMENT_KEYS = ("worldSize", "batchSize", "shuffleBuffer", "remainder", "consumed", "order")


def epoch_segment(world_size: int, batch_size: int, shuffle_buffer: int, remainder: str, consumed, order: str) -> dict:
    """One earlier layout of an epoch (Swift `EpochSegment`) as a JSON-ready dict: `consumed`
    [world_size] windows (padding included, whole batches times B) each stream had taken."""
    return {"worldSize": int(world_size), "batchSize": int(batch_size), "shuffleBuffer": int(shuffle_buffer),
            "remainder": remainder, "consumed": [int(c) for c in consumed], "order": order}


def _check_segment(i: int, g) -> None:
    """Decoding checks of one segment (the Swift `Codable` shape), as LoaderError."""
    def bad(what):
        raise LoaderError(f"resume state: segment {i}: {what}")
    if not isinstance(g, dict):
        bad("not an object")
    for key in SEGMENT_KEYS:
        if key not in g:
            bad(f"missing key {key!r}")
    for key in ("worldSize", "batchSize", "shuffleBuffer"):
        if isinstance(g[key], bool) or not isinstance(g[key], int):
            bad(f"{key} must be an integer")
    if g["remainder"] not in ("pad", "drop"):
        bad(f"remainder {g['remainder']!r} is not pad or drop")
    if not isinstance(g["consumed"], list) or any(isinstance(c, bool) or not isinstance(c, int) for c in g["consumed"]):
        bad("consumed must be a list of integers")
    if not isinstance(g["order"], str):
        bad("order must be a string")


def seen_windows(unit_starts, seed: int, epoch: int, segments) -> np.ndarray:
    """bool [windows]: whether a window was handed out by `segments`, the earlier layouts of
    the epoch (`EpochOrder.seen` in Swift). Segment i's streams take their orders over what the
    segments before i left, and each stream's first `consumed[r]` windows become seen.
    Raises LoaderError for a segment that is not a valid layout or claims more than its stream had."""
    windows = int(unit_starts[-1]) if len(unit_starts) else 0
    seen = np.zeros(windows, dtype=bool)
    for i, g in enumerate(segments):
        _check_segment(i, g)
        n, B, S, consumed = g["worldSize"], g["batchSize"], g["shuffleBuffer"], g["consumed"]
        if not (1 <= n <= 1 << 20 and len(consumed) == n and B >= 1 and S >= 1):
            raise LoaderError(f"resume state: segment {i}: world size {n} with {len(consumed)} consumed counts, "
                              f"batch {B}, buffer {S}")
        nxt = seen.copy()
        for r in range(n):
            o = epoch_order(unit_starts, seed, epoch, r, n, S, B, g["remainder"], seen=None if i == 0 else seen)
            if not 0 <= consumed[r] <= len(o):
                raise LoaderError(f"resume state: segment {i}: rank {r} consumed {consumed[r]} windows of its {len(o)}")
            taken = np.asarray(o[:consumed[r]], dtype=np.int64)
            nxt[taken[taken >= 0]] = True
        seen = nxt
    return seen


def configuration_fingerprint(batch_size: int, context: int, k: int, mode: str, temperature: float, seed: int, rank: int,
                              world_size: int, shuffle_buffer: int, remainder: str) -> str:
    """`LoaderConfiguration.fingerprint`: FNV-1a of the fields that fix the batches, 16 hex digits."""
    bits = struct.unpack("<Q", struct.pack("<d", float(temperature)))[0]
    s = (f"{batch_size}|{context}|{k}|{mode}|{bits}|{seed}|{rank}|"
         f"{world_size}|{shuffle_buffer}|{remainder}")
    return f"{fnv1a(s.encode()):016x}"


def order_fingerprint(context: int, seed: int) -> str:
    """`LoaderConfiguration.orderFingerprint`: FNV-1a of the fields an elastic resume keeps (T, seed)."""
    return f"{fnv1a(f'{context}|{seed}'.encode()):016x}"


def token_targets(cache: Cache, lo: int, hi: int, k: int, mode: str, temperature: float):
    """Targets of global tokens [lo, hi): (input ids int32 [n], ids int32 [n, k],
    weights float32 [n, k], tail float32 [n], counts int32 [n]); see `TargetMode` in Swift."""
    n = hi - lo
    if mode == "sampled":
        rows = cache.read(lo, hi, 0)
        off = rows.sample_offsets
        counts = np.diff(off).astype(np.int32)
        draws = rows.sample_draws.astype(np.uint64)
        row = np.repeat(np.arange(n), counts)
        slot = np.arange(len(draws)) - np.repeat(off[:-1], counts)
        total = np.zeros(n, np.uint64)
        np.add.at(total, row, draws)
        ids = np.full((n, k), -1, np.int32)
        weights = np.zeros((n, k), np.float32)
        ids[row, slot] = rows.sample_ids.astype(np.int32)
        weights[row, slot] = (draws.astype(np.float64) / total[row].astype(np.float64)).astype(np.float32)
        return rows.input_ids.astype(np.int32), ids, weights, np.zeros(n, np.float32), counts
    p = cache.read_padded(lo, hi, k, pad_id=-1)
    counts = p.entry_counts.astype(np.int32)
    lp = p.entry_logprobs.reshape(n, k)
    ids = np.array(p.entry_ids.reshape(n, k), np.int32)
    has = counts > 0
    valid = np.arange(k)[None, :] < counts[:, None]
    tail = np.zeros(n, np.float32)
    if k == 0:
        weights = np.zeros((n, 0), np.float32)
        if mode == "tail":
            tail[:] = 1
        return p.input_ids.astype(np.int32), ids, weights, tail, counts
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if mode == "renormalized":
            # float32 throughout like Swift's expf; shifted by the top log-prob, summed in double.
            a = np.float32(1.0 / temperature)
            e = np.where(valid, np.exp((lp - lp[:, :1]) * a), np.float32(0)).astype(np.float32)
            inv = (1.0 / np.where(has, e.astype(np.float64).sum(axis=1), 1.0)).astype(np.float32)
            weights = e * inv[:, None]
        elif temperature == 1:
            weights = np.where(valid, np.exp(lp), np.float32(0)).astype(np.float32)
            tail = np.maximum(0.0, 1.0 - weights.astype(np.float64).sum(axis=1)).astype(np.float32)
        else:
            # Head and the tail estimate (uncovered mass m spread as m / p_min ids of p_min)
            # tempered together in double, everything scaled by exp(-l_0 / tau).
            l64 = lp.astype(np.float64)
            it = 1.0 / temperature
            m = np.where(has, l64[:, 0], 0.0) * it
            head = np.where(valid, np.exp(l64), 0.0).sum(axis=1)
            e = np.where(valid, np.exp(l64 * it - m[:, None]), 0.0)
            last = l64[np.arange(n), np.maximum(counts - 1, 0)]
            tail_t = np.maximum(0.0, 1.0 - head) * np.exp(last * (it - 1) - m)
            z = np.where(has, e.sum(axis=1) + tail_t, 1.0)
            weights = (e.astype(np.float32).astype(np.float64) / z[:, None]).astype(np.float32)
            tail = (tail_t / z).astype(np.float32)
    weights[~has] = 0
    if mode == "tail":
        tail[~has] = 1
    return p.input_ids.astype(np.int32), ids, weights, tail, counts


class StudentLoader:
    """Shuffled, resumable, rank-partitioned batches of one cache, as the Swift loader yields.

    Each batch is a dict: `epoch`, `index` (this rank's batch in the epoch), `windows` [B]
    (-1 for a padding window), `input_ids`, `labels`, `tail_mass`, `entry_counts` [B, T],
    `target_ids`, `target_weights` [B, T, k], `tokens` (real tokens). Epochs follow each other
    without end. Each block is decoded once per epoch when its first window is needed; its other
    windows wait until their turn, so memory is bounded by the shuffle buffer, not the cache.

    Raises `LoaderError` for a bad configuration, another tokenizer's cache (`student` =
    (tokenizer fingerprint, vocabulary size)), k above the cache's K, a sampled mode without
    samples or on a head-tail cache, a temperature the cache cannot serve, a rank left without a
    batch, or a resume state of another configuration or cache; `reader.CacheError` names the
    shard and chunk of a damaged cache.
    """

    def __init__(self, cache, batch_size: int, context: int, k: int, mode: str = "renormalized",
                 temperature: float = 1.0, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle_buffer: int = 64, remainder: str = "pad", student: Optional[tuple] = None,
                 decode_threads: int = 1, prefetch_blocks: int = 4):
        self.batch_size, self.context, self.k, self.mode = int(batch_size), int(context), int(k), mode
        self.temperature, self.seed = float(temperature), int(seed)
        self.rank, self.world_size, self.shuffle_buffer, self.remainder = int(rank), int(world_size), int(shuffle_buffer), remainder
        self._validate(decode_threads, prefetch_blocks)  # before the cache is opened, as in Swift
        self.cache = cache if isinstance(cache, Cache) else Cache(str(cache))
        c, where = self.cache, self.cache.directory
        if student is not None:
            fp, vocab = student
            have = c.manifest["fingerprints"]["tokenizer"]
            if have != fp:
                raise LoaderError(f"{where}: cache tokenizer fingerprint {have} differs from the student's {fp}; "
                                  "refusing targets of another tokenizer")
            if c.vocabulary_size != vocab:
                raise LoaderError(f"{where}: cache vocabulary size {c.vocabulary_size} differs from the student's {vocab}")
        capture = c.manifest["capture"]
        # As the Swift reader: the first shard's maxSamples (all shards agree), else the manifest's.
        max_samples = c.shards[0].max_samples if c.shards else int(capture.get("samples", 0))
        max_entries = int(capture["k"])
        if mode == "sampled":
            if max_samples == 0:
                raise LoaderError(f"{where}: sampled targets asked for, but the cache stores no samples")
            if capture.get("policy") == "head-tail":
                raise LoaderError(f"{where}: a head-tail cache draws its samples from the mass outside the head; the "
                                  "sampled estimator needs draws from the whole distribution (capture with --policy "
                                  "sampled or top-k+sampled)")
            if self.k < max_samples:
                raise LoaderError(f"{where}: k = {self.k} slots cannot hold up to {max_samples} sampled ids per token; "
                                  f"use k >= {max_samples}")
        elif self.k > max_entries:
            raise LoaderError(f"{where}: k = {self.k} exceeds the cache's K = {max_entries}")
        captured = float(capture.get("temperature", 1.0))
        if self.temperature != captured and (captured != 1 or mode == "sampled"):
            why = ("sampled draws were taken at the capture temperature" if mode == "sampled" else
                   "the logits are gone, so stored log-probs cannot be re-tempered exactly")
            raise LoaderError(f"{where}: temperature {self.temperature!r} differs from the capture temperature "
                              f"{captured!r} ({why}); use temperature {captured!r}")
        # Stored log-probs are at the capture temperature; re-tempering applies to a tau_c = 1 cache only.
        self._target_temperature = self.temperature if captured == 1 else 1.0
        self.windows, self.unit_starts = window_table(c, self.context)
        self.unit_of = np.repeat(np.arange(len(self.unit_starts) - 1), np.diff(self.unit_starts))
        self.cache_id = c.manifest["checksum"]
        self.seek(0, 0)
        if not self._order:
            raise LoaderError(f"{where}: {len(self.windows)} windows of {self.context} tokens give rank {self.rank} "
                              f"of {self.world_size} no batch of {self.batch_size}")

    def _validate(self, decode_threads: int = 1, prefetch_blocks: int = 4):
        """`LoaderConfiguration.validate()` of Sources/StudentLoader/LoaderConfiguration.swift: the
        same bounds in the same order, with the same messages (decode threads and prefetch blocks
        are checked though this loader decodes in the calling thread)."""
        def need(ok, what):
            if not ok:
                raise LoaderError(f"loader configuration: {what}")
        B, T, k, S = self.batch_size, self.context, self.k, self.shuffle_buffer
        need(1 <= B <= 1 << 20, f"batch size {B} must be in 1...1048576")
        need(1 <= T <= 1 << 24, f"context length {T} must be in 1...16777216")
        need(0 <= k <= 65535, f"k {k} must be in 0...65535")
        lo, hi = TEMPERATURE_RANGE
        need(math.isfinite(self.temperature) and lo <= self.temperature <= hi,
             f"temperature {_swift_double(self.temperature)} must be in {_swift_double(lo)}...{_swift_double(hi)} "
             "(outside it the targets leave float range)")
        need(1 <= self.world_size <= 1 << 20 and 0 <= self.rank < self.world_size,
             f"rank {self.rank} must lie in 0..<world size {self.world_size}, world size in 1...1048576")
        need(1 <= S <= 1 << 24, f"shuffle buffer {S} must be in 1...16777216")
        need(1 <= int(decode_threads) <= 1024 and 1 <= int(prefetch_blocks) <= 4096,
             "decode threads must be in 1...1024 and prefetch blocks in 1...4096")
        # Windows held at once: the batch and the shuffle buffer, T * (8k + 16) bytes each.
        rows = (B + S) * T
        size = rows * (8 * k + 16)
        limit = physical_memory_bytes() // 2
        overflow = rows > INT64_MAX or size > INT64_MAX
        need(not overflow and size <= limit,
             f"batch {B} and shuffle buffer {S} windows of {T} tokens with k = {k} need "
             f"{'more than 2^63' if overflow else f'{size >> 20} MiB of'} rows, above half this machine's memory "
             f"({limit >> 20} MiB)")
        need(self.mode in MODES, f"mode {self.mode!r} is not one of {', '.join(MODES)}")
        need(0 <= self.seed < 1 << 64, f"seed {self.seed} must lie in 0..<2^64")
        need(self.remainder in ("pad", "drop"), f"remainder {self.remainder!r} is not pad or drop")

    @property
    def fingerprint(self) -> str:
        """`LoaderConfiguration.fingerprint`: FNV-1a of the fields that fix the batches."""
        return configuration_fingerprint(self.batch_size, self.context, self.k, self.mode, self.temperature, self.seed,
                                         self.rank, self.world_size, self.shuffle_buffer, self.remainder)

    @property
    def order_fingerprint(self) -> str:
        """`LoaderConfiguration.orderFingerprint`: what every layout of an elastic resume shares."""
        return order_fingerprint(self.context, self.seed)

    def epoch_order(self, epoch: int, seen=None) -> list:
        return epoch_order(self.unit_starts, self.seed, epoch, self.rank, self.world_size, self.shuffle_buffer,
                           self.batch_size, self.remainder, seen)

    @property
    def batches_in_epoch(self) -> int:
        return len(self._order) // self.batch_size

    def state(self) -> dict:
        """The position of the next batch, the Swift `LoaderState` as a dict (JSON-ready)."""
        out = {"version": 1, "epoch": self.epoch, "batch": self.batch_index,
               "configuration": self.fingerprint, "cache": self.cache_id}
        if self._segments:
            out["segments"] = [dict(g) for g in self._segments]
        return out

    def segment(self, consumed_batches) -> dict:
        """This layout as an `EpochSegment` after stream r took `consumed_batches[r]` batches of
        the current epoch (one count per rank of this world size); see `resume`."""
        if len(consumed_batches) != self.world_size:
            raise LoaderError(f"resume state: {len(consumed_batches)} consumed counts for world size {self.world_size}")
        return epoch_segment(self.world_size, self.batch_size, self.shuffle_buffer, self.remainder,
                             [int(c) * self.batch_size for c in consumed_batches], self.order_fingerprint)

    def resume(self, state: dict):
        """Continues exactly where `state` (from this loader or the Swift one) was taken.

        A state with "segments" resumes an epoch begun under other layouts (elastic resume, e.g.
        another world size): this loader's order then holds only the windows those layouts did
        not hand out, and "batch" counts from the resume."""
        if not isinstance(state, dict) or state.get("version") != 1:
            raise LoaderError(f"resume state: version {state.get('version') if isinstance(state, dict) else None} is not 1")
        if state.get("configuration") != self.fingerprint:
            raise LoaderError(f"resume state: made for configuration {state.get('configuration')}, this loader has "
                              f"{self.fingerprint} (batch, T, k, mode, τ, seed, rank, world size, buffer or remainder differ)")
        if state.get("cache") != self.cache_id:
            raise LoaderError(f"resume state: made for cache {state.get('cache')}, this cache is {self.cache_id}")
        for key in ("epoch", "batch"):
            if isinstance(state.get(key), bool) or not isinstance(state.get(key), int):
                raise LoaderError(f"resume state: {key} must be an integer")
        segments = state.get("segments") or []
        if not isinstance(segments, list):
            raise LoaderError("resume state: segments must be a list")
        for i, g in enumerate(segments):
            _check_segment(i, g)
        own = self.order_fingerprint
        for g in segments:
            if g["order"] != own:
                raise LoaderError(f"resume state: a segment was made with order {g['order']} (context length and seed), "
                                  f"this loader has {own}")
        self._seek(state["epoch"], state["batch"], segments)

    def seek(self, epoch: int, batch: int):
        """Moves to batch `batch` of `epoch` (its batch count means the next epoch's start)."""
        self._seek(epoch, batch, [])

    def _seek(self, epoch: int, batch: int, earlier: list):
        if epoch < 0:
            raise LoaderError(f"resume state: epoch {epoch} < 0")
        seen = seen_windows(self.unit_starts, self.seed, epoch, earlier) if earlier else None
        order = self.epoch_order(epoch, seen)
        if not 0 <= batch <= len(order) // self.batch_size:
            raise LoaderError(f"resume state: batch {batch} outside epoch {epoch}'s 0...{len(order) // self.batch_size}")
        self.epoch, self.batch_index, self._order, self._segments = epoch, batch, order, list(earlier)
        self._stream = self._batches(epoch, order, range(batch, len(order) // self.batch_size))

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        if self.batch_index >= self.batches_in_epoch:
            self.seek(self.epoch + 1, 0)
        out = next(self._stream)
        self.batch_index += 1
        return out

    def take(self, n: int) -> list:
        return [next(self) for _ in range(n)]

    def _batches(self, epoch: int, order: list, indices) -> Iterator[dict]:
        """The batches `indices` of an epoch whose order is `order`; decodes only their windows."""
        B, T, k = self.batch_size, self.context, self.k
        jobs = {}  # unit -> windows still needed from it, in need order
        for i in indices:
            for w in order[i * B:(i + 1) * B]:
                if w >= 0:
                    jobs.setdefault(int(self.unit_of[w]), []).append(w)
        held = {}
        for i in indices:
            ws = np.array(order[i * B:(i + 1) * B], np.int32)
            out = {"epoch": epoch, "index": i, "windows": ws, "tokens": 0,
                   "input_ids": np.zeros((B, T), np.int32), "labels": np.full((B, T), -1, np.int32),
                   "target_ids": np.full((B, T, k), -1, np.int32), "target_weights": np.zeros((B, T, k), np.float32),
                   "tail_mass": np.zeros((B, T), np.float32), "entry_counts": np.zeros((B, T), np.int32)}
            for b, w in enumerate(ws):
                if w < 0:
                    continue
                if w not in held:
                    held.update(self._decode(jobs.pop(int(self.unit_of[w]))))
                x, y, ids, wt, tl, c = held.pop(w)
                n = len(x)
                out["tokens"] += n
                out["input_ids"][b, :n], out["labels"][b, :n] = x, y
                out["target_ids"][b, :n], out["target_weights"][b, :n] = ids, wt
                out["tail_mass"][b, :n], out["entry_counts"][b, :n] = tl, c
            yield out

    def _decode(self, ws: list) -> dict:
        """Rows of windows `ws` (one unit) from one read covering them and their last labels."""
        win = self.windows[ws]
        first, length, end = win[:, 0], win[:, 1], win[:, 2]
        lo = int(first.min())
        hi = int(np.where(first + length < end, first + length + 1, first + length).max())
        x, ids, wt, tl, c = token_targets(self.cache, lo, hi, self.k, self.mode, self._target_temperature)
        rows = {}
        for w, a, n, e in zip(ws, first - lo, length, end):
            a, n = int(a), int(n)
            labels = np.full(n, -1, np.int32)
            m = min(n, int(e) - lo - a - 1)  # tokens whose next token is in the sequence
            labels[:m] = x[a + 1:a + 1 + m]
            rows[w] = (x[a:a + n], labels, ids[a:a + n], wt[a:a + n], tl[a:a + n], c[a:a + n])
        return rows


def _torch_batches_class():
    """Builds `TorchBatches` on first use, so importing this module does not import torch."""
    import torch
    import torch.utils.data as _tud

    class TorchBatches(_tud.IterableDataset):
        """A `StudentLoader`'s batches as dicts of tensors: use `DataLoader(ds, batch_size=None)`.

        Yields `count` batches from `state` (or epoch `epoch`'s start). With DataLoader workers,
        worker j builds batches j, j + W, ...; the DataLoader takes workers in turn, so the
        stream is the single-process one whatever the worker count."""

        def __init__(self, cache, count: int, epoch: int = 0, state: Optional[dict] = None, **loader_args):
            super().__init__()
            self.cache, self.count, self.epoch, self.start_state, self.loader_args = cache, count, epoch, state, loader_args

        def __iter__(self):
            info = _tud.get_worker_info()
            wid, W = (info.id, info.num_workers) if info is not None else (0, 1)
            loader = StudentLoader(self.cache, **self.loader_args)
            if self.start_state is not None:
                loader.resume(self.start_state)
            else:
                loader.seek(self.epoch, 0)
            left, i = self.count, 0
            while left > 0:
                e, first = loader.epoch, loader.batch_index
                if first >= loader.batches_in_epoch:
                    loader.seek(e + 1, 0)
                    continue
                mine = [j for j in range(first, min(loader.batches_in_epoch, first + left)) if (i + j - first) % W == wid]
                for b in loader._batches(e, loader._order, mine):
                    yield {key: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for key, v in b.items()}
                taken = min(loader.batches_in_epoch, first + left) - first
                i, left = i + taken, left - taken
                loader._seek(e, first + taken, loader._segments)
    return TorchBatches


def __getattr__(name):
    if name == "TorchBatches":  # needs torch; made when first asked for
        cls = _torch_batches_class()
        globals()["TorchBatches"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
