"""Shared fixtures of the package's tests: the Swift `logitcache` binary and the native library,
and the CI policy that a skipped test fails. Helpers (run, synth, swift_dump) are in lc_testing.py.

The tests import the *installed* `logitcache` (`pip install ./python`); no path is added for it.
The binary is `$LOGITCACHE_BIN`, else `<repo>/.build/release/logitcache` (tools/test sets it).
"""

import os

import pytest

# Helpers live in lc_testing (a unique module name: tools/tests has a conftest too), fixtures too.
from lc_testing import lc_bin  # noqa: F401


@pytest.fixture(scope="session")
def native():
    """The package's native library is installed (tests of the native backend need it)."""
    import logitcache
    if not logitcache.native_available():
        pytest.skip("the native library is not installed (pip install ./python with swift on PATH)")
    return True


class SkipsFailInCI:
    """With CI=true, a skipped test (a missing package, library or binary) is a failure: CI
    must run every test. Registered as a plugin, so it covers every directory of the run
    (tools/test runs python/tests and tools/tests together)."""

    @staticmethod
    def _fail(report, what):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"{what} skipped, and skips fail when CI=true: {reason}"

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        if report.skipped and not hasattr(report, "wasxfail"):
            self._fail(report, item.nodeid)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_make_collect_report(self, collector):
        outcome = yield
        report = outcome.get_result()
        if report.skipped:
            self._fail(report, collector.nodeid or "collection")


def pytest_configure(config):
    if os.environ.get("CI", "").lower() == "true" and not config.pluginmanager.has_plugin("skips-fail-in-ci"):
        config.pluginmanager.register(SkipsFailInCI(), "skips-fail-in-ci")
