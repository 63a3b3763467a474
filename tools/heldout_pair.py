#!/usr/bin/env python3
"""A second, held-out evaluation pair for the cache format (#23): a teacher and text from a
different domain than the built-in pair, never used to tune the format, and the cache's
bytes/token against Parquet+zstd on it, printed beside the same measurement on the built-in pair.

The built-in pair is the King James Bible (tools/make_corpus.py), Data/tokenizer.json
(tools/train_tokenizer.py) and Data/teacher (Data/teacher/README.md). This script builds the
held-out pair the same way from other text, into an output directory (default
/tmp/heldout-pair; nothing goes into the repository), in six steps:

 1. Corpus: Debian's `fortunes` package (fortune cookies: modern English quotations, jokes,
    literature, computing lore), installed with `apt-get install -y fortunes` (sudo when not
    root) when /usr/share/games/fortunes is missing. Documents are the individual fortunes:
    each file (sorted by name; the `.dat` indexes, the `.u8` symlinks and any subdirectory such
    as the offensive `off/` are skipped) is split at lines holding only `%`, and each piece is
    stripped of surrounding whitespace and dropped if empty; nothing else is normalised (the
    backspace overstriking of a few files stays). Each fortune goes to a part by a salted hash
    of its text alone, so the split is deterministic and independent of order (exact
    duplicates land in the same part):

        teacher-train  90%   the tokenizer and the teacher are trained on it
        heldout        10%   the teacher pass caches targets for it; it is the eval text too

    Writes teacher-train.jsonl and heldout.jsonl (JSON Lines, {"id": "file/n", "text": ...})
    and corpus-manifest.json (package version, split rule, documents, bytes, SHA-256).
 2. Tokenizer: tokenizer.json, an 8,000-entry byte-level BPE trained on teacher-train by
    train_tokenizer.train() (the function that makes Data/tokenizer.json: Llama 3 split regex,
    ByteLevel, ignore_merges, the same special tokens and post-processor). Checks that
    `logitcache tokenize` accepts it and gives the library's ids on the held-out text.
 3. Teacher: `logitcache train` with Data/teacher/architecture.json (4 layers x 256, vocabulary
    8000, context 256) on teacher-train for --epochs epochs (default 2, like the built-in
    teacher; --tokens is the token count of teacher-train times the epochs), with the built-in
    teacher's settings: --batch 8 --context 256 --lr 2e-3 --warmup 40 --seed 1, --eval on
    heldout. Writes teacher-run/ (a Hugging Face checkpoint plus resume state and log.jsonl).
    Skipped when teacher-run/log.jsonl already records the end of the run; an interrupted run
    resumes. Then `logitcache eval --windows 200` gives both teachers' held-out cross-entropy,
    measured as Data/teacher/README.md measures the built-in one.
 4. Teacher passes over heldout, K = 64, context 256, once `--lossless` (exact rows) and once
    with the default encoding:  logitcache teacher --model M --tokenizer T --corpus C --out OUT
    --context 256 --top-k 64 [--lossless]  (resumable; a finished cache is not recomputed).
 5. tools/cache_vs_parquet.py EXACT ENCODED: its table is printed and its --json result written
    to heldout-vs-parquet.json.
 6. Steps 4-5 on the built-in pair (Data/teacher, Data/tokenizer.json and --builtin-part of
    Data/corpus, default eval), into builtin-vs-parquet.json, and a table of both pairs: ours
    B/token, Parquet+zstd B/token, ratio. summary.json holds every number and step time.

Run from anywhere (a few minutes for the corpus, tokenizer and passes; the teacher training
takes most of the time, about 10-20 minutes on 2 shared cores):

    .venv/bin/python tools/heldout_pair.py --logitcache .build/release/logitcache [--out DIR]

Needs the installed `logitcache` Python package, numpy, pyarrow, zstandard and tokenizers.
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
import make_corpus  # noqa: E402
import train_tokenizer  # noqa: E402

FORTUNES = "/usr/share/games/fortunes"
PARTS = [("teacher-train", 0.90), ("heldout", 0.10)]
SALT = "logitcache-fortunes-split-v1"
K = 64
CONTEXT = 256
EVAL_WINDOWS = 200
TRAIN_SETTINGS = ["--batch", "8", "--context", str(CONTEXT), "--lr", "2e-3", "--warmup", "40", "--seed", "1"]


def log(msg):
    print(msg, flush=True)


def run(cmd, capture=False):
    """Runs `cmd`, echoing it; returns stdout when `capture` (stderr always passes through)."""
    log("$ " + " ".join(cmd))
    r = subprocess.run(cmd, stdout=subprocess.PIPE if capture else None, text=True)
    if r.returncode != 0:
        sys.exit(f"heldout_pair: exit status {r.returncode} from: {' '.join(cmd)}")
    return r.stdout


# 1. Corpus

def ensure_fortunes():
    if os.path.isdir(FORTUNES):
        return
    cmd = ["apt-get", "install", "-y", "fortunes"]
    if os.geteuid() != 0:
        cmd = ["sudo"] + cmd
    run(cmd)
    if not os.path.isdir(FORTUNES):
        sys.exit(f"heldout_pair: {FORTUNES} is still missing after installing `fortunes`")


def fortunes_version():
    r = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "fortunes"], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else "unknown"


def fortune_files():
    names = []
    for name in sorted(os.listdir(FORTUNES)):
        path = os.path.join(FORTUNES, name)
        if name.endswith((".dat", ".u8")) or os.path.islink(path) or not os.path.isfile(path):
            continue
        names.append(name)
    return names


def documents():
    """[(id, text)]: every non-empty fortune, files in name order, fortunes in file order."""
    docs = []
    for name in fortune_files():
        with open(os.path.join(FORTUNES, name), encoding="utf-8") as f:
            pieces, current = [], []
            for line in f.read().split("\n"):
                if line == "%":
                    pieces.append("\n".join(current))
                    current = []
                else:
                    current.append(line)
            pieces.append("\n".join(current))
        n = 0
        for piece in pieces:
            text = piece.strip()
            if text:
                docs.append((f"{name}/{n}", text))
                n += 1
    return docs


def part_of(text):
    return make_corpus.part_of(text, salt=SALT, parts=PARTS)


def build_corpus(out):
    ensure_fortunes()
    docs = documents()
    lines = {name: [] for name, _ in PARTS}
    texts = {name: [] for name, _ in PARTS}
    for doc_id, text in docs:
        p = part_of(text)
        lines[p].append(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False))
        texts[p].append(text)
    manifest = {"source": f"Debian package fortunes {fortunes_version()} ({FORTUNES})",
                "files": fortune_files(),
                "document": "one fortune: a file's text between lines holding only %, stripped",
                "split": {"salt": SALT, "fractions": dict(PARTS),
                          "rule": "sha256(salt:text)[0:8] as big-endian / 2^64 in cumulative fractions"},
                "duplicates": len(docs) - len({t for _, t in docs}),
                "parts": {}}
    for name, ls in lines.items():
        data = ("\n".join(ls) + "\n").encode("utf-8")
        with open(os.path.join(out, f"{name}.jsonl"), "wb") as f:
            f.write(data)
        manifest["parts"][name] = {"file": f"{name}.jsonl", "documents": len(ls), "bytes": len(data),
                                   "text_bytes": sum(len(t.encode()) for t in texts[name]),
                                   "sha256": hashlib.sha256(data).hexdigest()}
    with open(os.path.join(out, "corpus-manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    log(f"fortunes {fortunes_version()}: {len(manifest['files'])} files, {len(docs)} fortunes "
        f"({manifest['duplicates']} exact duplicates)")
    for name, m in manifest["parts"].items():
        log(f"  {name:14s} {m['documents']:6d} fortunes {m['text_bytes']:9d} bytes of text")
    return texts, manifest


# 2. Tokenizer

def stream_tokens(tok, docs):
    """Tokens of the stream `logitcache` builds from `docs`: each document's ids, then end-of-text."""
    return sum(len(e.ids) for e in tok.encode_batch(docs, add_special_tokens=False)) + len(docs)


