"""A cache as plain Parquet, and Parquet back into a cache.

`export_parquet(cache, path)` writes one row per cached position, readable by any Parquet reader
(`pyarrow`, `pandas`, `datasets.load_dataset("parquet", data_files=path)`). `import_parquet(path,
directory)` writes a cache from a file of that schema: the cache's own export, or one a user made
from another teacher. Export then import gives a cache whose decoded values equal the original's.

Schema (`SCHEMA`), one row per position, rows of a sequence consecutive in position order:

    sequence            int64          sequence index (rows of one sequence are contiguous)
    position            int32          position inside the sequence, 0, 1, 2, ...
    document_key        string         32 hex digits: the 128-bit key of the sequence's document
    document_offset     int64          token offset of the sequence's first position in its document
    input_id            int32          the input token
    topk_ids            list<int32>    the teacher's top entries, most probable first
    topk_logprobs       list<float>    their log-probabilities (nats), descending
    logsumexp           float          full-vocabulary logsumexp of logits / temperature
    next_token_logprob  float          exact teacher log-prob of the real next token
    sample_ids          list<int32>    (caches with samples only) distinct sampled ids
    sample_draws        list<uint32>   their draw counts

The file's key-value metadata holds `logitcache.manifest` (the exported cache's manifest, JSON),
which the import reuses for vocabulary size, fingerprints, capture settings and encoding. A file
without it needs those as arguments.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np

from ._cache import Cache, PathLike
from ._writer import CacheWriter
from .reader import CacheError

MANIFEST_KEY = b"logitcache.manifest"
ROWS_PER_BATCH = 65536  # rows per record batch and row group: bounded memory whatever the cache size


def _pa():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("Parquet export and import need pyarrow: pip install 'logitcache[parquet]'") from None
    return pa, pq


def schema(samples: bool):
    """The Arrow schema of an export (`samples`: with the two sample columns)."""
    pa, _ = _pa()
    fields = [
        pa.field("sequence", pa.int64(), nullable=False), pa.field("position", pa.int32(), nullable=False),
        pa.field("document_key", pa.string(), nullable=False), pa.field("document_offset", pa.int64(), nullable=False),
        pa.field("input_id", pa.int32(), nullable=False),
        pa.field("topk_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("topk_logprobs", pa.list_(pa.float32()), nullable=False),
        pa.field("logsumexp", pa.float32(), nullable=False), pa.field("next_token_logprob", pa.float32(), nullable=False),
    ]
    if samples:
        fields += [pa.field("sample_ids", pa.list_(pa.int32()), nullable=False),
                   pa.field("sample_draws", pa.list_(pa.uint32()), nullable=False)]
    return pa.schema(fields)


def _list_array(pa, offsets: np.ndarray, values: np.ndarray):
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values))


def _export_batches(cache: Cache, k: int, samples: bool) -> Iterator[Dict[str, Any]]:
    """Column arrays of consecutive whole sequences, about ROWS_PER_BATCH rows each."""
    s = 0
    while s < cache.sequences:
        first = cache.sequence(s)
        seqs = [first]
        rows = first.length
        while s + len(seqs) < cache.sequences and rows < ROWS_PER_BATCH:
            q = cache.sequence(s + len(seqs))
            seqs.append(q)
            rows += q.length
        start, stop = first.start, seqs[-1].start + seqs[-1].length
        r = cache.read(start, stop, k=k)
        lengths = np.array([q.length for q in seqs], np.int64)
        out = {
            "sequence": np.repeat(np.arange(s, s + len(seqs), dtype=np.int64), lengths),
            "position": np.concatenate([np.arange(n, dtype=np.int32) for n in lengths]) if rows else np.zeros(0, np.int32),
            "document_key": np.repeat(np.array([q.document_key for q in seqs], dtype=object), lengths),
            "document_offset": np.repeat(np.array([q.document_offset for q in seqs], np.int64), lengths),
            "input_id": r.input_ids, "logsumexp": r.logsumexps, "next_token_logprob": r.next_token_logprobs,
            "entry_counts": r.entry_counts, "entry_ids": r.entry_ids, "entry_logprobs": r.entry_logprobs,
        }
        if samples:
            out["samples"] = cache.read_samples(start, stop)
        yield out
        s += len(seqs)


def export_parquet(cache: Any, path: PathLike, k: Optional[int] = None, compression: str = "zstd",
                   progress: Optional[Any] = None) -> Dict[str, int]:
    """Writes `cache` (a `Cache` or anything `Cache()` opens) to the Parquet file `path`, with the
    first `k` <= K entries per position (default K). The file is written beside `path` and renamed
    into place when complete. Returns {"rows", "sequences", "bytes"}. `progress(rows_done, total)`
    is called after each row group."""
    pa, pq = _pa()
    owned = not isinstance(cache, Cache)
    c = Cache(cache) if owned else cache
    try:
        k = c.max_entries if k is None else int(k)
        if not 0 <= k <= c.max_entries:
            raise CacheError(f"export: k = {k} outside 0...K = {c.max_entries}")
        samples = c.max_samples > 0
        sch = schema(samples).with_metadata({MANIFEST_KEY: json.dumps(c.manifest, sort_keys=True).encode()})
        path = os.fspath(path)
        tmp = f"{path}.{os.getpid()}.tmp"
        done = 0
        try:
            with pq.ParquetWriter(tmp, sch, compression=compression) as w:
                for b in _export_batches(c, k, samples):
                    counts = b["entry_counts"].astype(np.int64)
                    mask = np.arange(k)[None, :] < counts[:, None]
                    offsets = np.concatenate([[0], np.cumsum(counts)])
                    cols = [pa.array(b["sequence"]), pa.array(b["position"]), pa.array(b["document_key"], pa.string()),
                            pa.array(b["document_offset"]), pa.array(b["input_id"]),
                            _list_array(pa, offsets, b["entry_ids"][mask]),
                            _list_array(pa, offsets, b["entry_logprobs"][mask]),
                            pa.array(b["logsumexp"]), pa.array(b["next_token_logprob"])]
                    if samples:
                        sm = b["samples"]
                        cols += [_list_array(pa, sm.offsets, sm.ids), _list_array(pa, sm.offsets, sm.draws)]
                    w.write_table(pa.Table.from_arrays(cols, schema=sch), row_group_size=ROWS_PER_BATCH)
                    done += len(b["input_id"])
                    if progress is not None:
                        progress(done, c.tokens)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return {"rows": done, "sequences": c.sequences, "bytes": os.path.getsize(path)}
    finally:
        if owned:
            c.close()


# -- import

def _writer_settings(manifest: Optional[Mapping[str, Any]], vocabulary_size: Optional[int],
                     fingerprints: Optional[Mapping[str, str]], capture: Optional[Mapping[str, Any]],
                     max_entries: int, max_samples: int, path: str) -> Dict[str, Any]:
    """CacheWriter arguments: the exported manifest's, overridden by explicit arguments."""
    m = manifest or {}
    settings: Dict[str, Any] = {}
    if "encoding" in m:
        e = m["encoding"]
        settings.update(codec=e["codec"], block_tokens=e["blockTokens"], log_probs=e["logProbs"])
        if e["codec"] == "zstd":
            settings["level"] = e["level"]
        if e["logProbs"] == "quantized":
            settings.update(step_log2=e["stepLog2"], step_multiplier=e.get("stepMultiplier", 1))
    V = vocabulary_size if vocabulary_size is not None else m.get("vocabularySize")
    fp = fingerprints if fingerprints is not None else m.get("fingerprints")
    cap = dict(capture) if capture is not None else m.get("capture")
    missing = [n for n, v in (("vocabulary_size", V), ("fingerprints", fp)) if v is None]
    if missing:
        raise CacheError(f"{path}: no logitcache manifest in the file's metadata; pass {' and '.join(missing)}")
    if cap is None:
        cap = {"policy": "top-k+sampled" if max_samples else "top-k", "k": max_entries, "temperature": 1.0}
        if max_samples:
            cap["samples"] = max_samples
    settings.update(vocabulary_size=int(V), fingerprints=dict(fp), capture=cap)
    return settings


