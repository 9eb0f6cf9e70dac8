"""Keep a local server that changes its user tied to the process that started it.

Linux forgets a process's parent-death signal as soon as the process changes its user,
which ngIRCd and Postfix's master do when started as root: killed with SIGKILL, a test
run would leave them running. `spawn` starts this script instead, with the parent-death
signal set, and this script (which never changes its user) runs the server as its
child: it passes SIGTERM, SIGINT and SIGHUP on to the server, kills the server if it is
still there `STOP_GRACE` seconds after a SIGTERM or SIGINT, and exits with the server's
status. The server stays in the session and process group `spawn` made.

Usage: ``python _guard.py PARENT_PID ARGV...``. It runs as a script, so it imports only
the standard library.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from types import FrameType

STOP_GRACE = 8
"""Seconds the server has to stop after SIGTERM or SIGINT (less than the 10 s that
``_process.terminate`` gives this guard before it kills it)."""


def main(argv: list[str]) -> int:
    parent, command = int(argv[0]), argv[1:]
    server: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: FrameType | None) -> None:
        if server is None:  # not started yet: nothing to stop but us
            raise SystemExit(128 + signum)
        if server.poll() is None:
            server.send_signal(signum)
            if signum != signal.SIGHUP:
                signal.alarm(STOP_GRACE)

    def kill(_signum: int, _frame: FrameType | None) -> None:
        if server is not None and server.poll() is None:
            server.kill()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    signal.signal(signal.SIGALRM, kill)
    if os.getppid() != parent:  # the parent died before it could be told
        return 128 + signal.SIGTERM
    server = subprocess.Popen(command)  # noqa: S603 - the argv of a ManagedServer
    code = server.wait()
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
