"""Loopback ports for the servers that tests and the demo start.

`free_port` asks the kernel for a port nobody listens on; `wait_for_port` blocks until a
freshly spawned server accepts connections, and fails fast, with the end of the server's
log, when the server dies first. Everything here binds or connects to loopback only.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from gateway.localservers.errors import ServerStartError

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now.

    The port is released before returning, so another process could take it in between;
    on loopback in a test run that race is rare enough not to matter.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def tail(path: Path, n: int = 50) -> str:
    """The last `n` lines of a text file, or a note saying it does not exist."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-n:])


def describe_logs(logs: Sequence[Path], n: int = 50) -> str:
    """The tails of several log files, each under a header naming it."""
    return "\n".join(f"--- last lines of {path} ---\n{tail(path, n)}" for path in logs)


def wait_for_port(
    host: str,
    port: int,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    *,
    logs: Sequence[Path] = (),
    name: str = "server",
) -> None:
    """Block until `host:port` accepts a TCP connection, or raise `ServerStartError`.

    If `proc` is given and exits before the port opens, fail at once; the error carries
    the end of each file in `logs` (the server's log and captured output).
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise ServerStartError(
                f"{name} exited with code {proc.returncode} before listening on "
                f"{host}:{port}\n{describe_logs(logs)}"
            )
        try:
            with socket.create_connection((host, port), timeout=0.5):
                log.debug("%s is listening on %s:%d", name, host, port)
                return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise ServerStartError(
                f"{name} did not listen on {host}:{port} within {timeout:g} s\n"
                f"{describe_logs(logs)}"
            )
        time.sleep(0.05)
