"""tools/format_floor.py: stored bytes against models of the same values, and the generator oracle."""

import json
import subprocess
import sys

import pytest

from tools_testing import synth
import format_floor
import logitcache.reader as lr


def test_reports_every_column_group_and_replays_the_generator(lc_bin, tmp_path):
    path = synth(lc_bin, tmp_path / "c", "--seed", 4, "--vocab", 2000, "--k", 16, "--tokens", 2048, "--seq-len", 512)
    proc = subprocess.run([sys.executable, format_floor.__file__, path, "--parquet", "100", "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    with lr.Cache(path) as cache:
        # The groups' bytes are the chunks' bytes: the shard file less its framing and footer.
        total = r["stored_total_bytes_per_token"] * 2048
        assert 0.8 * cache.manifest["totals"]["bytes"] < total < cache.manifest["totals"]["bytes"]
    assert r["oracle_tokens"] == 2048 and 0 < r["oracle_ids_bytes_per_token"] < r["stored_bytes_per_token"]["entry_ids"] + 8
    assert 0 < r["logprob_gaps_given_rank_bytes_per_token"] <= r["stored_bytes_per_token"]["entry_logprobs"] + 1
    assert r["floor_vs_parquet"] == pytest.approx(r["floor_bytes_per_token"] / 100)


def test_the_oracle_refuses_a_cache_of_another_seed(lc_bin, tmp_path):
    path = synth(lc_bin, tmp_path / "c", "--seed", 4, "--vocab", 2000, "--k", 16, "--tokens", 600, "--seq-len", 300)
    with lr.Cache(path) as cache:
        bits, covered = format_floor.oracle_id_bits(cache, format_floor.GeneratorState(2000, 4), 600)
        assert covered == 600 and bits > 0
        with pytest.raises(SystemExit, match="first input id"):
            format_floor.oracle_id_bits(cache, format_floor.GeneratorState(2000, 5), 600)
