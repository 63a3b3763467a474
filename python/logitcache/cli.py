"""`python -m logitcache` (console script `logitcache-py`): the package's commands.

    python -m logitcache export-parquet CACHE OUT.parquet [--k K]
    python -m logitcache import-parquet IN.parquet CACHE [--vocabulary-size V --teacher-fingerprint ...]
    python -m logitcache import-vllm PROMPT_LOGPROBS.jsonl CACHE --vocabulary-size V --tokenizer tokenizer.json
    python -m logitcache capture --model DIR --corpus FILES... --out CACHE [--device cuda] [--top-k 64]

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

    c = sub.add_parser("capture", help="run a transformers teacher over a corpus into a cache (any device)")
    c.add_argument("--model", required=True, help="transformers causal-LM directory")
    c.add_argument("--tokenizer", help="tokenizer directory or file (default: the model's)")
    c.add_argument("--corpus", nargs="+", required=True, help="corpus files, directories or globs")
    c.add_argument("--out", required=True, help="cache directory (a killed run resumes)")
    c.add_argument("--context", type=int, default=512)
    c.add_argument("--top-k", type=int, default=64, help="K: head entries per position")
    c.add_argument("--top-p", type=float, help="top-p policy: the shortest prefix reaching p, at most K")
    c.add_argument("--sampled", type=int, metavar="DRAWS", help="sampled policy: draws per position")
    c.add_argument("--head-tail", type=int, metavar="DRAWS", help="top-K head plus draws from the tail")
    c.add_argument("--top-k-sampled", type=int, metavar="DRAWS", help="top-K head plus draws from the whole distribution")
    c.add_argument("--temperature", type=float, default=1.0)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    c.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    c.add_argument("--device-map", help="transformers device_map for multi-GPU models (e.g. auto)")
    c.add_argument("--partition", help="i/N (default: Slurm array / Kubernetes index from the environment, else 0/1)")
    c.add_argument("--partition-count", type=int, help="parts N when the index comes from JOB_COMPLETION_INDEX (Kubernetes)")
    c.add_argument("--windows-per-batch", type=int, default=4)
    c.add_argument("--vocab-tile", type=int, default=8192, help="vocabulary rows per LM-head tile")
    c.add_argument("--eot-token", help="the token that joins documents (default: found in the tokenizer)")
    c.add_argument("--text-field", default="text", help="JSON Lines field holding a document's text")
    c.add_argument("--blank-line-documents", action="store_true", help="plain text: documents end at blank lines")
    c.add_argument("--benchmark", type=int, metavar="WINDOWS",
                   help="capture this many windows into --out and report tokens/s and the share outside the forward")

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
        elif args.command == "capture":
            return _capture(args)
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


def _capture(args) -> int:
    from .capture import Policy, capture
    chosen = [n for n in ("top_p", "sampled", "head_tail", "top_k_sampled") if getattr(args, n) is not None]
    if len(chosen) > 1:
        raise ValueError(f"choose one policy, not {', '.join('--' + n.replace('_', '-') for n in chosen)}")
    name = {"top_p": "top-p", "sampled": "sampled", "head_tail": "head-tail", "top_k_sampled": "top-k+sampled"}.get(
        chosen[0] if chosen else "", "top-k")
    draws = next((getattr(args, n) for n in ("sampled", "head_tail", "top_k_sampled") if getattr(args, n) is not None), 0)
    policy = Policy(name, 0 if name == "sampled" else args.top_k, args.top_p, draws)
    line = lambda text: print(f"\r{text}", end="", file=sys.stderr, flush=True)  # noqa: E731
    r = capture(args.model, args.corpus, args.out, context=args.context, policy=policy, temperature=args.temperature,
                seed=args.seed, device=args.device, dtype=args.dtype, device_map=args.device_map,
                partition=args.partition, partition_count=args.partition_count, windows_per_batch=args.windows_per_batch, vocab_tile=args.vocab_tile,
                tokenizer=args.tokenizer, eot_token=args.eot_token, text_field=args.text_field,
                blank_line_documents=args.blank_line_documents, window_limit=args.benchmark,
                benchmark=args.benchmark is not None, progress=line)
    print(file=sys.stderr)
    report = {"tokens": r.tokens, "seconds": round(r.seconds, 3), "tokens_per_second": round(r.tokens_per_second, 1),
              "outside_forward_share": round(r.outside_forward_share, 4), "mean_captured_mass": round(r.mean_captured_mass, 6),
              "model_forward_tokens_per_second": (round(r.tokens / r.model_forward_seconds, 1)
                                                  if r.model_forward_seconds else None),
              "device": r.manifest.get("origin", {}).get("device")}
    print(json.dumps(report if args.benchmark else dict(report, totals=r.manifest["totals"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