def build_tokenizer(out, texts, logitcache):
    path = os.path.join(out, "tokenizer.json")
    tok = train_tokenizer.save(train_tokenizer.train(texts["teacher-train"], train_tokenizer.VOCAB_SIZE), path)
    counts = {name: stream_tokens(tok, docs) for name, docs in texts.items()}
    for name, docs in texts.items():
        b = sum(len(d.encode()) for d in docs)
        log(f"  {name:14s} {counts[name]:8d} tokens (with one end-of-text per fortune; "
            f"{b / (counts[name] - len(docs)):.2f} bytes/token)")
    # The Swift tokenizer must accept the file and agree with the library.
    sample = "\n\n".join(texts["heldout"])
    sample_path = os.path.join(out, "tokenizer-check.txt")
    with open(sample_path, "w", encoding="utf-8") as f:
        f.write(sample)
    swift = json.loads(run([logitcache, "tokenize", "--tokenizer", path, "--text-file", sample_path, "--json"],
                           capture=True))["ids"]
    library = tok.encode(sample, add_special_tokens=False).ids
    if swift != library:
        first = next((i for i, (a, b) in enumerate(zip(swift, library)) if a != b), min(len(swift), len(library)))
        sys.exit(f"heldout_pair: `logitcache tokenize` disagrees with the tokenizers library on the held-out "
                 f"text ({len(swift)} vs {len(library)} ids; first difference at id {first})")
    log(f"  {path}: {tok.get_vocab_size()} entries; `logitcache tokenize` gives the library's "
        f"{len(library)} ids on the held-out text")
    return path, counts


