"""Fixtures of the tools scripts' tests: the Swift binaries (defined in python/tests/lc_testing.py
and shared through tools_testing); the Python package (`logitcache`) is the installed one."""

from tools_testing import bench, lc_bin  # noqa: F401
