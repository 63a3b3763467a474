"""`python -m logitcache` (console script `logitcache-py`): the package's commands.

    python -m logitcache export-parquet CACHE OUT.parquet [--k K]
    python -m logitcache import-parquet IN.parquet CACHE [--vocabulary-size V --teacher-fingerprint ...]
    python -m logitcache import-vllm PROMPT_LOGPROBS.jsonl CACHE --vocabulary-size V --tokenizer tokenizer.json

The Swift `logitcache` command runs the CPU teacher pass, the loader, training and sweeps; these
are the commands that need Python's ecosystem (pyarrow, vLLM's output). Errors print one line
naming the file and what is wrong, and exit with status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import List, Optional

from .reader import CacheError


class _Progress:
    """A progress line on stderr, at most every half second, and a final one."""

    def __init__(self, what: str):
        self.what, self.start, self.last = what, time.monotonic(), 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < 0.5 and done < total:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        sys.stderr.write(f"\r{self.what}: {done}/{total} ({rate:,.0f}/s)")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _fingerprints(args) -> Optional[dict]:
    given = [args.teacher_fingerprint, args.tokenizer_fingerprint, args.corpus_fingerprint]
    if all(v is None for v in given):
        return None
    if any(v is None for v in given):
        raise CacheError("give --teacher-fingerprint, --tokenizer-fingerprint and --corpus-fingerprint together")
    return {"teacher": given[0], "tokenizer": given[1], "corpus": given[2]}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m logitcache", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("export-parquet", help="a cache as a Parquet file (logitcache.parquet's schema)")
    e.add_argument("cache", help="cache directory or fsspec URL")
    e.add_argument("out", help="Parquet file to write")
    e.add_argument("--k", type=int, help="entries per position (default K)")
    e.add_argument("--compression", default="zstd")

    i = sub.add_parser("import-parquet", help="a Parquet file of the export schema as a cache")
    i.add_argument("parquet")
    i.add_argument("cache", help="cache directory to write (resumed when a run was killed)")
    i.add_argument("--vocabulary-size", type=int, help="needed when the file has no logitcache manifest")
    i.add_argument("--teacher-fingerprint")
    i.add_argument("--tokenizer-fingerprint")
    i.add_argument("--corpus-fingerprint")
    i.add_argument("--partition", default="0/1", help="i/N: write sequences s with s %% N == i")

    v = sub.add_parser("import-vllm", help="vLLM prompt_logprobs output (JSON Lines) as a cache")
    v.add_argument("jsonl")
    v.add_argument("cache")
    v.add_argument("--vocabulary-size", type=int, required=True, help="the teacher's vocabulary size V")
    group = v.add_mutually_exclusive_group(required=True)
    group.add_argument("--tokenizer", help="the teacher's tokenizer.json (its fingerprint is recorded)")
    group.add_argument("--tokenizer-fingerprint", help="the fingerprint to record instead")
    v.add_argument("--teacher", default="unknown", help="model name, recorded in the manifest")
    v.add_argument("--top-n", type=int, help="N of prompt_logprobs=N (needed when entries carry no rank)")

    args = p.parse_args(argv)
    try:
        if args.command == "export-parquet":
            from .parquet import export_parquet
            info = export_parquet(args.cache, args.out, k=args.k, compression=args.compression,
                                  progress=_Progress("rows"))
            print(json.dumps(info))
        elif args.command == "import-parquet":
            from .parquet import import_parquet
            part, _, count = args.partition.partition("/")
            m = import_parquet(args.parquet, args.cache, vocabulary_size=args.vocabulary_size,
                               fingerprints=_fingerprints(args), partition=int(part), partition_count=int(count or 1),
                               progress=_Progress("rows"))
            print(json.dumps(m["totals"]))
        else:
            from .vllm import import_vllm, tokenizer_file_fingerprint
            fp = args.tokenizer_fingerprint or tokenizer_file_fingerprint(args.tokenizer)
            m = import_vllm(args.jsonl, args.cache, vocabulary_size=args.vocabulary_size, tokenizer_fingerprint=fp,
                            teacher=args.teacher, top_n=args.top_n, progress=_Progress("prompts"))
            print(json.dumps(m["totals"]))
    except (CacheError, ValueError, OSError) as err:
        print(f"logitcache {args.command}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
