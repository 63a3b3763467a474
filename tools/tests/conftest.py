"""Fixtures of the tools scripts' tests: the Swift binary. Helpers are in tools_testing.py;
the Python package (`logitcache`) is the installed one (tools/setup installs it)."""

import os

import pytest

from tools_testing import bench_bin, logitcache_bin


@pytest.fixture(scope="session")
def lc_bin():
    path = logitcache_bin()
    if not os.access(path, os.X_OK):
        pytest.fail(f"no logitcache binary at {path}: set LOGITCACHE_BIN (tools/test does)")
    return path


@pytest.fixture(scope="session")
def bench():
    path = bench_bin()
    if not os.access(path, os.X_OK):
        pytest.fail(f"no logitcache-bench binary at {path}: build it beside LOGITCACHE_BIN (tools/test does)")
    return path