def _sequences(pf, path: str, samples: bool) -> Iterator[Tuple[int, str, int, Dict[str, list]]]:
    """(sequence, document key, document offset, columns as Python lists) of each sequence, in
    file order, checking that rows of a sequence are contiguous with positions 0, 1, 2, ..."""
    names = ["sequence", "position", "document_key", "document_offset", "input_id", "topk_ids", "topk_logprobs",
             "logsumexp", "next_token_logprob"] + (["sample_ids", "sample_draws"] if samples else [])
    current: Optional[Tuple[int, str, int]] = None
    cols: Dict[str, list] = {}
    seen = set()
    row = 0
    for batch in pf.iter_batches(batch_size=ROWS_PER_BATCH, columns=names):
        data = batch.to_pydict()
        for i in range(batch.num_rows):
            seq, pos = data["sequence"][i], data["position"][i]
            if current is None or seq != current[0]:
                if current is not None:
                    yield (*current, cols)
                if seq in seen:
                    raise CacheError(f"{path}: row {row}: sequence {seq} appears again after other sequences "
                                     "(rows of a sequence must be contiguous)")
                seen.add(seq)
                current = (seq, data["document_key"][i], data["document_offset"][i])
                cols = {n: [] for n in names[4:]}
            expected = len(cols["input_id"])
            if pos != expected:
                raise CacheError(f"{path}: row {row}: sequence {seq} position {pos}, expected {expected} "
                                 "(positions must run 0, 1, 2, ... in file order)")
            for n in names[4:]:
                cols[n].append(data[n][i])
            row += 1
    if current is not None:
        yield (*current, cols)


