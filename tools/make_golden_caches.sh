#!/usr/bin/env bash
# Writes the golden caches of Tests/Golden: one small cache per format version a reader accepts
# (1.0 ... 1.3), each with `expected.jsonl`, the output of `logitcache dump DIR --json` (every
# decoded value), which the Swift tests (Tests/ShardFormatTests/GoldenCacheTests.swift) and the
# Python tests (python/tests/test_golden.py) compare both readers against.
#
#   tools/make_golden_caches.sh [LOGITCACHE_BINARY [OUT_DIR]]
#
# LOGITCACHE_BINARY defaults to .build/release/logitcache, OUT_DIR to Tests/Golden. The output is
# deterministic (seeded synth, no wall-clock fields in manifests; the writers' lock files, which
# hold a pid, are removed): two runs give byte-identical directories.
#
# Goldens are never regenerated for an existing version: a directory that already exists is not
# touched; it is written again into a scratch directory and compared, and a difference is
# reported (exit status 1). A new format minor version adds a line below and a directory.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [ $# -ge 1 ]; then
    case "$1" in
        /*) BIN="$1" ;;
        */*) BIN="$PWD/$1" ;;
        *) BIN="$(command -v "$1" || echo "$PWD/$1")" ;;
    esac
else
    BIN="$ROOT/.build/release/logitcache"
fi
OUT="${2:-$ROOT/Tests/Golden}"
if [ ! -x "$BIN" ]; then
    echo "make_golden_caches: no logitcache binary at $BIN (build it, or pass its path)" >&2
    exit 1
fi
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
# Small settings: 64 tokens in 3 sequences (25, 25, 14) and 2 blocks (40, 24), so a sequence
# crosses a block boundary; K = 4 entries and 4 sampled draws per position.
COMMON=(--vocab 1000 --tokens 64 --seq-len 25 --k 4 --sampled --draws 4 --block-tokens 40 --seed 3)
NAMES=(format-1.0 format-1.1 format-1.2 format-1.3 format-1.3-topp-lz4 format-1.4 format-1.0-historical)
# synth_args NAME: the synth arguments of golden NAME, after the output directory. (A function,
# not an associative array: macOS's bash 3.2 has none.)
synth_args() {
    case "$1" in
        format-1.0) echo --format-minor 0 "${COMMON[@]}" ;;
        format-1.1) echo --format-minor 1 "${COMMON[@]}" ;;
        format-1.2) echo --format-minor 2 "${COMMON[@]}" ;;
        format-1.3) echo --format-minor 3 "${COMMON[@]}" ;;
        format-1.4) echo --format-minor 4 "${COMMON[@]}" ;;
        # What only 1.2/1.3 can store: a step M·2^-N with M != 1 (3·2^-7), here with next-token
        # links (1.3); also top-p (variable entry counts, 1 to 8), K = 8, no
        # samples, lz4.
        format-1.3-topp-lz4) echo --format-minor 3 --vocab 1000 --tokens 64 --seq-len 25 --k 8 --top-p 0.8 \
            --step-log2 7 --step-multiplier 3 --codec lz4 --block-tokens 40 --seed 4 ;;
        # The cache the format 1.0 writer made (commit 4bbb930); today's writer at 1.0 writes it
        # bit for bit (FormatCompatibilityTests holds it to that).
        format-1.0-historical) echo --format-minor 0 --vocab 1000 --tokens 600 --seq-len 200 --k 8 --sampled \
            --draws 6 --block-tokens 128 --seed 3 ;;
        *) echo "make_golden_caches: unknown golden $1" >&2; exit 1 ;;
    esac
}

SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT

# write_golden NAME DIR: writes golden NAME into the (absent) directory DIR.
write_golden() {
    local name="$1" dir="$2"
    local args
    args="$(synth_args "$name")"
    # shellcheck disable=SC2086  # the arguments are words without spaces
    "$BIN" synth "$dir" $args >/dev/null
    rm -f "$dir"/.lock.*  # writer locks: a pid and host name, not part of the cache
    "$BIN" verify "$dir" >/dev/null
    "$BIN" dump "$dir" --json >"$dir/expected.jsonl"
}

status=0
for name in "${NAMES[@]}"; do
    if [ -e "$OUT/$name" ]; then
        write_golden "$name" "$SCRATCH/$name"
        if diff -r "$SCRATCH/$name" "$OUT/$name" >/dev/null; then
            echo "$name: exists, unchanged"
        else
            echo "$name: exists and this binary writes it differently; left as it is (goldens are never regenerated)" >&2
            status=1
        fi
    else
        write_golden "$name" "$OUT/$name"
        echo "$name: written ($(cat "$OUT/$name"/* | wc -c | tr -d ' ') bytes)"
    fi
done
exit "$status"
