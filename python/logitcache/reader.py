"""An independent reader of LogitCache caches, written from `Schemas/FORMAT.md` alone.

It exists to prove that the written spec is enough to read a cache that the Swift code wrote:
it shares no code with `Sources/ShardFormat`, and every check the spec asks of a reader is made
here, with an error naming the file, block and chunk. Needs numpy, zstandard, lz4 and xxhash;
jsonschema (optional) adds validation of the manifest and footers against `Schemas/`.

Library use:

    cache = Cache("CACHE")                  # manifest + every shard footer, checked; shards mmapped
    rows = cache.read(0, cache.tokens)       # Tokens: per-token arrays, entries as CSR
    ids, logprobs, counts = rows.padded_entries(k=8)   # [T,8] int32 (-1 pad), float32 (-inf pad)
    seq = cache.sequence(3, k=8)             # (SequenceInfo, Tokens) of one sequence, top-8 only
    cache.verify()                           # whole-file checksums + decode and check every value

CLI: `python -m logitcache.reader CACHE [--verify] [--json] [--dump]`.
Exit status 0 when the cache is sound, 1 with `error: FILE: block B chunk C: what` otherwise.
"""

from __future__ import annotations

import argparse
from importlib import resources
import dataclasses
import json
import math
import mmap
import os
import re
import stat
import struct
import sys
import time
from typing import Any, Iterable, Optional

import numpy as np

try:
    import lz4.block as _lz4_block
except ImportError:  # reported when an lz4 chunk is met
    _lz4_block = None
try:
    import zstandard as _zstd
except ImportError:
    _zstd = None
import xxhash

MAGIC = b"LCSHARD\x1a"
FORMAT_VERSION = 1
FORMAT_MINOR_VERSION = 4  # highest minor revision read: 1 adds the bucket filters (section 6), 2 steps m*2^-b
                          # (section 5), 3 next-token links and entry references (section 4), 4 sample
                          # references (section 4.7)
BUCKET_FILTERS = ("buckets", "delta-buckets")
HEADER_SIZE = 16
TRAILER_SIZE = 40
MAX_VOCABULARY = 1 << 24
QMAX = (1 << 24) - 1
SHARD_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")
CHECKSUM_KEY = b'"checksum": "'


class CacheError(Exception):
    """A cache that breaks the spec; the message names the file (and block/chunk) and what."""


def xxh3(data) -> int:
    return xxhash.xxh3_64_intdigest(data)


def hex64(value: int) -> str:
    return "%016x" % value


# ----------------------------------------------------------------------------------------------
# JSON grammar (FORMAT.md section 7, "Manifest grammar"; footers follow it with no real-valued
# member): UTF-8 without a byte-order mark, RFC 8259 syntax, no member name twice in one object
# (names compared after unescaping), no null, no lone surrogate escapes, at most 32 levels of
# nesting, and every number an integer literal in [-2^63, 2^63) except at the real-valued paths,
# where it is any number whose binary64 value (round to nearest) is finite.

MAX_JSON_DEPTH = 32
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
MANIFEST_REAL_PATHS = frozenset({"capture.temperature", "capture.topP", "teacherCost.flops", "teacherCost.seconds"})


class _Real(float):
    """A number written with a fraction or exponent; `text` is the literal."""
    text = ""


class _BigInt:
    """An integer literal outside [-2^63, 2^63)."""

    def __init__(self, text: str):
        self.text = text


def _json_int(text: str):
    if len(text) > 20:  # "-9223372036854775808" has 20 characters; longer ones are out of range
        return _BigInt(text)
    v = int(text)
    return v if INT64_MIN <= v <= INT64_MAX else _BigInt(text)


def _json_real(text: str) -> _Real:
    r = _Real(float(text))
    r.text = text
    return r


def _json_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")


