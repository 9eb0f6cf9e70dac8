"""The guard that holds the parent-death signal for a server that changes its user
(``gateway/localservers/_guard.py``), run for real with small Python "servers"."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from gateway.localservers._process import GUARD

SERVER = """
import signal, sys, time
if sys.argv[1] == "exit-7-on-term":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))
else:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(60)
"""


def guard(parent: int, *command: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(GUARD), str(parent), *command], stdout=subprocess.PIPE, text=True
    )


def test_the_server_never_starts_when_the_parent_is_already_gone(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    with guard(0, sys.executable, "-c", f"open({str(marker)!r}, 'w')") as proc:
        assert proc.wait(20) == 128 + signal.SIGTERM
    assert not marker.exists()


def test_sigterm_is_passed_on_and_the_server_status_returned() -> None:
    with guard(os.getpid(), sys.executable, "-c", SERVER, "exit-7-on-term") as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        proc.terminate()
        assert proc.wait(20) == 7


def test_a_server_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    with guard(os.getpid(), sys.executable, "-c", SERVER, "ignore-term") as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        proc.terminate()
        assert proc.wait(30) == 128 + signal.SIGKILL