def _ragged(rows: List[list], width: int, dtype, fill) -> np.ndarray:
    out = np.full((len(rows), width), fill, dtype)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def import_parquet(path: PathLike, directory: PathLike, *, vocabulary_size: Optional[int] = None,
                   fingerprints: Optional[Mapping[str, str]] = None, capture: Optional[Mapping[str, Any]] = None,
                   partition: int = 0, partition_count: int = 1, progress: Optional[Any] = None,
                   **writer_options: Any) -> dict:
    """Writes the cache `directory` from a Parquet file of the export schema and returns its
    partition manifest. Settings come from the file's `logitcache.manifest` metadata, or from
    the arguments (`vocabulary_size`, `fingerprints`; `capture` defaults to top-k with K the
    longest `topk_ids` list); `writer_options` go to `CacheWriter`. With `partition` of
    `partition_count`, only sequences s with s % partition_count == partition are written.

    Resumable: a rerun after a kill keeps the shards already published and continues. Raises
    CacheError naming the file and row for a file that breaks the schema's rules, and the
    writer's errors (ids >= V, log-probs not descending, ...) naming the sequence."""
    pa, pq = _pa()
    path, directory = os.fspath(path), os.fspath(directory)
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as e:
        raise CacheError(f"{path}: not a readable Parquet file ({e})") from None
    have = set(pf.schema_arrow.names)
    need = set(schema(False).names)
    if not need <= have:
        raise CacheError(f"{path}: missing columns {sorted(need - have)} (see logitcache.parquet's schema)")
    samples = "sample_ids" in have
    if samples != ("sample_draws" in have):
        raise CacheError(f"{path}: sample_ids and sample_draws go together")
    meta = pf.schema_arrow.metadata or {}
    manifest = json.loads(meta[MANIFEST_KEY]) if MANIFEST_KEY in meta else None
    K = S = 0
    if manifest is None or capture is not None:
        # The longest lists, one record batch at a time (memory stays bounded).
        for batch in pf.iter_batches(batch_size=ROWS_PER_BATCH, columns=["topk_ids"] + (["sample_ids"] if samples else [])):
            K = max(K, int(pa.compute.max(pa.compute.list_value_length(batch.column(0))).as_py() or 0))
            if samples:
                S = max(S, int(pa.compute.max(pa.compute.list_value_length(batch.column(1))).as_py() or 0))
    settings = _writer_settings(manifest, vocabulary_size, fingerprints, capture, K, S, path)
    settings.update(writer_options)
    origin = {"tool": "logitcache import-parquet", "teacher": os.path.basename(path)}
    if manifest is not None and manifest.get("origin"):
        origin["note"] = f"exported from a cache written by {manifest['origin'].get('tool', 'an unknown tool')}"
    K = int(settings["capture"].get("k", K))
    with CacheWriter(directory, partition=partition, partition_count=partition_count, origin=origin, **settings) as w:
        skip = w.resumed_sequences
        written = done = 0
        for seq, key, offset, cols in _sequences(pf, path, samples):
            done += len(cols["input_id"])
            if seq % partition_count != partition:
                continue
            written += 1
            if written <= skip:
                continue
            try:
                w.begin_sequence(key, offset)
                w.append(cols["input_id"], cols["next_token_logprob"], cols["logsumexp"],
                         _ragged(cols["topk_ids"], K, np.int32, -1), _ragged(cols["topk_logprobs"], K, np.float32, 0.0),
                         entry_counts=np.array([len(r) for r in cols["topk_ids"]], np.int32),
                         **({} if not samples else dict(
                             sample_ids=_ragged(cols["sample_ids"], max(map(len, cols["sample_ids"]), default=0), np.int32, -1),
                             sample_draws=_ragged(cols["sample_draws"], max(map(len, cols["sample_draws"]), default=0), np.int64, 0))))
                w.end_sequence()
            except (CacheError, ValueError) as e:
                raise CacheError(f"{path}: sequence {seq}: {e}") from None
            if progress is not None:
                progress(done, pf.metadata.num_rows)
        return w.finish()
