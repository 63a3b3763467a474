"""Helpers of the tools scripts' tests: the scripts' directory on the path, and the package
tests' helpers (python/tests/lc_testing.py: the Swift binaries and their commands), shared.

Imported as `tools_testing` (not `conftest`: python/tests has a conftest of its own, and pytest
keeps only one module named `conftest`)."""

import os
import sys

TOOLS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (TOOLS, os.path.join(os.path.dirname(TOOLS), "python", "tests")):
    if path not in sys.path:
        sys.path.insert(0, path)  # the scripts under test (format_floor, ...), and lc_testing

from lc_testing import bench, bench_bin, lc_bin, logitcache_bin, run, synth  # noqa: E402,F401
