"""Fixtures for the end-to-end tests: a real Prosody on loopback and ``passerelle run``.

Prosody is started once per session on free ports; each test starts its own Passerelle
(with its own data directory) and registers its own XMPP users, so tests don't share
state. Fixtures stop only the processes they started, even when a test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from gateway.child import _die_with_parent
from gateway.config import load
from gateway.localservers.prosody import ComponentSpec, Prosody
from tests.e2e.xmpp_client import Client

ECHO_JID = "echo.localhost"
ECHO_SECRET = "echo-secret-for-tests"
IRC_JID = "irc.localhost"
IRC_SECRET = "irc-secret-for-tests"
MATRIX_JID = "matrix.localhost"
MATRIX_SECRET = "matrix-secret-for-tests"
EMAIL_JID = "email.localhost"
EMAIL_SECRET = "email-secret-for-tests"
DOMAIN = "localhost"
PASSWORD = "correct horse battery staple"
_users = itertools.count(1)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def prosody(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prosody]:
    server = Prosody(
        tmp_path_factory.mktemp("prosody"),
        domain=DOMAIN,
        components=[
            ComponentSpec(ECHO_JID, ECHO_SECRET),
            ComponentSpec(IRC_JID, IRC_SECRET),
            ComponentSpec(MATRIX_JID, MATRIX_SECRET),
            ComponentSpec(EMAIL_JID, EMAIL_SECRET),
        ],
    )
    with server:
        yield server


class PasserelleProcess:
    """``passerelle run`` as a subprocess, with its output collected for assertions."""

    def __init__(self, config: Path, argv: list[str] | None = None) -> None:
        self.config = config
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            argv or [sys.executable, "-m", "gateway", "run", "-c", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            # Dies with the test run even when that is SIGKILLed (a timeout), so no
            # `passerelle run` is left holding a component JID. Linux sends the signal
            # when the starting *thread* ends, so only from the main thread.
            preexec_fn=(  # noqa: PLW1509 - only prctl, no locks
                _die_with_parent if threading.current_thread() is threading.main_thread() else None
            ),
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for_line(self, pattern: str, *, after: int = 0, timeout: float = 60.0) -> int:
        """Index of the first line at or after ``after`` that matches ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(after, len(self.lines)):
                    if regex.search(self.lines[i]):
                        return i
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"no line matching {pattern!r} within {timeout} s; output:\n"
                        + "\n".join(self.lines[-60:])
                    )
                self._cond.wait(min(left, 0.5))

    async def wait_for(self, pattern: str, *, after: int = 0, timeout: float = 60.0) -> int:
        return await asyncio.to_thread(self.wait_for_line, pattern, after=after, timeout=timeout)

    def files_holding(self, text: str) -> list[Path]:
        """The files under this gateway's directory (its config, data, databases and
        logs) in which ``text`` is written in clear."""
        needle = text.encode()
        found: list[Path] = []
        for path in self.config.parent.rglob("*"):
            with contextlib.suppress(OSError):  # a file gone meanwhile (a journal)
                if path.is_file() and needle in path.read_bytes():
                    found.append(path)
        return found

    def child_pid(self, network: str) -> int:
        pidfile = self.config.parent / "data" / "run" / f"{network}.pid"
        return int(pidfile.read_text())

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


def write_config(
    directory: Path, prosody: Prosody, extra: str = "", echo: str = "", networks: str = ""
) -> Path:
    """``extra``: top-level keys; ``echo``: more keys for [networks.echo]; ``networks``: more
    sections (e.g. ``[networks.irc]`` with ``IRC_JID``/``IRC_SECRET``), appended last."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "gateway.toml"
    path.write_text(
        f"""
data_dir = "./data"
admins = ["admin@{DOMAIN}"]
{extra}

[xmpp]
host = "127.0.0.1"
port = {prosody.component_port}

[networks.echo]
jid = "{ECHO_JID}"
secret = "{ECHO_SECRET}"
{echo}
{networks}
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def start_passerelle(
    prosody: Prosody, tmp_path: Path
) -> Iterator[Callable[..., PasserelleProcess]]:
    started: list[PasserelleProcess] = []

    def start(
        extra: str = "", echo: str = "", networks: str = "", wait: bool = True
    ) -> PasserelleProcess:
        config = write_config(
            tmp_path / f"passerelle{len(started)}", prosody, extra, echo, networks
        )
        process = PasserelleProcess(config)
        started.append(process)
        if wait:  # every enabled network, not just the first to come up
            for name in load(config).enabled_networks:
                process.wait_for_line(rf"^{name} \| .*Slidge has successfully started")
        return process

    yield start
    for process in started:
        process.stop()
        if os.environ.get("PASSERELLE_TEST_VERBOSE"):
            print(process.output())


@pytest.fixture
def passerelle(start_passerelle: Callable[..., PasserelleProcess]) -> PasserelleProcess:
    return start_passerelle()


@pytest.fixture
async def new_client(prosody: Prosody) -> AsyncIterator[Callable[..., asyncio.Future[Client]]]:
    """Register a fresh XMPP account on Prosody and log a client in with it."""
    clients: list[Client] = []

    async def make(name: str = "user") -> Client:
        user = f"{name}{next(_users)}"
        await asyncio.to_thread(prosody.register, user, PASSWORD)
        client = Client(f"{user}@{DOMAIN}", PASSWORD)
        clients.append(client)
        await client.start(prosody.c2s_port)
        return client

    yield make  # type: ignore[misc]
    for client in clients:
        await client.stop()