def _no_duplicates(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateMember(key)
        obj[key] = value
    return obj


class _DuplicateMember(ValueError):
    pass


def _path_name(path: str) -> str:
    return path or "top level"


def _check_json(value: Any, path: str, depth: int, real_paths, where: str):
    """Walks a parsed document: the grammar rules json.loads does not check. Replaces the
    numbers at real-valued paths by plain floats, in place; returns the value to keep."""
    if depth > MAX_JSON_DEPTH:
        raise CacheError(f"{where}: {_path_name(path)}: nested more than {MAX_JSON_DEPTH} levels")
    if isinstance(value, dict):
        for key in list(value):
            _check_string(key, path, where)
            value[key] = _check_json(value[key], key if not path else f"{path}.{key}", depth + 1, real_paths, where)
        return value
    if isinstance(value, list):
        for i, item in enumerate(value):
            value[i] = _check_json(item, f"{path}[{i}]", depth + 1, real_paths, where)
        return value
    if isinstance(value, str):
        _check_string(value, path, where)
        return value
    if value is None:
        raise CacheError(f"{where}: {_path_name(path)}: null is not allowed (leave an optional member out)")
    if isinstance(value, bool):
        return value
    real = path in real_paths
    if isinstance(value, _BigInt):
        if not real:
            raise CacheError(f"{where}: {_path_name(path)}: integer {value.text[:40]} is outside the 64-bit range")
        number = float(value.text)
        if not math.isfinite(number):
            raise CacheError(f"{where}: {_path_name(path)}: {value.text[:40]} is not a finite number")
        return number
    if isinstance(value, _Real):
        if not real:
            raise CacheError(f"{where}: {_path_name(path)}: {value.text[:40]} is not an integer")
        if not math.isfinite(value):
            raise CacheError(f"{where}: {_path_name(path)}: {value.text[:40]} is not a finite number")
        return float(value)  # a literal below the smallest subnormal rounds to 0, as binary64 parsing does
    return value  # an int within int64


def _check_string(s: str, path: str, where: str):
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise CacheError(f"{where}: {_path_name(path)}: a string holds an unpaired surrogate escape") from None


def parse_json(data: bytes, where: str, real_paths=frozenset()) -> Any:
    """Parses `data` under the grammar above; raises CacheError naming `where` and the member."""
    if data.startswith(b"\xef\xbb\xbf"):
        raise CacheError(f"{where}: starts with a UTF-8 byte-order mark")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CacheError(f"{where}: not UTF-8 ({e})") from None
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_int=_json_int, parse_float=_json_real,
                         parse_constant=_json_constant)
    except _DuplicateMember as e:
        raise CacheError(f"{where}: member {e.args[0]!r} appears twice in one object") from None
    except RecursionError:
        raise CacheError(f"{where}: nested more than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, MemoryError) as e:
        raise CacheError(f"{where}: invalid JSON ({type(e).__name__}: {str(e)[:200]})") from None
    return _check_json(doc, "", 0, real_paths, where)


_parse_json = parse_json


# ----------------------------------------------------------------------------------------------
# Typed member access


def _get(obj: Any, key: str, where: str) -> Any:
    if not isinstance(obj, dict):
        raise CacheError(f"{where}: expected an object")
    if key not in obj:
        raise CacheError(f"{where}: missing key {key!r}")
    return obj[key]


def _int(obj: Any, key: str, where: str, lo: int = 0, hi: Optional[int] = None) -> int:
    value = _get(obj, key, where)
    if isinstance(value, bool) or not isinstance(value, int):
        raise CacheError(f"{where}: {key!r} must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        raise CacheError(f"{where}: {key!r} = {value} outside [{lo}, {hi if hi is not None else 'inf'}]")
    return value


def _int_list(obj: Any, key: str, where: str) -> list:
    values = _get(obj, key, where)
    if not isinstance(values, list) or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
        raise CacheError(f"{where}: {key!r} must be a list of non-negative integers")
    return values


def _hex16(obj: Any, key: str, where: str) -> int:
    value = _get(obj, key, where)
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{16}", value):
        raise CacheError(f"{where}: {key!r} must be 16 lowercase hex digits, got {value!r}")
    return int(value, 16)


_schemas: dict = {}


def schema_validate(document: Any, schema_name: str, where: str) -> bool:
    """Validates `document` against `Schemas/<schema_name>`; False when jsonschema is absent."""
    try:
        import jsonschema
    except ImportError:
        return False
    if schema_name not in _schemas:
        schema = json.loads((resources.files("logitcache") / "schemas" / schema_name).read_bytes())
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        _schemas[schema_name] = cls(schema)
    errors = sorted(_schemas[schema_name].iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        path = "/".join(str(p) for p in e.absolute_path) or "(root)"
        raise CacheError(f"{where}: does not match {schema_name} at {path}: {e.message}")
    return True


# ----------------------------------------------------------------------------------------------
# Chunk decoding (section 6)


def decode_values(stored, count: int, width: int, filt: str, codec: str, where: str) -> np.ndarray:
    """Stored chunk bytes -> codec -> filtered bytes (count*width) -> filter -> uint32[count]."""
    if filt in BUCKET_FILTERS:
        return decode_buckets(stored, count, width, filt, codec, where)
    data = _decompress(stored, count * width, codec, where)
    raw = np.frombuffer(data, dtype=np.uint8)
    if filt == "raw":
        if width == 4:
            return raw.view("<u4").astype(np.uint32, copy=False)
        if width == 2:
            return raw.view("<u2").astype(np.uint32)
        if width == 1:
            return raw.astype(np.uint32)
        planes = raw.reshape(count, width).T  # [width, count]: byte p of every value
    elif filt == "planes":
        planes = raw.reshape(width, count)
    else:
        raise CacheError(f"{where}: unknown filter {filt!r}")
    values = planes[0].astype(np.uint32)
    for p in range(1, width):
        values |= planes[p].astype(np.uint32) << np.uint32(8 * p)
    return values


def _bucket_tables():
    """Per bucket symbol s (0..127): value with zero extra bits, number of extra bits, their mask."""
    base, bits, mask = np.zeros(128, np.uint32), np.zeros(128, np.uint32), np.zeros(128, np.uint32)
    for s in range(16, 128):
        top, m = 4 + (s - 16) // 4, (s - 16) % 4
        base[s], bits[s], mask[s] = (4 | m) << (top - 2), top - 2, (1 << (top - 2)) - 1
    base[:16] = np.arange(16)
    return base, bits, mask


_BUCKET_BASE, _BUCKET_BITS, _BUCKET_MASK = _bucket_tables()


def _bucket_symbol(v: int) -> int:
    if v < 16:
        return v
    top = v.bit_length() - 1
    return 16 + 4 * (top - 4) + ((v >> (top - 2)) & 3)


def decode_buckets(stored, count: int, width: int, filt: str, codec: str, where: str) -> np.ndarray:
    """Bucket filters (section 6): u32 S, S coded symbol bytes (the codec applies to these
    only), then the extra bits, least significant first; delta-buckets adds zigzag deltas."""
    stored = bytes(stored)
    if len(stored) < 4:
        raise CacheError(f"{where}: {len(stored)} bytes cannot hold the symbol size")
    S = int.from_bytes(stored[:4], "little")
    if S > len(stored) - 4:
        raise CacheError(f"{where}: symbol section of {S} bytes exceeds the chunk's {len(stored) - 4}")
    sym = np.frombuffer(_decompress(stored[4:4 + S], count, codec, where), dtype=np.uint8)
    bits = stored[4 + S:]
    limit = 127 if width >= 4 or filt == "delta-buckets" else _bucket_symbol((1 << (8 * width)) - 1)
    if count and int(sym.max()) > limit:
        raise CacheError(f"{where}: bucket symbol {int(sym.max())} exceeds {limit} (width {width})")
    nb = _BUCKET_BITS[sym]                        # uint32 [count]
    end = np.cumsum(nb, dtype=np.int64)           # bit offset after each value's extra bits
    total = int(end[-1]) if count else 0
    if (total + 7) // 8 != len(bits):
        raise CacheError(f"{where}: {total} extra bits need {(total + 7) // 8} bytes, chunk has {len(bits)}")
    if total % 8 and bits[-1] >> (total % 8):
        raise CacheError(f"{where}: non-zero padding bits")
    off = end - nb
    # Little-endian 64-bit words starting at every byte of the stream (an overlapping strided
    # view, no copy): one gather per value gives its (off & 7) + 29 <= 36 bits.
    buf = bits + bytes(8)
    words = np.ndarray(shape=(len(buf) - 7,), dtype="<u8", buffer=buf, strides=(1,))
    word = words[off >> 3]
    values = _BUCKET_BASE[sym] | ((word >> (off & 7).astype(np.uint64)).astype(np.uint32) & _BUCKET_MASK[sym])
    if filt == "delta-buckets":
        z = values.astype(np.int64)   # < 2^32
        deltas = np.where(z & 1, -((z + 1) >> 1), z >> 1)   # un-zigzag
        values = np.cumsum(deltas) & 0xFFFFFFFF             # running sum mod 2^32
        if width < 4 and count and int(values.max()) >> (8 * width):
            raise CacheError(f"{where}: value {int(values.max())} does not fit width {width}")
    return values.astype(np.uint32)


def _decompress(stored, n: int, codec: str, where: str) -> bytes:
    """Stored bytes -> codec -> exactly n bytes."""
    if codec == "none":
        if len(stored) != n:
            raise CacheError(f"{where}: codec none but size {len(stored)} != count*width {n}")
        data = stored
    elif codec == "lz4":
        if _lz4_block is None:
            raise CacheError(f"{where}: lz4 chunk but the Python package 'lz4' is not installed")
        if n == 0:
            raise CacheError(f"{where}: an empty chunk must use codec none")
        try:
            data = _lz4_block.decompress(bytes(stored), uncompressed_size=n)
        except Exception as e:  # lz4.block.LZ4BlockError and friends
            raise CacheError(f"{where}: lz4 block does not decompress to {n} bytes ({e})") from None
        if len(data) != n:
            raise CacheError(f"{where}: lz4 block decompressed to {len(data)} bytes, expected {n}")
    elif codec == "zstd":
        if _zstd is None:
            raise CacheError(f"{where}: zstd chunk but the Python package 'zstandard' is not installed")
        if n == 0:
            raise CacheError(f"{where}: an empty chunk must use codec none")
        stored = bytes(stored)
        try:
            params = _zstd.get_frame_parameters(stored)
        except Exception as e:
            raise CacheError(f"{where}: not a zstd frame ({e})") from None
        if params.content_size != n:
            raise CacheError(f"{where}: zstd frame content size {params.content_size}, expected {n}")
        try:
            dobj = _zstd.ZstdDecompressor().decompressobj()
            data = dobj.decompress(stored)
            complete, rest = dobj.eof, dobj.unused_data
        except Exception as e:
            raise CacheError(f"{where}: zstd frame does not decompress ({e})") from None
        if not complete or rest or len(data) != n:
            raise CacheError(f"{where}: zstd data is not exactly one frame of {n} bytes "
                             f"(got {len(data)} bytes, complete={complete}, {len(rest)} trailing bytes)")
    else:
        raise CacheError(f"{where}: unknown codec {codec!r}")
    return data


# ----------------------------------------------------------------------------------------------
# Decoded rows


@dataclasses.dataclass
class Tokens:
    """Per-token teacher targets of a token range, entries and samples as CSR.

    T tokens; position t's entries are `entry_ids[entry_offsets[t]:entry_offsets[t+1]]` in
    descending probability order (ranks 0, 1, ...), likewise its samples.
    """

    input_ids: np.ndarray        # uint32 [T]
    next_logprob: np.ndarray     # float32 [T], nats, exact
    logsumexp: np.ndarray        # float32 [T], exact
    entry_offsets: np.ndarray    # int64 [T+1]
    entry_ids: np.ndarray        # uint32 [E]
    entry_logprobs: np.ndarray   # float32 [E], nats (dequantised when the shard is quantised)
    sample_offsets: np.ndarray   # int64 [T+1] (all zero when the cache has no samples)
    sample_ids: np.ndarray       # uint32 [S]
    sample_draws: np.ndarray     # uint32 [S], each >= 1

    @property
    def tokens(self) -> int:
        return len(self.input_ids)

    @property
    def entry_counts(self) -> np.ndarray:
        return np.diff(self.entry_offsets)

    @property
    def sample_counts(self) -> np.ndarray:
        return np.diff(self.sample_offsets)

    def entries(self, t: int):
        a, b = self.entry_offsets[t], self.entry_offsets[t + 1]
        return self.entry_ids[a:b], self.entry_logprobs[a:b]

    def samples(self, t: int):
        a, b = self.sample_offsets[t], self.sample_offsets[t + 1]
        return self.sample_ids[a:b], self.sample_draws[a:b]

    def padded_entries(self, k: Optional[int] = None, pad_id: int = -1):
        """(ids int32 [T,k], logprobs float32 [T,k], counts int64 [T]); padding is pad_id / -inf.

        k defaults to the largest entry count; positions with more than k entries keep their
        first k (the top-k, since entries are in descending order)."""
        full = self.entry_counts
        if k is None:
            k = int(full.max()) if len(full) else 0
        counts = np.minimum(full, k)
        ids = np.full((self.tokens, k), pad_id, dtype=np.int32)
        lps = np.full((self.tokens, k), -np.inf, dtype=np.float32)
        mask = np.arange(k)[None, :] < counts[:, None]  # row-major cells (t, r < c_t): CSR order
        if int(counts.sum()) == len(self.entry_ids):
            ids[mask], lps[mask] = self.entry_ids, self.entry_logprobs
        else:  # drop ranks >= k
            rank = np.arange(len(self.entry_ids)) - np.repeat(self.entry_offsets[:-1], full)
            keep = rank < k
            ids[mask], lps[mask] = self.entry_ids[keep], self.entry_logprobs[keep]
        return ids, lps, counts

    def slice(self, a: int, b: int) -> "Tokens":
        ea, eb = self.entry_offsets[a], self.entry_offsets[b]
        sa, sb = self.sample_offsets[a], self.sample_offsets[b]
        return Tokens(self.input_ids[a:b], self.next_logprob[a:b], self.logsumexp[a:b],
                      self.entry_offsets[a:b + 1] - ea, self.entry_ids[ea:eb], self.entry_logprobs[ea:eb],
                      self.sample_offsets[a:b + 1] - sa, self.sample_ids[sa:sb], self.sample_draws[sa:sb])

    @staticmethod
    def concat(parts: list) -> "Tokens":
        if not parts:
            return Tokens.empty()
        if len(parts) == 1:
            return parts[0]

        def offsets(key):
            pieces, base = [np.zeros(1, np.int64)], 0
            for p in parts:
                o = getattr(p, key)
                pieces.append(o[1:] + base)
                base += int(o[-1])
            return np.concatenate(pieces)

        cat = lambda key: np.concatenate([getattr(p, key) for p in parts])
        return Tokens(cat("input_ids"), cat("next_logprob"), cat("logsumexp"),
                      offsets("entry_offsets"), cat("entry_ids"), cat("entry_logprobs"),
                      offsets("sample_offsets"), cat("sample_ids"), cat("sample_draws"))

    @staticmethod
    def empty() -> "Tokens":
        u, f, o = np.zeros(0, np.uint32), np.zeros(0, np.float32), np.zeros(1, np.int64)
        return Tokens(u, f, f, o, u, f, o, u, u)


@dataclasses.dataclass
class Padded:
    """Loss-ready per-token targets of a token range: entries as [T, k] matrices.

    Row t holds position t's top min(c_t, k) entries in descending order, then padding
    (id pad_id, log-prob -inf, so exp() of the padding is 0)."""

    input_ids: np.ndarray       # uint32 [T]
    next_logprob: np.ndarray    # float32 [T]
    logsumexp: np.ndarray       # float32 [T]
    entry_counts: np.ndarray    # int64 [T], min(c_t, k)
    entry_ids: np.ndarray       # int32 [T, k]
    entry_logprobs: np.ndarray  # float32 [T, k]

    @property
    def tokens(self) -> int:
        return len(self.input_ids)

    def slice(self, a: int, b: int) -> "Padded":
        return Padded(*(getattr(self, f.name)[a:b] for f in dataclasses.fields(self)))

    @staticmethod
    def concat(parts: list, k: int) -> "Padded":
        if not parts:
            return Padded(np.zeros(0, np.uint32), np.zeros(0, np.float32), np.zeros(0, np.float32),
                          np.zeros(0, np.int64), np.zeros((0, k), np.int32), np.zeros((0, k), np.float32))
        return Padded(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(Padded)))


@dataclasses.dataclass
class SequenceInfo:
    index: int           # global sequence index
    document_key: str    # 32 lowercase hex digits, high 64 bits first
    document_offset: int  # offset of the window's first token in its document
    length: int          # tokens
    start: int           # global token index of its first token
    shard: int           # index into Cache.shards


# ----------------------------------------------------------------------------------------------
# Shards (sections 3-6)

_FIXED_COLUMNS = ("input_ids", "next_logprob", "logsumexp", "entry_count")
_SAMPLE_COLUMNS = ("sample_count", "sample_ids", "sample_draws")
_LINK_COLUMNS = ("next_link", "next_logprob_delta")


class Shard:
    """One memory-mapped shard file; the constructor checks header, trailer and footer."""

    def __init__(self, path: str, name: str, validate_schema: bool = True):
        self.path, self.name = path, name
        fd, self.size = _open_regular_file(path, name)
        try:
            if self.size < HEADER_SIZE + TRAILER_SIZE:
                raise CacheError(f"{name}: {self.size} bytes, shorter than the 56-byte minimum (truncated?)")
            try:
                self._map = mmap.mmap(fd, self.size, access=mmap.ACCESS_READ)
            except (OSError, ValueError, OverflowError) as e:
                raise CacheError(f"{name}: cannot map {self.size} bytes ({getattr(e, 'strerror', None) or e})") from None
        finally:
            os.close(fd)
        self.buffer = memoryview(self._map)
        try:
            self._check_frame()
            self._parse_footer(validate_schema)
        except BaseException:
            self.close()
            raise

    def close(self):
        m, self._map = getattr(self, "_map", None), None
        if m is None:
            return
        try:
            self.buffer.release()
            m.close()
        except BufferError:
            pass  # zero-copy arrays still view the mapping; it is unmapped when the last one is freed

    def _check_frame(self):
        b, S, name = self.buffer, self.size, self.name
        if bytes(b[0:8]) != MAGIC:
            raise CacheError(f"{name}: bad magic at offset 0")
        if bytes(b[S - 8:S]) != MAGIC:
            raise CacheError(f"{name}: bad magic at the end (truncated or not a shard?)")
        head_version, head_flags = struct.unpack("<II", bytes(b[8:16]))
        F, L, footer_hash, tail_version, tail_flags = struct.unpack("<QQQII", bytes(b[S - 40:S - 8]))
        if head_version != FORMAT_VERSION or tail_version != FORMAT_VERSION:
            raise CacheError(f"{name}: format version {head_version} (header) / {tail_version} (trailer), "
                             f"this reader knows {FORMAT_VERSION}")
        if head_flags != 0 or tail_flags != 0:
            raise CacheError(f"{name}: non-zero flags {head_flags:#x} (header) / {tail_flags:#x} (trailer)")
        if F < HEADER_SIZE or F + L != S - TRAILER_SIZE:
            raise CacheError(f"{name}: footer offset {F} and length {L} do not fit a {S}-byte file")
        footer_bytes = bytes(b[F:F + L])
        if xxh3(footer_bytes) != footer_hash:
            raise CacheError(f"{name}: footer checksum mismatch (stored {hex64(footer_hash)}, "
                             f"computed {hex64(xxh3(footer_bytes))})")
        self.footer_offset, self.footer_bytes = F, footer_bytes

    def _parse_footer(self, validate_schema: bool):
        w = f"{self.name}: footer"
        ft = _parse_json(self.footer_bytes, w)
        self.footer = ft
        if validate_schema:
            schema_validate(ft, "footer.schema.json", w)
        _int(ft, "formatVersion", w, FORMAT_VERSION, FORMAT_VERSION)
        minor = _int(ft, "formatMinorVersion", w, 0, FORMAT_MINOR_VERSION) if "formatMinorVersion" in ft else 0
        self.vocabulary_size = _int(ft, "vocabularySize", w, 1, MAX_VOCABULARY)
        self.max_entries = _int(ft, "maxEntries", w, 0, 65535)
        self.max_samples = _int(ft, "maxSamples", w, 0, 1 << 20)
        self.block_tokens = _int(ft, "blockTokens", w, 1, 1 << 24)
        bands = _int_list(ft, "entryBands", w)
        if not bands or bands[0] != 0 or bands[-1] != self.max_entries or \
                any(a >= b for a, b in zip(bands, bands[1:])):
            raise CacheError(f"{w}: entryBands {bands} must rise strictly from 0 to maxEntries {self.max_entries}")
        self.bands = bands
        lp = _get(ft, "logProbs", w)
        encoding = _get(lp, "encoding", w + " logProbs")
        if encoding == "quantized":
            self.step_log2 = _int(lp, "stepLog2", w + " logProbs", 0, 20)
            self.step_multiplier = _int(lp, "stepMultiplier", w + " logProbs", 1, 255) if "stepMultiplier" in lp else 1
            if self.step_multiplier != 1 and minor < 2:
                raise CacheError(f"{w}: logProbs stepMultiplier {self.step_multiplier} needs format 1.2, footer says 1.{minor}")
        elif encoding == "float32":
            for key in ("stepLog2", "stepMultiplier"):  # meaningless here, but typed where present
                if key in lp:
                    _int(lp, key, w + " logProbs", INT64_MIN, INT64_MAX)
            self.step_log2 = None
            self.step_multiplier = None
        else:
            raise CacheError(f"{w}: unknown logProbs encoding {encoding!r}")
        # Bounded like the manifest's counts (section 7), before any arithmetic on them.
        self.tokens = _int(ft, "tokens", w, 0, MAX_COUNT)
        self.sequences = _int(ft, "sequences", w, 0, MAX_COUNT)
        self.entries = _int(ft, "entries", w, 0, MAX_COUNT)
        self.samples = _int(ft, "samples", w, 0, MAX_COUNT)

        st = _get(ft, "sequenceTable", w)
        ws = w + " sequenceTable"
        keys = _get(st, "documentKeys", ws)
        if not isinstance(keys, list) or any(not isinstance(k, str) or not re.fullmatch(r"[0-9a-f]{32}", k) for k in keys):
            raise CacheError(f"{ws}: documentKeys must be 32 lowercase hex digits each")
        offsets = _int_list(st, "documentOffsets", ws)
        lengths = _int_list(st, "lengths", ws)
        if not (len(keys) == len(offsets) == len(lengths) == self.sequences):
            raise CacheError(f"{ws}: {len(keys)} keys, {len(offsets)} offsets, {len(lengths)} lengths "
                             f"for {self.sequences} sequences")
        if sum(lengths) != self.tokens:
            raise CacheError(f"{ws}: lengths sum to {sum(lengths)}, footer says {self.tokens} tokens")
        self.document_keys = keys
        self.document_offsets = np.array(offsets, dtype=np.int64) if offsets else np.zeros(0, np.int64)
        self.lengths = np.array(lengths, dtype=np.int64) if lengths else np.zeros(0, np.int64)
        self.sequence_starts = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)

        blocks = _get(ft, "blocks", w)
        if not isinstance(blocks, list):
            raise CacheError(f"{w}: blocks must be a list")
        expected_blocks = -(-self.tokens // self.block_tokens)
        if len(blocks) != expected_blocks:
            raise CacheError(f"{w}: {len(blocks)} blocks, expected ceil({self.tokens}/{self.block_tokens}) = {expected_blocks}")
        m = len(bands) - 1
        required = list(_FIXED_COLUMNS) + [f"entry_ids.{j}" for j in range(m)] + \
            [f"entry_logprobs.{j}" for j in range(m)]
        if self.max_samples > 0:
            required += list(_SAMPLE_COLUMNS)
        allowed = set(required) | {"entry_id_dict"} | set(_LINK_COLUMNS) | {f"entry_refs.{j}" for j in range(m)}
        if self.max_samples > 0:
            allowed.add("sample_refs")
        self.blocks = []
        sums = [0, 0, 0]
        spans = []  # (offset, end, block, column) of every non-empty chunk
        for bi, block in enumerate(blocks):
            wb = f"{self.name}: block {bi}"
            n = _int(block, "tokens", wb, 1)
            want = self.block_tokens if bi + 1 < len(blocks) else self.tokens - bi * self.block_tokens
            if n != want:
                raise CacheError(f"{wb}: {n} tokens, expected {want}")
            e = _int(block, "entries", wb)
            s = _int(block, "samples", wb)
            if e > n * self.max_entries or s > n * self.max_samples:
                raise CacheError(f"{wb}: {e} entries / {s} samples exceed what {n} tokens may hold")
            chunks = _get(block, "chunks", wb)
            if not isinstance(chunks, list):
                raise CacheError(f"{wb}: chunks must be a list")
            columns = {}
            decoded = 0  # bytes the block's columns decode into so far
            for ci, chunk in enumerate(chunks):
                column = _str(chunk, "column", f"{wb} chunk {ci}")
                wc = f"{wb} chunk {column!r}"
                if column not in allowed:
                    raise CacheError(f"{wc}: unexpected column")
                if column in columns:
                    raise CacheError(f"{wc}: column appears twice")
                c = {
                    "offset": _int(chunk, "offset", wc, HEADER_SIZE),
                    "size": _int(chunk, "size", wc),
                    "count": _int(chunk, "count", wc, 0, 1 << 40),
                    "width": _int(chunk, "width", wc, 1, 4),
                    "filter": _get(chunk, "filter", wc),
                    "codec": _get(chunk, "codec", wc),
                    "xxh3": _hex16(chunk, "xxh3", wc),
                }
                if c["offset"] + c["size"] > self.footer_offset:
                    raise CacheError(f"{wc}: bytes [{c['offset']}, {c['offset'] + c['size']}) run past the "
                                     f"footer at {self.footer_offset}")
                if c["filter"] not in ("raw", "planes") + BUCKET_FILTERS:
                    raise CacheError(f"{wc}: unknown filter {c['filter']!r}")
                if c["filter"] in BUCKET_FILTERS and minor < 1:
                    raise CacheError(f"{wc}: filter {c['filter']} needs format 1.1, footer says 1.{minor}")
                if c["codec"] not in ("none", "lz4", "zstd"):
                    raise CacheError(f"{wc}: unknown codec {c['codec']!r}")
                if c["count"] == 0 and (c["size"] != 0 or c["codec"] != "none" or c["filter"] != "raw"):
                    raise CacheError(f"{wc}: an empty chunk must have size 0, codec none, filter raw")
                if c["codec"] == "none" and c["filter"] not in BUCKET_FILTERS and c["size"] != c["count"] * c["width"]:
                    raise CacheError(f"{wc}: codec none but size {c['size']} != count*width "
                                     f"{c['count'] * c['width']}")
                columns[column] = c
                decoded += 4 * c["count"]  # every column decodes into 4-byte values
                if decoded > MAX_DECODED_BLOCK_BYTES:
                    raise CacheError(f"{wc}: block {bi} decodes to more than {MAX_DECODED_BLOCK_BYTES >> 30} GiB "
                                     f"(counts up to {c['count']} values), refused before decoding")
                if c["size"]:
                    spans.append((c["offset"], c["offset"] + c["size"], bi, column))
            for column in required:
                if column not in columns:
                    raise CacheError(f"{wb}: missing column {column!r}")
            for column in ("next_logprob", "logsumexp") + \
                    (tuple(f"entry_logprobs.{j}" for j in range(m)) if self.step_log2 is None else ()):
                if columns[column]["width"] != 4 and columns[column]["count"]:
                    raise CacheError(f"{wb} chunk {column!r}: float32 values need width 4, "
                                     f"not {columns[column]['width']}")
            links = [c for c in _LINK_COLUMNS if c in columns]
            if links and len(links) != 2:
                raise CacheError(f"{wb}: next_link and next_logprob_delta come together")
            if links and minor < 3:
                raise CacheError(f"{wb}: next-token links need format 1.3, footer says 1.{minor}")
            if links and m == 0:
                raise CacheError(f"{wb}: next-token links without entry bands")
            linked = columns["next_logprob_delta"]["count"] if links else 0  # values derived from links
            if linked > n:
                raise CacheError(f"{wb} chunk 'next_logprob_delta': count {linked} exceeds the block's {n} tokens")
            for column in _FIXED_COLUMNS + (_SAMPLE_COLUMNS[:1] if self.max_samples > 0 else ()) + \
                    (("next_link",) if links else ()):
                want_n = n - linked if column in ("input_ids", "next_logprob") else n
                if columns[column]["count"] != want_n:
                    raise CacheError(f"{wb} chunk {column!r}: count {columns[column]['count']}, expected {want_n}")
            if self.max_samples > 0:
                sample_refs = "sample_refs" in columns
                if sample_refs and minor < 4:
                    raise CacheError(f"{wb} chunk 'sample_refs': sample references need format 1.4, footer says 1.{minor}")
                if sample_refs and m == 0:
                    raise CacheError(f"{wb}: sample references without entry bands")
                # With references, sample_ids holds only the ids no reference names (section 4.7).
                for column in ("sample_draws", "sample_refs") if sample_refs else _SAMPLE_COLUMNS[1:]:
                    if columns[column]["count"] != s:
                        raise CacheError(f"{wb} chunk {column!r}: count {columns[column]['count']}, "
                                         f"expected {s} samples")
                if sample_refs and columns["sample_ids"]["count"] > s:
                    raise CacheError(f"{wb} chunk 'sample_ids': count {columns['sample_ids']['count']}, "
                                     f"more than the {s} samples")
            elif s != 0:
                raise CacheError(f"{wb}: {s} samples in a shard with maxSamples = 0")
            band_total = 0
            for j in range(m):
                ci, cl = columns[f"entry_ids.{j}"], columns[f"entry_logprobs.{j}"]
                cr = columns.get(f"entry_refs.{j}")
                if cr is not None and minor < 3:
                    raise CacheError(f"{wb} chunk 'entry_refs.{j}': entry references need format 1.3, footer says 1.{minor}")
                # With references, ids count only the entries no reference names (section 4).
                if ci["count"] != cl["count"] if cr is None else max(ci["count"], cr["count"]) > cl["count"]:
                    raise CacheError(f"{wb}: band {j} has {ci['count']} ids"
                                     f"{'' if cr is None else ' and %d references' % cr['count']} for {cl['count']} log-probs")
                band_total += cl["count"]
            if band_total != e:
                raise CacheError(f"{wb}: bands hold {band_total} entries, block says {e}")
            start = bi * self.block_tokens
            self.blocks.append({"index": bi, "start": start, "tokens": n, "entries": e, "samples": s,
                                "columns": columns})
            sums[0] += n
            sums[1] += e
            sums[2] += s
        # Section 3: chunks lie in any order but never share bytes.
        spans.sort()
        for (o0, e0, b0, c0), (o1, e1, b1, c1) in zip(spans, spans[1:]):
            if o1 < e0:
                raise CacheError(f"{self.name}: block {b1} chunk {c1!r}: bytes [{o1}, {e1}) overlap "
                                 f"[{o0}, {e0}) of block {b0} chunk {c0!r}")
        if sums != [self.tokens, self.entries, self.samples]:
            raise CacheError(f"{w}: blocks sum to tokens/entries/samples {sums}, footer says "
                             f"{[self.tokens, self.entries, self.samples]}")

    # -- chunks and blocks

    def column(self, b: int, column: str) -> np.ndarray:
        """Checksums and decodes one chunk of block b into uint32[count]."""
        c = self.blocks[b]["columns"][column]
        where = f"{self.name}: block {b} chunk {column!r} (offset {c['offset']}, {c['size']} bytes)"
        stored = self.buffer[c["offset"]:c["offset"] + c["size"]]
        got = xxh3(stored)
        if got != c["xxh3"]:
            raise CacheError(f"{where}: checksum mismatch (stored {hex64(c['xxh3'])}, computed {hex64(got)})")
        values = decode_values(stored, c["count"], c["width"], c["filter"], c["codec"], where)
        if len(values) != c["count"]:
            raise CacheError(f"{where}: decoded {len(values)} values, expected {c['count']}")
        return values

    def _ids(self, b: int, column: str, values: np.ndarray) -> np.ndarray:
        if len(values) and int(values.max()) >= self.vocabulary_size:
            i = int(np.argmax(values >= self.vocabulary_size))
            raise CacheError(f"{self.name}: block {b} chunk {column!r}: value {int(values[i])} at index {i} "
                             f"is not below vocabularySize {self.vocabulary_size}")
        return values

    def _decode(self, b: int, k: Optional[int]) -> dict:
        """Decodes block b with entries as dense [n, kk] matrices (kk = min(k, K); the cells past a
        position's count are undefined). With k, only the bands holding ranks < k are read."""
        blk = self.blocks[b]
        n = blk["tokens"]
        where = f"{self.name}: block {b}"
        out = {"input_ids": self._ids(b, "input_ids", self.column(b, "input_ids")),
               "next_logprob": self.column(b, "next_logprob").view(np.float32),
               "logsumexp": self.column(b, "logsumexp").view(np.float32)}
        counts = self.column(b, "entry_count").astype(np.int64)
        if len(counts) and int(counts.max()) > self.max_entries:
            raise CacheError(f"{where} chunk 'entry_count': count {int(counts.max())} above maxEntries {self.max_entries}")
        if int(counts.sum()) != blk["entries"]:
            raise CacheError(f"{where} chunk 'entry_count': counts sum to {int(counts.sum())}, block says {blk['entries']}")
        bands = self.bands
        for j in range(len(bands) - 1):  # band counts follow from entry_count; check them all
            want = int(np.clip(counts - bands[j], 0, bands[j + 1] - bands[j]).sum())
            got = blk["columns"][f"entry_logprobs.{j}"]["count"]
            if got != want:
                raise CacheError(f"{where} chunk 'entry_logprobs.{j}': count {got}, expected {want}")

        # No rank at or past the block's largest count holds an entry: the dense matrices stop
        # there (a forged block of 2^24 positions with K = 65535 and few entries stays small).
        top = int(counts.max()) if n else 0
        kk = min(top, self.max_entries if k is None else max(0, min(k, self.max_entries)))
        linked = "next_link" in blk["columns"]
        referenced = any(f"entry_refs.{j}" in blk["columns"] for j in range(len(bands) - 1))
        k_asked = kk
        sample_referenced = "sample_refs" in blk["columns"]
        if sample_referenced:  # sample references may name any rank: read every band
            kk = top
        if linked:  # links point into band 0 (ranks below min(c_t, e_1)), decoded whatever k asks for
            kk = max(kk, min(bands[1], top))
        if referenced and kk:  # references may name any rank of the bands read: read them whole
            kk = min(next(e for e in bands if e >= kk), top)
        refs = {}  # band -> (stored ids no reference names, references)
        ids = np.zeros((n, kk), dtype=np.uint32)     # [n, kk] entry ids, rank-major per row
        stored = np.zeros((n, kk), dtype=np.uint32)  # [n, kk] stored log-prob values
        dictionary = None
        if "entry_id_dict" in blk["columns"] and blk["entries"] and kk:
            dictionary = self._ids(b, "entry_id_dict", self.column(b, "entry_id_dict"))
        for j in range(len(bands) - 1):
            lo, hi = bands[j], bands[j + 1]
            if lo >= kk:
                break
            w, take = hi - lo, min(hi, kk) - lo
            column = f"entry_ids.{j}"
            if blk["columns"][f"entry_logprobs.{j}"]["count"] == 0:
                continue
            band_ids = self.column(b, column)
            band_lp = self.column(b, f"entry_logprobs.{j}")
            if dictionary is not None:
                if int(band_ids.max()) >= len(dictionary):
                    raise CacheError(f"{where} chunk '{column}': dictionary rank {int(band_ids.max())} "
                                     f"not below its size {len(dictionary)}")
                band_ids = dictionary[band_ids]
            else:
                self._ids(b, column, band_ids)
            if f"entry_refs.{j}" in blk["columns"]:  # ids resolved in block order below
                refs[j] = (band_ids, self.column(b, f"entry_refs.{j}"))
                band_ids = np.zeros(len(band_lp), np.uint32)
            if len(band_ids) == n * w:  # every position fills the band: a plain [n, w] matrix
                ids[:, lo:lo + take] = band_ids.reshape(n, w)[:, :take]
                stored[:, lo:lo + take] = band_lp.reshape(n, w)[:, :take]
            else:
                # Band order is position by position, ascending rank: exactly the row-major order
                # of the cells (t, r) with r < c_t, so a boolean mask scatters it.
                mask = (lo + np.arange(w))[None, :] < counts[:, None]  # [n, w]
                tmp = np.zeros((n, w), dtype=np.uint32)
                tmp[mask] = band_ids
                ids[:, lo:lo + take] = tmp[:, :take]
                tmp[mask] = band_lp
                stored[:, lo:lo + take] = tmp[:, :take]
        if self.step_log2 is None:
            lp = stored.view(np.float32)
        else:
            # Section 5: Q_r is the running sum along the row (padding cells hold 0 and add nothing).
            if stored.size and int(stored.max()) > QMAX:  # one step above the bound breaks it already
                raise CacheError(f"{where} chunk 'entry_logprobs': quantised log-prob step "
                                 f"{int(stored.max())} above 2^24-1")
            # With every step <= 2^24-1, kk < 128 steps cannot overflow int32 (half the time of int64).
            q = np.cumsum(stored.view(np.int32), axis=1, dtype=np.int32 if kk < 128 else np.int64)
            if q.size and int(q.max()) > QMAX:
                raise CacheError(f"{where} chunk 'entry_logprobs': quantised log-prob running sum "
                                 f"{int(q.max())} above 2^24-1")
            # Q < 2^24 and h = m*2^-b (m < 2^8) make Q*h exact in float64; one rounding to float32.
            h = self.step_multiplier * 2.0 ** -self.step_log2
            lp = (q.astype(np.float64) * -h).astype(np.float32)
        links = self._links(b, counts) if linked else None  # checked once, used by both below
        if refs:
            self._resolve_in_order(b, out, counts, ids, refs, links)
        if links:
            self._resolve_links(out, counts, ids, lp, links, inputs_done=bool(refs))
        all_ids = ids
        if linked or referenced or sample_referenced:
            kk = k_asked
            ids, lp = ids[:, :kk], lp[:, :kk]
        out.update(counts=np.minimum(counts, kk), ids=ids, lp=lp, kk=kk)

        if self.max_samples > 0:
            scounts = self.column(b, "sample_count").astype(np.int64)
            if len(scounts) and int(scounts.max()) > self.max_samples:
                raise CacheError(f"{where} chunk 'sample_count': count {int(scounts.max())} above "
                                 f"maxSamples {self.max_samples}")
            if int(scounts.sum()) != blk["samples"]:
                raise CacheError(f"{where} chunk 'sample_count': counts sum to {int(scounts.sum())}, "
                                 f"block says {blk['samples']}")
            out["sample_draws"] = draws = self.column(b, "sample_draws")
            if len(draws) and int(draws.min()) < 1:
                raise CacheError(f"{where} chunk 'sample_draws': a draw count of 0")
            stored_ids = self._ids(b, "sample_ids", self.column(b, "sample_ids"))
            if sample_referenced:
                out["sample_ids"] = self._resolve_samples(b, counts, all_ids, scounts, draws, stored_ids)
            else:
                out["sample_ids"] = stored_ids
        else:
            scounts = np.zeros(n, dtype=np.int64)
            out["sample_ids"] = out["sample_draws"] = np.zeros(0, np.uint32)
        out["sample_offsets"] = np.concatenate([[0], np.cumsum(scounts)]).astype(np.int64)
        return out

    def _resolve_samples(self, b: int, counts, ids, scounts, draws, stored):
        """Section 4.7, sample references: in each position, a run of samples with equal draw
        counts names ascending ranks of the position's entries, each reference the step from the
        previous one (from -1 at the run's start); a reference 0 takes the next stored id. So a
        referencing sample's rank is the sum of the run's references up to it, minus one."""
        where = f"{self.name}: block {b}"
        z = self.column(b, "sample_refs").astype(np.int64)          # [s]
        s = len(z)
        pos = np.repeat(np.arange(len(scounts)), scounts)           # [s] position of each sample
        run = np.ones(s, dtype=bool)                                # [s] a run starts here
        run[1:] = (pos[1:] != pos[:-1]) | (draws[1:] != draws[:-1])
        total = np.cumsum(z)
        before = (total - z)[run]                                   # sum before each run
        rank = total - before[np.cumsum(run) - 1] - 1               # [s] rank, for z > 0
        named = z > 0
        if int((~named).sum()) != len(stored):
            raise CacheError(f"{where} chunk 'sample_ids': {len(stored)} ids, {int((~named).sum())} samples no "
                             f"reference names")
        bad = named & (rank >= counts[pos])
        if bad.any():
            i = int(np.argmax(bad))
            raise CacheError(f"{where} chunk 'sample_refs': token {int(pos[i])} sample {i} names rank {int(rank[i])}, "
                             f"the position has {int(counts[pos[i]])} entries")
        out = np.empty(s, dtype=np.uint32)
        out[~named] = stored
        out[named] = ids[pos[named], rank[named]]
        return out

    def _links(self, b: int, counts: np.ndarray):
        """Block b's next-token links (section 4), checked: [n] 0 or rank + 1, and [L] deltas."""
        where = f"{self.name}: block {b}"
        n = len(counts)
        link = self.column(b, "next_link").astype(np.int64)        # [n] 0 or rank + 1
        delta = self.column(b, "next_logprob_delta")                # [L] zigzag
        has = link > 0
        c0 = np.minimum(counts, self.bands[1])
        if np.any(link > c0):
            t = int(np.argmax(link > c0))
            raise CacheError(f"{where} chunk 'next_link': link to rank {int(link[t]) - 1} at token {t}, "
                             f"which has {int(c0[t])} band-0 entries")
        if n and has[-1]:
            raise CacheError(f"{where} chunk 'next_link': a link at the block's last token")
        if int(has.sum()) != len(delta):
            raise CacheError(f"{where} chunk 'next_link': {int(has.sum())} links, {len(delta)} next log-prob deltas")
        return link, delta

    def _resolve_in_order(self, b: int, out: dict, counts: np.ndarray, ids: np.ndarray, refs: dict, links):
        """Section 4, entry references (and, with them, next-token links' input ids): fills the
        referencing bands of ids [n, >= their end] position by position, since a reference names
        an entry of an earlier position, and a link's input id may come from a referenced entry."""
        where = f"{self.name}: block {b}"
        n, bands = len(counts), self.bands
        linked = links is not None
        link = links[0] if linked else None
        stored_inputs = out["input_ids"]
        inputs = np.empty(n, dtype=np.uint32) if linked else stored_inputs
        si = 0
        at = {j: [0, 0] for j in refs}  # band -> read positions in (stored ids, references)
        by_pair, by_input, prev = {}, {}, None
        for t in range(n):
            if linked:
                if t and link[t - 1]:
                    inputs[t] = ids[t - 1, link[t - 1] - 1]
                else:
                    inputs[t] = stored_inputs[si]
                    si += 1
            x = int(inputs[t])
            u = by_pair.get((prev, x), by_input.get(x, -1))
            by_pair[(prev, x)], by_input[x], prev = t, t, x
            for j, (stored, ref) in refs.items():
                lo, hi = bands[j], bands[j + 1]
                cnt = min(int(counts[t]), hi) - lo
                if cnt <= 0:
                    continue
                a = at[j]
                if u < 0:
                    z = np.zeros(cnt, np.uint32)
                else:
                    z = ref[a[1]:a[1] + cnt]
                    if len(z) < cnt:
                        raise CacheError(f"{where} chunk 'entry_refs.{j}': {len(ref)} references, fewer than the entries "
                                         f"with a reference position")
                    a[1] += cnt
                miss = z == 0
                nm = int(miss.sum())
                if a[0] + nm > len(stored):
                    raise CacheError(f"{where} chunk 'entry_ids.{j}': {len(stored)} ids, fewer than the entries no "
                                     f"reference names")
                row = ids[t, lo:lo + cnt]
                row[miss] = stored[a[0]:a[0] + nm]
                a[0] += nm
                if nm < cnt:
                    zz = z[~miss].astype(np.int64) - 1
                    i = np.arange(lo, lo + cnt)[~miss] + ((zz >> 1) ^ -(zz & 1))
                    limit = min(int(counts[u]), hi)
                    if i.min() < 0 or i.max() >= limit:
                        raise CacheError(f"{where} chunk 'entry_refs.{j}': token {t} refers to index {int(i.max() if i.max() >= limit else i.min())} "
                                         f"of token {u}, which has {limit} there")
                    row[~miss] = ids[u, i]
        for j, (stored, ref) in refs.items():
            if at[j] != [len(stored), len(ref)]:
                raise CacheError(f"{where} chunk 'entry_refs.{j}': {len(stored)} ids and {len(ref)} references stored, "
                                 f"{at[j][0]} and {at[j][1]} used")
        out["input_ids"] = inputs

    def _resolve_links(self, out: dict, counts: np.ndarray, ids: np.ndarray, lp: np.ndarray, links, inputs_done: bool):
        """Section 4, next-token links: rebuilds out's input_ids (unless _resolve_in_order did) and
        next_logprob of a block from the stored unlinked values, its checked links and deltas
        (from _links) and the decoded band 0 (ids, lp: [n, >= e_1])."""
        n = len(counts)
        link, delta = links
        has = link > 0
        t = np.nonzero(has)[0]
        if inputs_done:
            inputs = out["input_ids"]
        else:
            inputs = np.empty(n, dtype=np.uint32)
            from_link = np.zeros(n, dtype=bool)
            from_link[t + 1] = True
            inputs[t + 1] = ids[t, link[t] - 1]
            inputs[~from_link] = out["input_ids"]
        nexts = np.empty(n, dtype=np.uint32)
        nexts[~has] = out["next_logprob"].view(np.uint32)
        d = ((delta >> 1).astype(np.int64) ^ -(delta & 1).astype(np.int64))  # un-zigzag
        base = lp[t, link[t] - 1].view(np.int32).astype(np.int64)
        nexts[t] = ((base + d) & 0xFFFFFFFF).astype(np.uint32)  # int32 sum, wrapping
        out["input_ids"], out["next_logprob"] = inputs, nexts.view(np.float32)

    def _decode_checked(self, b: int, k: Optional[int]) -> dict:
        """`_decode`, with running out of memory reported as a CacheError naming the block."""
        try:
            return self._decode(b, k)
        except MemoryError:
            blk = self.blocks[b]
            raise CacheError(f"{self.name}: block {b}: {blk['tokens']} positions with up to {self.max_entries} "
                             f"entries each do not fit in memory") from None

    def block(self, b: int, k: Optional[int] = None) -> Tokens:
        """Decodes block b; with k, only the entry bands holding ranks < k are read."""
        d = self._decode_checked(b, k)
        counts = d["counts"]
        if int(counts.sum()) == d["ids"].size:  # every position holds kk entries
            entry_ids, entry_lp = d["ids"].reshape(-1), d["lp"].reshape(-1)
        else:
            mask = np.arange(d["kk"])[None, :] < counts[:, None]
            entry_ids, entry_lp = d["ids"][mask], d["lp"][mask]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return Tokens(d["input_ids"], d["next_logprob"], d["logsumexp"], offsets, entry_ids, entry_lp,
                      d["sample_offsets"], d["sample_ids"], d["sample_draws"])

    def block_padded(self, b: int, k: Optional[int] = None, pad_id: int = -1) -> Padded:
        """Block b as loss-ready [n, k] matrices (k defaults to maxEntries; columns past maxEntries
        are padding)."""
        width = self.max_entries if k is None else k
        d = self._decode_checked(b, k)
        n, kk = len(d["counts"]), d["kk"]
        if width == kk and int(d["counts"].sum()) == n * kk:  # no padding: ids < 2^24 fit int32 as they are
            return Padded(d["input_ids"], d["next_logprob"], d["logsumexp"], d["counts"],
                          d["ids"].view(np.int32), d["lp"])
        ids = np.full((n, width), pad_id, dtype=np.int32)
        lp = np.full((n, width), -np.inf, dtype=np.float32)
        mask = np.arange(kk)[None, :] < d["counts"][:, None]
        ids[:, :kk] = np.where(mask, d["ids"].astype(np.int32), np.int32(pad_id))
        lp[:, :kk] = np.where(mask, d["lp"], np.float32(-np.inf))
        return Padded(d["input_ids"], d["next_logprob"], d["logsumexp"], d["counts"], ids, lp)

    def _blocks_in(self, start: int, stop: int, piece):
        """piece(b) for every block overlapping shard tokens [start, stop), sliced to the range."""
        if not 0 <= start <= stop <= self.tokens:
            raise IndexError(f"{self.name}: token range [{start}, {stop}) outside [0, {self.tokens})")
        B, parts = self.block_tokens, []
        for b in range((start // B) if stop > start else 0, -(-stop // B) if stop > start else 0):
            rows, base = piece(b), b * B
            parts.append(rows.slice(max(start, base) - base, min(stop, base + rows.tokens) - base))
        return parts

    def read(self, start: int, stop: int, k: Optional[int] = None) -> Tokens:
        """Tokens [start, stop) of this shard (shard token indices), entries as CSR."""
        return Tokens.concat(self._blocks_in(start, stop, lambda b: self.block(b, k)))

    def read_padded(self, start: int, stop: int, k: Optional[int] = None, pad_id: int = -1) -> Padded:
        """Tokens [start, stop) of this shard as [T, k] matrices."""
        k = self.max_entries if k is None else k
        return Padded.concat(self._blocks_in(start, stop, lambda b: self.block_padded(b, k, pad_id)), k)

    def file_checksum(self) -> int:
        return xxh3(self.buffer)


# ----------------------------------------------------------------------------------------------
# The cache (sections 2 and 7)


def _open_regular_file(path: str, name: str):
    """(fd, size) of `path` opened read-only, refusing anything but a regular file: opened
    non-blocking, so a FIFO without a writer is refused at once instead of blocking (a socket
    fails to open). The caller closes the fd."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise CacheError(f"{name}: cannot open ({e.strerror})") from None
    try:
        st = os.fstat(fd)
    except OSError as e:
        os.close(fd)
        raise CacheError(f"{name}: cannot stat ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise CacheError(f"{name}: not a regular file")
    return fd, st.st_size


def _read_regular_file(path: str, name: str) -> bytes:
    """The bytes of `path`, refusing anything but a regular file (a FIFO or socket in its place
    would block or fail later; opened non-blocking, so a FIFO without a writer is refused at once)."""
    fd, left = _open_regular_file(path, name)
    try:
        chunks = []
        while True:
            piece = os.read(fd, max(left, 1 << 16))
            if not piece:
                break
            chunks.append(piece)
            left -= len(piece)
        return b"".join(chunks)
    except OSError as e:
        raise CacheError(f"{name}: cannot read ({e.strerror})") from None
    except MemoryError:
        raise CacheError(f"{name}: too large to read into memory") from None
    finally:
        os.close(fd)


MAX_COUNT = 1 << 50         # largest count or size a manifest states (section 7)
MAX_DECODED_BLOCK_BYTES = 1 << 32  # as the Swift reader: a block's columns decode into at most 4 GiB
MAX_SHARDS = 1 << 24
MAX_PARTITIONS = 99999
CAPTURE_POLICIES = ("top-k", "top-p", "sampled", "head-tail", "top-k+sampled")
SAMPLED_POLICIES = ("sampled", "head-tail", "top-k+sampled")


def _real(obj: Any, key: str, where: str) -> float:
    value = _get(obj, key, where)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CacheError(f"{where}: {key!r} must be a number, got {value!r}")
    return float(value)


def _str(obj: Any, key: str, where: str) -> str:
    value = _get(obj, key, where)
    if not isinstance(value, str):
        raise CacheError(f"{where}: {key!r} must be a string, got {value!r}")
    return value


def _obj(obj: Any, key: str, where: str) -> dict:
    value = _get(obj, key, where)
    if not isinstance(value, dict):
        raise CacheError(f"{where}: {key!r} must be an object")
    return value


def check_manifest(m: Any, name: str) -> dict:
    """Section 7's manifest rules beyond the grammar: every member's type and range, the capture
    policy's rules, and totals equal to the sums over the shards. Returns `m`."""
    if not isinstance(m, dict):
        raise CacheError(f"{name}: the manifest must be a JSON object")
    if _str(m, "format", name) != "logitcache":
        raise CacheError(f"{name}: format is not 'logitcache'")
    _int(m, "formatVersion", name, FORMAT_VERSION, FORMAT_VERSION)
    _int(m, "vocabularySize", name, 1, MAX_VOCABULARY)
    fp = _obj(m, "fingerprints", name)
    for key in ("teacher", "tokenizer", "corpus"):
        _str(fp, key, name + " fingerprints")

    w = name + " capture"
    c = _obj(m, "capture", name)
    policy = _str(c, "policy", w)
    if policy not in CAPTURE_POLICIES:
        raise CacheError(f"{w}: unknown policy {policy!r} ({', '.join(CAPTURE_POLICIES)})")
    k = _int(c, "k", w, INT64_MIN, INT64_MAX)
    samples = _int(c, "samples", w, INT64_MIN, INT64_MAX)
    top_p = _real(c, "topP", w) if "topP" in c else None
    sampled = policy in SAMPLED_POLICIES
    rule = f"{w}: {policy} with k = {k}, topP = {top_p if top_p is not None else 'none'}, samples = {samples}"
    if (policy == "top-p") != (top_p is not None):
        raise CacheError(f"{rule}: topP is given exactly for top-p")
    if top_p is not None and not 0 < top_p <= 1:
        raise CacheError(f"{rule}: topP must be in (0, 1]")
    if sampled and not 1 <= samples <= 1 << 20:
        raise CacheError(f"{rule}: samples must be in 1...1048576")
    if not sampled and samples != 0:
        raise CacheError(f"{rule}: samples must be 0 (the policy draws none)")
    if policy == "sampled" and k != 0:
        raise CacheError(f"{rule}: k must be 0 (no exact entries)")
    if policy != "sampled" and not 1 <= k <= 65535:
        raise CacheError(f"{rule}: k must be in 1...65535")
    temperature = _real(c, "temperature", w)
    if not (math.isfinite(temperature) and temperature > 0):
        raise CacheError(f"{w}: temperature {temperature} must be finite and > 0")
    _int(c, "seed", w, 0, INT64_MAX)

    w = name + " encoding"
    e = _obj(m, "encoding", name)
    codec = _str(e, "codec", w)
    if codec not in ("none", "lz4", "zstd"):
        raise CacheError(f"{w}: unknown codec {codec!r}")
    _int(e, "level", w, INT64_MIN, INT64_MAX)
    if _str(e, "logProbs", w) not in ("quantized", "float32"):
        raise CacheError(f"{w}: logProbs {e['logProbs']!r} is not quantized or float32")
    _int(e, "stepLog2", w, 0, 20)
    if "stepMultiplier" in e:
        _int(e, "stepMultiplier", w, 1, 255)
    _int(e, "blockTokens", w, 1, 1 << 24)
    bands = _get(e, "entryBands", w)
    if not isinstance(bands, list) or any(isinstance(b, bool) or not isinstance(b, int) for b in bands) or \
            not bands or bands[0] != 0 or bands[-1] != k or any(a >= b for a, b in zip(bands, bands[1:])):
        raise CacheError(f"{w}: entryBands {bands!r} must be integers rising strictly from 0 to capture.k {k}")

    w = name + " teacherCost"
    cost = _obj(m, "teacherCost", name)
    _int(cost, "tokens", w, 0, MAX_COUNT)
    for key in ("flops", "seconds"):
        v = _real(cost, key, w)
        if not (math.isfinite(v) and v >= 0):
            raise CacheError(f"{w}: {key} {v} must be finite and >= 0")
    if "origin" in m:
        w = name + " origin"
        o = _obj(m, "origin", name)
        _str(o, "tool", w)
        for key in ("teacher", "device", "note"):
            if key in o:
                _str(o, key, w)
    if "partition" in m:
        p = _obj(m, "partition", name)
        count = _int(p, "count", name + " partition", 1, MAX_PARTITIONS)
        _int(p, "index", name + " partition", 0, count - 1)

    shards = _get(m, "shards", name)
    if not isinstance(shards, list):
        raise CacheError(f"{name}: shards must be a list")
    if len(shards) > MAX_SHARDS:
        raise CacheError(f"{name}: {len(shards)} shards, more than 2^24")
    names = set()
    sums = dict.fromkeys(("tokens", "sequences", "entries", "samples", "bytes"), 0)
    for i, s in enumerate(shards):
        we = f"{name}: shards[{i}]"
        if not isinstance(s, dict):
            raise CacheError(f"{we}: expected an object")
        file = _str(s, "file", we)
        we = f"{name}: shards[{i}] ({file})"
        if file in names:
            raise CacheError(f"{we}: shard {file!r} listed twice")
        names.add(file)
        _int(s, "partition", we, 0, MAX_PARTITIONS - 1)
        for key in ("tokens", "sequences", "entries", "samples"):
            sums[key] += _int(s, key, we, 0, MAX_COUNT)
        sums["bytes"] += _int(s, "bytes", we, HEADER_SIZE + TRAILER_SIZE, MAX_COUNT)
        _hex16(s, "xxh3", we)
    totals = _obj(m, "totals", name)
    for key, want in sums.items():
        got = _int(totals, key, name + " totals", INT64_MIN, INT64_MAX)
        if got != want:
            raise CacheError(f"{name}: totals.{key} = {got}, shards sum to {want}")
    return m


def read_manifest(path: str, validate_schema: bool = True) -> dict:
    """Reads a manifest: checks its checksum tail and hash before parsing, then the grammar and
    every member (section 7), then (with jsonschema installed) `manifest.schema.json`."""
    name = os.path.basename(path)
    data = _read_regular_file(path, name)
    i = data.rfind(CHECKSUM_KEY)
    tail = data[i + len(CHECKSUM_KEY):] if i >= 0 else b""
    if i < 0 or not re.fullmatch(rb'[0-9a-f]{16}"\n}\n', tail):
        raise CacheError(f"{name}: does not end with '\"checksum\": \"<16 hex digits>\"\\n}}\\n' (truncated?)")
    stored, got = int(tail[:16], 16), xxh3(data[:i])
    if stored != got:
        raise CacheError(f"{name}: checksum mismatch (stored {hex64(stored)}, computed {hex64(got)})")
    manifest = check_manifest(parse_json(data, name, MANIFEST_REAL_PATHS), name)
    if validate_schema:
        schema_validate(manifest, "manifest.schema.json", name)
    return manifest


def safe_shard_path(directory: str, file: Any, where: str) -> str:
    """Section 2: a plain name whose real path stays inside the cache directory."""
    if not isinstance(file, str) or not SHARD_NAME.fullmatch(file) or file in (".", ".."):
        raise CacheError(f"{where}: shard name {file!r} is not a plain file name")
    root = os.path.realpath(directory)
    real = os.path.realpath(os.path.join(root, file))
    if real == root or os.path.commonpath([root, real]) != root:  # a link may point deeper inside
        raise CacheError(f"{where}: shard {file!r} resolves to {real}, outside the cache directory")
    return real


class Cache:
    """A cache directory (or a manifest file inside one), opened and checked.

    `open_shard(path, name, validate_schema)` makes each shard object (default: `Shard`, which
    maps the file now); `logitcache.remote` passes one whose shards are fetched on first read."""

    def __init__(self, path: str, validate_schema: bool = True, open_shard=None):
        if os.path.isdir(path):
            self.directory, manifest_path = path, os.path.join(path, "manifest.json")
        else:
            self.directory, manifest_path = os.path.dirname(path) or ".", path
        self.manifest_name = os.path.basename(manifest_path)
        self.manifest = m = read_manifest(manifest_path, validate_schema)
        w = self.manifest_name
        self.vocabulary_size = _int(m, "vocabularySize", w, 1, MAX_VOCABULARY)
        entries = _get(m, "shards", w)
        if not isinstance(entries, list):
            raise CacheError(f"{w}: shards must be a list")
        self.shards: list = []
        seen = set()
        try:
            for i, entry in enumerate(entries):
                we = f"{w}: shards[{i}]"
                file = _get(entry, "file", we)
                real = safe_shard_path(self.directory, file, we)
                if real in seen:
                    raise CacheError(f"{we}: shard {file!r} listed twice")
                seen.add(real)
                shard = (open_shard or Shard)(real, file, validate_schema)
                self.shards.append(shard)
                if shard.size != _int(entry, "bytes", we):
                    raise CacheError(f"{file}: {shard.size} bytes, manifest says {entry['bytes']}")
                _hex16(entry, "xxh3", we)
                if shard.vocabulary_size != self.vocabulary_size:
                    raise CacheError(f"{file}: footer vocabularySize {shard.vocabulary_size}, manifest says "
                                     f"{self.vocabulary_size}")
                if shard.max_entries != m["capture"]["k"]:
                    raise CacheError(f"{file}: footer maxEntries {shard.max_entries}, manifest capture.k says "
                                     f"{m['capture']['k']}")
                if shard.max_samples != self.shards[0].max_samples:
                    raise CacheError(f"{file}: footer maxSamples {shard.max_samples} differs from the first shard's "
                                     f"{self.shards[0].max_samples}")
                for key in ("tokens", "sequences", "entries", "samples"):
                    if getattr(shard, key) != _int(entry, key, we):
                        raise CacheError(f"{file}: footer {key} {getattr(shard, key)}, manifest says {entry[key]}")
            totals = _get(m, "totals", w)
            for key in ("tokens", "sequences", "entries", "samples", "bytes"):
                want = sum(_int(e, key, w) for e in entries)
                if _int(totals, key, w + " totals") != want:
                    raise CacheError(f"{w}: totals.{key} = {totals[key]}, shards sum to {want}")
        except BaseException:
            self.close()
            raise
        self.tokens = sum(s.tokens for s in self.shards)
        self.sequences = sum(s.sequences for s in self.shards)
        self.entries = sum(s.entries for s in self.shards)
        self.samples = sum(s.samples for s in self.shards)
        self.max_entries = max((s.max_entries for s in self.shards), default=0)
        self.shard_token_starts = np.cumsum([0] + [s.tokens for s in self.shards]).astype(np.int64)
        self.shard_sequence_starts = np.cumsum([0] + [s.sequences for s in self.shards]).astype(np.int64)

    def close(self):
        for s in self.shards:
            s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def sequence_info(self, i: int) -> SequenceInfo:
        if not 0 <= i < self.sequences:
            raise IndexError(f"sequence {i} outside [0, {self.sequences})")
        si = int(np.searchsorted(self.shard_sequence_starts, i, side="right")) - 1
        shard, j = self.shards[si], i - int(self.shard_sequence_starts[si])
        return SequenceInfo(i, shard.document_keys[j], int(shard.document_offsets[j]), int(shard.lengths[j]),
                            int(self.shard_token_starts[si] + shard.sequence_starts[j]), si)

    def sequence_table(self) -> list:
        return [self.sequence_info(i) for i in range(self.sequences)]

    def sequence(self, i: int, k: Optional[int] = None):
        """(SequenceInfo, Tokens) of global sequence i; a sequence never spans shards."""
        info = self.sequence_info(i)
        shard = self.shards[info.shard]
        a = info.start - int(self.shard_token_starts[info.shard])
        return info, shard.read(a, a + info.length, k)

    def _shards_in(self, start: int, stop: Optional[int], piece):
        stop = self.tokens if stop is None else stop
        if not 0 <= start <= stop <= self.tokens:
            raise IndexError(f"token range [{start}, {stop}) outside [0, {self.tokens})")
        parts = []
        for si, shard in enumerate(self.shards):
            a, b = int(self.shard_token_starts[si]), int(self.shard_token_starts[si + 1])
            if b > start and a < stop:
                parts.append(piece(shard, max(start, a) - a, min(stop, b) - a))
        return parts

    def read(self, start: int = 0, stop: Optional[int] = None, k: Optional[int] = None) -> Tokens:
        """Global tokens [start, stop), entries as CSR, cut to the top k when k is given."""
        return Tokens.concat(self._shards_in(start, stop, lambda s, a, b: s.read(a, b, k)))

    def read_padded(self, start: int = 0, stop: Optional[int] = None, k: Optional[int] = None,
                    pad_id: int = -1) -> Padded:
        """Global tokens [start, stop) as loss-ready [T, k] matrices (k defaults to the largest
        maxEntries of the shards)."""
        k = self.max_entries if k is None else k
        return Padded.concat(self._shards_in(start, stop, lambda s, a, b: s.read_padded(a, b, k, pad_id)), k)

    def verify(self, progress=None) -> dict:
        """Every check of the spec: whole-file checksums, then every chunk decoded and checked,
        plus value rules a reader need not enforce while reading (entries in descending order, log-probs
        at most 0 and a position's probabilities at most 1, finite logsumexps, distinct entry ids and
        sampled ids per position, no NaN). Raises CacheError at the first problem."""
        self._verify_partition_manifests()
        entries = self.manifest["shards"]
        for shard, entry in zip(self.shards, entries):
            got = shard.file_checksum()
            if got != int(entry["xxh3"], 16):
                raise CacheError(f"{shard.name}: whole-file checksum mismatch (manifest {entry['xxh3']}, "
                                 f"computed {hex64(got)})")
        tokens = 0
        for shard in self.shards:
            for b in range(len(shard.blocks)):
                rows = shard.block(b)
                lossless = shard.step_log2 is None
                max_error = 0.0 if lossless else shard.step_multiplier * 2.0 ** -shard.step_log2 / 2
                _check_values(rows, lossless, f"{shard.name}: block {b}", max_error)
                tokens += rows.tokens
                if progress:
                    progress(shard, b)
        return {"shards": len(self.shards), "tokens": tokens, "sequences": self.sequences,
                "entries": self.entries, "samples": self.samples}

    def _verify_partition_manifests(self):
        """Section 7: the partition manifests beside a merged manifest (or the one opened) are
        sound manifests, and each shard they list is in the opened manifest exactly as listed."""
        try:
            names = sorted(os.listdir(self.directory))
        except OSError:
            return
        listed = [{key: e.get(key) for key in SHARD_ENTRY_KEYS} for e in self.manifest["shards"]]
        for n in names:
            if not (n.startswith("manifest.part-") and n.endswith(".json")):
                continue
            if self.manifest_name != "manifest.json" and n != self.manifest_name:
                continue
            p = read_manifest(os.path.join(self.directory, n), validate_schema=False)
            for e in p["shards"]:
                if {key: e.get(key) for key in SHARD_ENTRY_KEYS} not in listed:
                    raise CacheError(f"{n}: shard {e['file']} is not in {self.manifest_name} as listed here")


SHARD_ENTRY_KEYS = ("file", "partition", "tokens", "sequences", "entries", "samples", "bytes", "xxh3")
LOGPROB_SLACK = 1e-3  # FORMAT.md section 4: largest log-prob accepted (float32 rounding of logit - lse)


def _check_values(rows: Tokens, lossless: bool, where: str, max_error: float = 0.0):
    """FORMAT.md section 4's value rules for the rows of one block."""
    for name in ("next_logprob", "logsumexp"):
        if np.isnan(getattr(rows, name)).any():
            raise CacheError(f"{where}: NaN in {name}")
    if (rows.next_logprob > LOGPROB_SLACK).any():
        t = int(np.argmax(rows.next_logprob > LOGPROB_SLACK))
        raise CacheError(f"{where}: next_logprob {rows.next_logprob[t]} of position {t} is above 0, not a log-probability")
    if not np.isfinite(rows.logsumexp).all():
        t = int(np.argmax(~np.isfinite(rows.logsumexp)))
        raise CacheError(f"{where}: logsumexp {rows.logsumexp[t]} of position {t} is not finite")
    lp, off = rows.entry_logprobs, rows.entry_offsets
    if lossless and np.isnan(lp).any():
        raise CacheError(f"{where}: NaN entry log-prob")
    if (lp > LOGPROB_SLACK).any():
        i = int(np.argmax(lp > LOGPROB_SLACK))
        t = int(np.searchsorted(off, i, side="right")) - 1
        raise CacheError(f"{where}: entry log-prob {lp[i]} of position {t} is above 0")
    if len(lp) > 1:
        rising = lp[1:] > lp[:-1]
        rising[off[1:-1][(off[1:-1] > 0) & (off[1:-1] < len(lp))] - 1] = False  # ignore position boundaries
        if rising.any():
            i = int(np.argmax(rising)) + 1
            t = int(np.searchsorted(off, i, side="right")) - 1
            raise CacheError(f"{where}: entries of position {t} are not in descending order")
    if len(lp):
        cum = np.concatenate(([0.0], np.cumsum(np.exp(lp.astype(np.float64)))))
        mass = cum[off[1:]] - cum[off[:-1]]
        limit = (1 + 1e-3) * np.exp(max_error)
        if (mass > limit).any():
            t = int(np.argmax(mass > limit))
            raise CacheError(f"{where}: entries of position {t} hold probability {mass[t]}, more than 1")
    _check_distinct(rows.entry_ids, rows.entry_counts, f"{where}: position {{}} repeats entry id {{}}")
    _check_distinct(rows.sample_ids, rows.sample_counts, f"{where}: position {{}} repeats sampled id {{}}")


def _check_distinct(ids, counts, message: str):
    """Section 4: the ids of one position (its entries, or its samples) are distinct."""
    if len(ids) > 1:
        pos = np.repeat(np.arange(len(counts)), counts)
        order = np.lexsort((ids, pos))
        p, s = pos[order], ids[order]
        dup = (p[1:] == p[:-1]) & (s[1:] == s[:-1])
        if dup.any():
            raise CacheError(message.format(int(p[1:][dup][0]), int(s[1:][dup][0])))


# ----------------------------------------------------------------------------------------------
# CLI


def summary(cache: Cache) -> dict:
    columns: dict = {}
    for shard in cache.shards:
        for blk in shard.blocks:
            for name, c in blk["columns"].items():
                key = name.split(".")[0]
                acc = columns.setdefault(key, {"storedBytes": 0, "decodedBytes": 0})
                acc["storedBytes"] += c["size"]
                acc["decodedBytes"] += c["count"] * 4
    T = max(cache.tokens, 1)
    for acc in columns.values():
        acc["bytesPerToken"] = acc["storedBytes"] / T
    m = cache.manifest
    return {
        "directory": cache.directory, "manifest": cache.manifest_name,
        "vocabularySize": cache.vocabulary_size, "maxEntries": cache.max_entries,
        "shards": len(cache.shards), "tokens": cache.tokens, "sequences": cache.sequences,
        "entries": cache.entries, "samples": cache.samples,
        "bytes": sum(s.size for s in cache.shards),
        "bytesPerToken": sum(s.size for s in cache.shards) / T,
        "logProbs": sorted({"float32" if s.step_log2 is None else
                            f"quantized (stepLog2 {s.step_log2}, stepMultiplier {s.step_multiplier})"
                            for s in cache.shards}),
        "codecs": sorted({c["codec"] for s in cache.shards for b in s.blocks for c in b["columns"].values()}),
        "fingerprints": m.get("fingerprints"), "capture": m.get("capture"), "columns": columns,
    }


def json_floats(values) -> list:
    """float32 values as JSON numbers, non-finite ones as the strings "inf", "-inf", "nan"
    (as `logitcache dump --json` writes them; strict JSON has no such numbers)."""
    return [x if math.isfinite(x) else "nan" if math.isnan(x) else "inf" if x > 0 else "-inf"
            for x in np.asarray(values, np.float64).tolist()]


def dump(cache: Cache, k: Optional[int] = None) -> dict:
    """Every decoded value, sequence by sequence (plain JSON types; see `json_floats`)."""
    out = []
    for i in range(cache.sequences):
        info, rows = cache.sequence(i, k)
        out.append({
            "documentKey": info.document_key, "documentOffset": info.document_offset, "length": info.length,
            "inputIds": rows.input_ids.tolist(), "nextLogProb": json_floats(rows.next_logprob),
            "logsumexp": json_floats(rows.logsumexp),
            "entryIds": [rows.entries(t)[0].tolist() for t in range(rows.tokens)],
            "entryLogProbs": [json_floats(rows.entries(t)[1]) for t in range(rows.tokens)],
            "sampleIds": [rows.samples(t)[0].tolist() for t in range(rows.tokens)],
            "sampleDraws": [rows.samples(t)[1].tolist() for t in range(rows.tokens)],
        })
    return {"vocabularySize": cache.vocabulary_size, "sequences": out}


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(description="Independent reader of LogitCache caches (Schemas/FORMAT.md).")
    ap.add_argument("cache", help="cache directory, or a manifest file inside one")
    ap.add_argument("--verify", action="store_true",
                    help="check whole-file checksums and decode and check every chunk; reports decode speed")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    ap.add_argument("--dump", action="store_true", help="print every decoded value as JSON")
    ap.add_argument("-k", type=int, default=None, help="with --dump: only the top k entries per token")
    ap.add_argument("--no-schema", action="store_true", help="skip JSON Schema validation")
    args = ap.parse_args(argv)
    try:
        with Cache(args.cache, validate_schema=not args.no_schema) as cache:
            if args.dump:
                json.dump(dump(cache, args.k), sys.stdout, allow_nan=False)
                sys.stdout.write("\n")
                return 0
            info = summary(cache)
            if args.verify:
                t0 = time.perf_counter()
                cache.verify()
                dt = time.perf_counter() - t0
                info["verified"] = True
                info["verifySeconds"] = dt
                t0 = time.perf_counter()
                rows = cache.read()
                dt = time.perf_counter() - t0
                info["decodeSeconds"] = dt
                info["decodeTokensPerSecond"] = rows.tokens / dt if dt > 0 else None
    except CacheError as e:
        if args.json:
            print(json.dumps({"ok": False, "error": str(e)}))
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(dict(info, ok=True), indent=1))
        return 0
    print(f"{info['directory']}: {info['shards']} shards, {info['tokens']} tokens, {info['sequences']} sequences, "
          f"vocabulary {info['vocabularySize']}, K {info['maxEntries']}")
    print(f"  {info['entries']} entries, {info['samples']} samples; log-probs {', '.join(info['logProbs'])}; "
          f"codecs {', '.join(info['codecs'])}")
    print(f"  {info['bytes']} bytes, {info['bytesPerToken']:.2f} bytes/token")
    for name, acc in info["columns"].items():
        print(f"    {name:16s} {acc['bytesPerToken']:9.3f} bytes/token")
    if args.verify:
        speed = info["decodeTokensPerSecond"]
        print(f"  verified: every checksum and value sound ({info['verifySeconds']:.3f} s); "
              f"full decode {info['decodeSeconds']:.3f} s"
              + (f", {speed:,.0f} tokens/s" if speed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
