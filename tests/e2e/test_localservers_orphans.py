"""Killing a test run leaves no server behind: the servers die with their starter.

Each story starts real servers from a child Python process (as pytest would), checks
they run, kills that process with SIGKILL (no chance to clean up, as when a run is
killed) and waits, with a bound, until no process of the servers' sessions is left. The
servers cover each way `gateway.localservers` ties them to their starter: the plain
parent-death signal (Prosody, InspIRCd, Atheme, Dovecot and its forked children), the
guard for servers that change their user (ngIRCd and Postfix's master, as root), and
setpriv's for PostgreSQL; and a server started from a thread that ended before.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

STARTER = r"""
import json, sys, threading
from pathlib import Path
from gateway import localservers as ls

kind, work = sys.argv[1], Path(sys.argv[2])
if kind == "prosody":
    servers = [ls.Prosody(work)]
elif kind == "ngircd-from-a-thread":
    servers = [ls.NgIrcd(work)]
elif kind == "postgres":
    servers = [ls.PostgreSQL(work)]
elif kind == "mail":
    servers = [ls.MailServer(work)]
elif kind == "inspircd-and-atheme":
    ircd = ls.InspIRCd(work / "ircd", services=ls.ServicesLink())
    servers = [ircd, ls.Atheme(work / "atheme", uplink=ircd)]
if kind.endswith("-from-a-thread"):
    # Started from a thread that ends at once, as asyncio.to_thread's would at last.
    starter = threading.Thread(target=servers[0].start)
    starter.start()
    starter.join()
else:
    for server in servers:
        server.start()
pids = [pid for s in servers for pid in (s.pids if hasattr(s, "pids") else [s.pid])]
print(json.dumps(pids), flush=True)
sys.stdin.read()  # until killed
"""

START_TIMEOUT = 120.0
GONE_TIMEOUT = 30.0


def session_members(sid: int) -> list[int]:
    """The pids of the live processes of session `sid` (zombies count as gone)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it ended while we looked
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp session
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            return proc.stdout.readline()
    raise AssertionError(f"the starter printed nothing within {timeout} s (code {proc.poll()})")


@pytest.mark.parametrize(
    "kind", ["prosody", "ngircd-from-a-thread", "postgres", "mail", "inspircd-and-atheme"]
)
def test_servers_die_with_the_process_that_started_them(kind: str, tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", STARTER, kind, str(tmp_path / kind)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    ) as starter:
        try:
            kill_and_check(starter)
        finally:
            # PostgreSQL and the mail server keep their data outside pytest's private
            # directories (linked from there); the killed starter could not delete it.
            for link in (tmp_path / kind).rglob("*"):
                if link.is_symlink() and link.resolve().name.startswith("passerelle-"):
                    shutil.rmtree(link.resolve(), ignore_errors=True)


def kill_and_check(starter: subprocess.Popen[str]) -> None:
    """Wait for `starter`'s servers, kill it, and see them gone."""
    sessions: list[int] = []
    try:
        sessions = json.loads(read_line(starter, START_TIMEOUT))
        assert sessions, "the starter reported no server"
        time.sleep(1)  # a thread-started server outlives its thread
        for sid in sessions:
            assert session_members(sid), f"server {sid} is not running before the kill"

        starter.kill()
        starter.wait(10)
        deadline = time.monotonic() + GONE_TIMEOUT
        left = [pid for sid in sessions for pid in session_members(sid)]
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = [pid for sid in sessions for pid in session_members(sid)]
        assert not left, f"still running {GONE_TIMEOUT} s after their starter died: {left}"
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait(10)
        for sid in sessions:  # what this test started, if it failed: not left behind
            for pid in session_members(sid):
                os.kill(pid, signal.SIGKILL)
