#!/usr/bin/env python3
"""Builds LogitCache's built-in default corpus from the King James Bible (public domain), as
printed in full by Debian's `bible-kjv` package (`apt-get install bible-kjv`).

One document per chapter (1,189): its title line ("Genesis 1") and then one verse per line,
verse numbers dropped. Each chapter goes to a part by a hash of its title alone, so the split
is deterministic and does not depend on order:

    teacher-train  50%   the teacher model and the tokenizer are trained on it
    student-train  40%   the teacher pass caches targets for it; students train on it
    eval           10%   held out for everyone

Writes Data/corpus/<part>.jsonl.zst (JSON Lines, {"id": title, "text": chapter}, zstd level 19)
and Data/corpus/manifest.json (document, byte and token-free counts and the SHA-256 of each
part's uncompressed bytes). Run:  python3 tools/make_corpus.py [--check]
With --check it rebuilds in memory and fails if the committed files differ in content.
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "Data", "corpus")
PARTS = [("teacher-train", 0.50), ("student-train", 0.40), ("eval", 0.10)]
SALT = "logitcache-kjv-split-v1"


def bible_text():
    exe = shutil.which("bible")
    if exe is None:
        sys.exit("make_corpus: the `bible` command is missing; install Debian's bible-kjv package "
                 "(apt-get install bible-kjv)")
    env = dict(os.environ, COLUMNS="1000000")  # no line wrapping
    return subprocess.run([exe, "gen1:1-rev22:21"], capture_output=True, text=True, check=True,
                          env=env).stdout


def chapters(text):
    """[(title, [verse, ...])] in book order."""
    out = []
    header = re.compile(r"^(\S.*) (\d+)$")
    verse = re.compile(r"^\s+(\d+) (.*)$")
    for line in text.splitlines():
        if not line.strip():
            continue
        m = verse.match(line)
        if m:
            if not out:
                sys.exit(f"make_corpus: verse before any chapter title: {line!r}")
            out[-1][1].append(m.group(2).strip())
        elif header.match(line) and not line.startswith(" "):
            out.append((line.strip(), []))
        elif out and out[-1][1]:
            out[-1][1][-1] += " " + line.strip()  # a wrapped verse continues
        else:
            sys.exit(f"make_corpus: unexpected line: {line!r}")
    return out


def part_of(title, salt=SALT, parts=PARTS):
    """The part a document goes to: sha256(salt:title)[0:8] as big-endian / 2^64 in cumulative
    fractions (tools/heldout_pair.py splits its corpus by the same rule with its own salt)."""
    h = int.from_bytes(hashlib.sha256(f"{salt}:{title}".encode()).digest()[:8], "big")
    u = h / 2**64
    cumulative = 0.0
    for name, fraction in parts:
        cumulative += fraction
        if u < cumulative:
            return name
    return parts[-1][0]


def compress(data):
    try:
        import zstandard
        return zstandard.ZstdCompressor(level=19).compress(data)
    except ImportError:
        return subprocess.run(["zstd", "-19", "-q", "-c"], input=data, capture_output=True,
                              check=True).stdout


def decompress(data):
    try:
        import zstandard
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=1 << 30)
    except ImportError:
        return subprocess.run(["zstd", "-d", "-q", "-c"], input=data, capture_output=True,
                              check=True).stdout


def build():
    chs = chapters(bible_text())
    if len(chs) != 1189:
        sys.exit(f"make_corpus: expected 1189 chapters, found {len(chs)}")
    lines = {name: [] for name, _ in PARTS}
    for title, verses in chs:
        doc = {"id": title, "text": title + "\n" + "\n".join(verses) + "\n"}
        lines[part_of(title)].append(json.dumps(doc, ensure_ascii=False))
    return {name: ("\n".join(ls) + "\n").encode("utf-8") for name, ls in lines.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true", help="verify the committed files instead of writing")
    a = ap.parse_args()
    parts = build()
    manifest = {"source": "King James Bible, Debian package bible-kjv (public domain)",
                "document": "one chapter: title line, then one verse per line",
                "split": {"salt": SALT, "fractions": dict(PARTS),
                          "rule": "sha256(salt:title)[0:8] as big-endian / 2^64 in cumulative fractions"},
                "parts": {}}
    for name, data in parts.items():
        manifest["parts"][name] = {"file": f"{name}.jsonl.zst", "documents": data.count(b"\n"),
                                   "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    if a.check:
        for name, data in parts.items():
            path = os.path.join(OUT, f"{name}.jsonl.zst")
            if decompress(open(path, "rb").read()) != data:
                sys.exit(f"make_corpus --check: {path} differs from a fresh build")
        print("make_corpus --check: committed corpus matches")
        return
    os.makedirs(OUT, exist_ok=True)
    for name, data in parts.items():
        with open(os.path.join(OUT, f"{name}.jsonl.zst"), "wb") as f:
            f.write(compress(data))
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    total = sum(len(d) for d in parts.values())
    for name, m in manifest["parts"].items():
        print(f"{name:14s} {m['documents']:5d} chapters {m['bytes']:9d} bytes")
    print(f"total {total} bytes of text")


if __name__ == "__main__":
    main()