# 3. Teacher

def run_finished(run_dir):
    log_path = os.path.join(run_dir, "log.jsonl")
    if not os.path.exists(os.path.join(run_dir, "model.safetensors")) or not os.path.exists(log_path):
        return None
    end = None
    for line in open(log_path):
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue
        if e.get("event") == "end":
            end = e
    return end


def train_teacher(out, tokenizer, counts, epochs, threads, logitcache):
    run_dir = os.path.join(out, "teacher-run")
    n = counts["teacher-train"]
    tokens = int(round(epochs * n, -3))
    log(f"teacher-train: {n} tokens; --tokens {tokens} ({tokens / n:.2f} epochs)")
    end = run_finished(run_dir)
    steps = max(1, tokens // (8 * CONTEXT))  # as `logitcache train --tokens` sets --steps (batch 8)
    if end is not None and end.get("step") != steps:
        sys.exit(f"heldout_pair: {run_dir} finished at step {end.get('step')}, this run wants {steps} steps; "
                 f"remove it or use another --out")
    if end is not None:
        log(f"  {run_dir} is finished (step {end.get('step')}); not retrained")
    else:
        run([logitcache, "train", "--config", os.path.join(ROOT, "Data", "teacher", "architecture.json"),
             "--corpus", os.path.join(out, "teacher-train.jsonl"), "--tokenizer", tokenizer,
             "--out", run_dir, "--tokens", str(tokens)] + TRAIN_SETTINGS +
            ["--eval", os.path.join(out, "heldout.jsonl"), "--eval-every", "100", "--eval-windows", "32",
             "--checkpoint-every", "50", "--threads", str(threads)])
        end = run_finished(run_dir)
        if end is None:
            sys.exit(f"heldout_pair: {run_dir}/log.jsonl records no end of the run")
    if "eval_ce" in end:
        log(f"  end of training: train loss {end['train_loss']:.4f}, eval cross-entropy {end['eval_ce']:.4f} "
            f"nats/token over {end['eval_tokens']} held-out tokens")
    return run_dir, tokens, end


def evaluate(model, tokenizer, corpus, threads, logitcache):
    r = json.loads(run([logitcache, "eval", "--model", model, "--tokenizer", tokenizer, "--corpus", corpus,
                        "--context", str(CONTEXT), "--windows", str(EVAL_WINDOWS), "--threads", str(threads),
                        "--json"], capture=True))
    log(f"  eval cross-entropy {r['crossEntropy']:.4f} nats/token over {r['tokens']} tokens "
        f"(accuracy {r['accuracy']:.3f})")
    return r


# 4-6. Teacher passes and the comparison

def teacher_passes(model, tokenizer, corpus, prefix, threads, logitcache):
    caches = {}
    for name, extra in [("exact", ["--lossless"]), ("encoded", [])]:
        path = f"{prefix}-{name}"
        run([logitcache, "teacher", "--model", model, "--tokenizer", tokenizer, "--corpus", corpus,
             "--out", path, "--context", str(CONTEXT), "--top-k", str(K), "--threads", str(threads)] + extra)
        caches[name] = path
    return caches


def compare(caches, json_path):
    tool = os.path.join(HERE, "cache_vs_parquet.py")
    run([sys.executable, tool, caches["exact"], caches["encoded"]])
    r = json.loads(run([sys.executable, tool, caches["exact"], caches["encoded"], "--json"], capture=True))
    with open(json_path, "w") as f:
        json.dump(r, f, indent=2)
        f.write("\n")
    encoded = next(c for c in r["caches"] if c["path"] == caches["encoded"])
    return {"tokens": r["tokens"], "entriesPerToken": r["entriesPerToken"],
            "oursBytesPerToken": encoded["bytesPerToken"], "parquetZstdBytesPerToken": r["parquetZstdBytesPerToken"],
            "ratio": encoded["vsParquet"], "full": r}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="/tmp/heldout-pair", help="output directory (default /tmp/heldout-pair)")
    ap.add_argument("--logitcache", default=os.path.join(ROOT, ".build", "release", "logitcache"),
                    help="the logitcache executable (default .build/release/logitcache)")
    ap.add_argument("--threads", type=int, default=2, help="threads of every logitcache command (default 2)")
    ap.add_argument("--epochs", type=float, default=2.0, help="teacher training epochs over teacher-train (default 2)")
    ap.add_argument("--builtin-part", default="eval", choices=["eval", "student-train"],
                    help="part of Data/corpus the built-in teacher pass runs over (default eval)")
    a = ap.parse_args()
    out = os.path.abspath(a.out)
    logitcache = os.path.abspath(a.logitcache) if os.sep in a.logitcache else shutil.which(a.logitcache)
    if not logitcache or not os.access(logitcache, os.X_OK):
        sys.exit(f"heldout_pair: {a.logitcache} is not an executable; build it or pass --logitcache")
    os.makedirs(out, exist_ok=True)
    times = {}

    def step(name, f, *args):
        log(f"\n== {name}")
        t0 = time.perf_counter()
        r = f(*args)
        times[name] = time.perf_counter() - t0
        log(f"   ({times[name]:.1f} s)")
        return r

    texts, manifest = step("1 corpus", build_corpus, out)
    tokenizer, counts = step("2 tokenizer", build_tokenizer, out, texts, logitcache)
    teacher, train_tokens, end = step("3 teacher", train_teacher, out, tokenizer, counts, a.epochs, a.threads,
                                      logitcache)
    heldout = os.path.join(out, "heldout.jsonl")
    builtin_model = os.path.join(ROOT, "Data", "teacher")
    builtin_tok = os.path.join(ROOT, "Data", "tokenizer.json")
    builtin_corpus = os.path.join(ROOT, "Data", "corpus", f"{a.builtin_part}.jsonl.zst")
    evals = step("3b eval (both teachers)", lambda: {
        "heldout": evaluate(teacher, tokenizer, heldout, a.threads, logitcache),
        "builtin": evaluate(builtin_model, builtin_tok, os.path.join(ROOT, "Data", "corpus", "eval.jsonl.zst"),
                            a.threads, logitcache)})
    held_caches = step("4 teacher passes (held-out)", teacher_passes, teacher, tokenizer, heldout,
                       os.path.join(out, "heldout"), a.threads, logitcache)
    held = step("5 cache vs parquet (held-out)", compare, held_caches, os.path.join(out, "heldout-vs-parquet.json"))
    if held["tokens"] != counts["heldout"] - 1:  # every position but the stream's last has a next token
        sys.exit(f"heldout_pair: the cache holds {held['tokens']} tokens; the library counts a stream of "
                 f"{counts['heldout']}")
    built_caches = step("6 teacher passes (built-in)", teacher_passes, builtin_model, builtin_tok, builtin_corpus,
                        os.path.join(out, f"builtin-{a.builtin_part}"), a.threads, logitcache)
    built = step("6b cache vs parquet (built-in)", compare, built_caches, os.path.join(out, "builtin-vs-parquet.json"))

    rows = [("built-in", f"KJV {a.builtin_part}", evals["builtin"], built),
            ("held-out", "fortunes heldout", evals["heldout"], held)]
    log(f"\nK = {K}, context {CONTEXT}, vocabulary 8000; teacher eval CE over {EVAL_WINDOWS} windows")
    log(f"{'pair':9s} {'corpus':18s} {'tokens':>8s} {'eval CE':>8s} {'ours B/tok':>11s} "
        f"{'parquet B/tok':>14s} {'ratio':>6s}")
    for pair, corpus, e, r in rows:
        log(f"{pair:9s} {corpus:18s} {r['tokens']:8d} {e['crossEntropy']:8.3f} {r['oursBytesPerToken']:11.1f} "
            f"{r['parquetZstdBytesPerToken']:14.1f} {r['ratio']:5.2f}x")
    log("\nstep times: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))
    summary = {"corpus": manifest, "tokens": counts, "trainTokens": train_tokens, "trainEnd": end,
               "eval": evals, "builtinPart": a.builtin_part,
               "pairs": {"builtin": {k: v for k, v in built.items() if k != "full"},
                         "heldout": {k: v for k, v in held.items() if k != "full"}},
               "stepSeconds": times}
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    log(f"wrote {out}/summary.json")


if __name__ == "__main__":
    main()
