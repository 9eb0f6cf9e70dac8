"""Suite-wide rules: with PASSERELLE_REQUIRE_E2E=1 (the test command sets it), a skipped
test fails the run, so CI can never pass with end-to-end tests quietly not running."""

import os

import pytest


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if os.environ.get("PASSERELLE_REQUIRE_E2E") == "1" and skipped and exitstatus == 0:
        names = ", ".join(r.nodeid for r in skipped[:5])
        print(f"\nPASSERELLE_REQUIRE_E2E=1: {len(skipped)} test(s) skipped ({names}): failing")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
