"""Rewrites Swift-written caches in ways FORMAT.md allows (or forbids, with valid checksums), so
the readers can be tested on inputs the Swift writer never produces. Written from the spec."""

import copy
import json
import os
import struct

import lz4.block
import numpy as np
import xxhash
import zstandard

import logitcache.reader as lr


def _codec(data: bytes, codec: str) -> bytes:
    if codec == "none":
        return data
    if codec == "lz4":
        return lz4.block.compress(data, store_size=False)
    return zstandard.ZstdCompressor(level=3, write_content_size=True).compress(data)


def encode_buckets(values, delta: bool, codec: str) -> bytes:
    """The bucket filters of section 6, written from the spec one value at a time: u32 size of
    the coded symbols, the symbols through the codec, then the extra bits (LSB first)."""
    symbols, acc, nbits, prev = bytearray(), 0, 0, 0
    for v in (int(x) for x in values):
        if delta:
            d = (v - prev + 2 ** 31) % 2 ** 32 - 2 ** 31  # signed 32-bit difference
            prev = v
            v = 2 * d if d >= 0 else -2 * d - 1         # zigzag
        if v < 16:
            symbols.append(v)
            continue
        top = v.bit_length() - 1
        symbols.append(16 + 4 * (top - 4) + ((v >> (top - 2)) & 3))
        acc |= (v & ((1 << (top - 2)) - 1)) << nbits
        nbits += top - 2
    coded = _codec(bytes(symbols), codec)
    return struct.pack("<I", len(coded)) + coded + acc.to_bytes((nbits + 7) // 8, "little")


def encode_values(values, width: int, filt: str, codec: str) -> bytes:
    """Section 6 in reverse: uint32 values -> filter -> codec -> stored bytes."""
    v = np.asarray(values, dtype=np.uint32)
    if filt in ("buckets", "delta-buckets"):
        return encode_buckets(v, filt == "delta-buckets", codec)
    planes = np.stack([((v >> np.uint32(8 * p)) & np.uint32(0xFF)).astype(np.uint8) for p in range(width)])
    data = (planes.T if filt == "raw" else planes).tobytes()  # raw: value-major LE; planes: plane-major
    return data if len(v) == 0 else _codec(data, codec)


def write_manifest(path: str, manifest: dict):
    """Sorted keys, checksum last, exactly the tail section 7 describes."""
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    text = json.dumps(body, indent=2, sort_keys=True)
    assert text.endswith("\n}")
    prefix = (text[:-2] + ",\n  ").encode()
    digest = lr.hex64(xxhash.xxh3_64_intdigest(prefix))
    with open(path, "wb") as f:
        f.write(prefix + b'"checksum": "' + digest.encode() + b'"\n}\n')


def refresh_manifest(cache_dir: str):
    """Recomputes every shard entry (bytes, xxh3, totals from the footer) and the totals of
    manifest.json and of every partition manifest."""
    for name in sorted(os.listdir(cache_dir)):
        if name.startswith("manifest") and name.endswith(".json"):
            _refresh(os.path.join(cache_dir, name))


def _refresh(path: str):
    manifest = lr.read_manifest(path, validate_schema=False)
    for entry in manifest["shards"]:
        with open(os.path.join(os.path.dirname(path), entry["file"]), "rb") as f:
            data = f.read()
        F, L = struct.unpack("<QQ", data[-40:-24])  # no checks: the footer may be forged on purpose
        ft = json.loads(data[F:F + L])
        entry.update(bytes=len(data), xxh3=lr.hex64(xxhash.xxh3_64_intdigest(data)),
                     **{key: ft[key] for key in ("tokens", "sequences", "entries", "samples")})
    for key in ("tokens", "sequences", "entries", "samples", "bytes"):
        manifest["totals"][key] = sum(e[key] for e in manifest["shards"])
    write_manifest(path, manifest)


def rebuild_shard(path: str, values=None, encoding=None, footer=None, reverse: bool = False,
                  raw_chunks=None):
    """Lays a shard out again from its decoded chunks.

    values(block, column, uint32[count]) -> new values or None (keep);
    encoding(block, column, chunk dict) -> (width, filter, codec) or None (keep the stored bytes);
    the width is raised to the smallest that holds the chunk's values;
    raw_chunks(block, column, stored bytes) -> replacement stored bytes (checksummed as given);
    footer(dict) edits the footer before it is written; reverse lays chunks in reverse order.
    Every chunk checksum, the footer checksum and the trailer are recomputed."""
    name = os.path.basename(path)
    shard = lr.Shard(path, name, validate_schema=False)
    ft = copy.deepcopy(shard.footer)
    pieces = []  # (chunk dict, stored bytes)
    for bi, block in enumerate(ft["blocks"]):
        for c in block["chunks"]:
            column = c["column"]
            stored = bytes(shard.buffer[c["offset"]:c["offset"] + c["size"]])
            new_values = values(bi, column, shard.column(bi, column).copy()) if values else None
            choice = encoding(bi, column, c) if encoding else None
            if new_values is not None or choice is not None:
                v = shard.column(bi, column) if new_values is None else np.asarray(new_values, np.uint32)
                width, filt, codec = choice or (4, "raw", "none")
                top = int(v.max()) if len(v) else 0
                width = max(width, (top.bit_length() + 7) // 8, 1)  # never narrower than the values
                if len(v) == 0:
                    width, filt, codec = c["width"], "raw", "none"
                stored = encode_values(v, width, filt, codec)
                c.update(count=len(v), width=width, filter=filt, codec=codec)
            if raw_chunks:
                stored = raw_chunks(bi, column, stored)
            c.update(size=len(stored), xxh3=lr.hex64(xxhash.xxh3_64_intdigest(stored)))
            pieces.append((c, stored))
    shard.close()
    out = bytearray(lr.MAGIC + struct.pack("<II", 1, 0))
    for c, stored in (reversed(pieces) if reverse else pieces):
        c["offset"] = len(out)
        out += stored
    if footer:
        footer(ft)
    F = len(out)
    fb = json.dumps(ft, sort_keys=True, separators=(",", ":")).encode()
    out += fb + struct.pack("<QQQII", F, len(fb), xxhash.xxh3_64_intdigest(fb), 1, 0) + lr.MAGIC
    with open(path, "wb") as f:
        f.write(out)


def shard_files(cache_dir: str):
    manifest = lr.read_manifest(os.path.join(cache_dir, "manifest.json"), validate_schema=False)
    return [os.path.join(cache_dir, e["file"]) for e in manifest["shards"]]
