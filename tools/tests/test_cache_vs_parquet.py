"""tools/cache_vs_parquet.py: real-cache bytes/token against the Parquet+zstd baseline."""

import os

import pytest

from tools_testing import synth

pytest.importorskip("pyarrow")
import cache_vs_parquet  # noqa: E402
import logitcache.reader as lr  # noqa: E402


def test_compares_encodings_of_the_same_rows_against_parquet(lc_bin, tmp_path):
    args = ["--seed", 11, "--vocab", 32000, "--k", 64, "--tokens", 3000, "--seq-len", 300]
    exact = synth(lc_bin, tmp_path / "exact", *args, "--lossless")
    default = synth(lc_bin, tmp_path / "default", *args)
    r = cache_vs_parquet.compare(exact, [default])
    assert r["tokens"] == 3000 and r["entriesPerToken"] == 64
    assert r["rawInt32Float16BytesPerToken"] == 4 * 3 + 6 * 64
    by_path = {c["path"]: c for c in r["caches"]}
    with lr.Cache(default) as c:
        assert by_path[default]["bytesPerToken"] == c.manifest["totals"]["bytes"] / 3000
    # Quantised log-probs are smaller than exact ones, and Parquet lies between raw and ours.
    assert by_path[default]["bytesPerToken"] < by_path[exact]["bytesPerToken"]
    assert by_path[default]["bytesPerToken"] < r["parquetZstdBytesPerToken"] < r["rawInt32Float16BytesPerToken"]
    assert by_path[default]["vsParquet"] == pytest.approx(by_path[default]["bytesPerToken"] / r["parquetZstdBytesPerToken"])


def test_refuses_a_quantised_exact_cache_and_other_tokens(lc_bin, tmp_path):
    a = synth(lc_bin, tmp_path / "a", "--seed", 1, "--vocab", 1000, "--k", 8, "--tokens", 500)
    with pytest.raises(SystemExit, match="quantised"):
        cache_vs_parquet.compare(a, [])
    exact = synth(lc_bin, tmp_path / "exact", "--seed", 1, "--vocab", 1000, "--k", 8, "--tokens", 500, "--lossless")
    other = synth(lc_bin, tmp_path / "other", "--seed", 2, "--vocab", 1000, "--k", 8, "--tokens", 500)
    with pytest.raises(SystemExit, match="other tokens"):
        cache_vs_parquet.compare(exact, [other])
