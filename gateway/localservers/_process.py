"""The lifecycle shared by every local server: one child process, output in a file.

`ManagedServer` writes a config (`prepare`), starts the server in the foreground in its
own session (so a Ctrl-C in the terminal reaches the test runner, which then stops the
child in order), waits for its ports, and stops exactly that child: SIGTERM, up to 10 s,
then SIGKILL. Subclasses say what to run and which ports to wait for.

A server dies with the process that started it, even one killed with SIGKILL (a test
run stopped by a timeout), so no server is left behind listening: it gets a SIGTERM
from Linux (the supervisor's `_die_with_parent`, as a pre-exec function). That only
works for a server in the foreground (each command says so: `-F`, `--nodaemon`,
`--nofork`...) that never changes its user: Linux forgets the signal when it does, so
such a server (`changes_user`) runs under `_guard.py`, which holds the signal for it.
Linux sends the signal when the *thread* that started the child ends, so servers
started from other threads (``asyncio.to_thread``) are started from one thread that
lives as long as the process.
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from gateway.child import _die_with_parent
from gateway.localservers.errors import ServerStartError
from gateway.localservers.ports import LOOPBACK, tail, wait_for_port

log = logging.getLogger(__name__)

STOP_TIMEOUT = 10.0


GUARD = Path(__file__).with_name("_guard.py")
"""The script that runs a server that changes its user (see the module docstring)."""


@functools.cache
def _spawner() -> ThreadPoolExecutor:
    """The thread that starts servers for the other threads (it lives until exit)."""
    return ThreadPoolExecutor(1, thread_name_prefix="localservers-spawner")


def spawn(
    argv: Sequence[str], output: Path, cwd: Path, *, guard: bool = False
) -> subprocess.Popen[bytes]:
    """Start `argv` with stdin closed and stdout and stderr appended to `output`, to die
    with this process; `guard`: under `_guard.py` (a server that changes its user)."""
    if guard:
        argv = [sys.executable, str(GUARD), str(os.getpid()), *argv]
    if threading.current_thread() is threading.main_thread():
        return _popen(argv, output, cwd)
    return _spawner().submit(_popen, argv, output, cwd).result()


def _popen(argv: Sequence[str], output: Path, cwd: Path) -> subprocess.Popen[bytes]:
    log.debug("starting %s (output in %s)", " ".join(argv), output)
    with output.open("ab") as out:
        # The child keeps its own copy of the descriptor; ours can close at once.
        return subprocess.Popen(  # noqa: S603 - argv is built by this package
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, no locks
        )


def terminate(proc: subprocess.Popen[bytes], name: str, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM `proc`, wait up to `timeout` seconds, then SIGKILL it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) ignored SIGTERM for %g s; killing it", name, proc.pid, timeout)
            proc.kill()
            proc.wait()
    log.info("%s (pid %d) stopped with code %s", name, proc.pid, proc.returncode)


class ManagedServer:
    """Base for a server run as one foreground child process on 127.0.0.1."""

    name: ClassVar[str] = "server"
    changes_user: ClassVar[bool] = False
    """Whether the server switches to another user by itself: it then runs under
    `_guard.py`, or it would not die with the process that started it."""

    def __init__(self, workdir: Path, start_timeout: float) -> None:
        self.workdir = Path(workdir)
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    # -- what subclasses provide ----------------------------------------------------

    def prepare(self) -> None:
        """Choose free ports if needed and write the config files under `workdir`."""
        raise NotImplementedError

    def command(self) -> list[str]:
        """The argv that runs the server in the foreground."""
        raise NotImplementedError

    def listen_ports(self) -> tuple[int, ...]:
        """Ports that must accept connections before `start()` returns."""
        raise NotImplementedError

    def diagnose(self) -> str:
        """Extra text for a start-up error (e.g. a config check's output)."""
        return ""

    @property
    def log_path(self) -> Path:
        """The server's own log."""
        raise NotImplementedError

    @property
    def output_path(self) -> Path:
        """Where the server's stdout and stderr go."""
        return self.workdir / f"{self.name.lower()}.out"

    # -- lifecycle ------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The pid of the process this object started (its session and process group
        too), or None when it is not running."""
        return self._proc.pid if self.running and self._proc is not None else None

    def start(self) -> None:
        """Write the config, start the server and wait until every port listens."""
        if self.running:
            raise RuntimeError(f"this {self.name} is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        self._proc = spawn(self.command(), self.output_path, self.workdir, guard=self.changes_user)
        ports = self.listen_ports()
        log.info(
            "%s started (pid %d) in %s on 127.0.0.1 port(s) %s",
            self.name,
            self._proc.pid,
            self.workdir,
            ", ".join(map(str, ports)),
        )
        logs = list(dict.fromkeys((self.output_path, self.log_path)))
        try:
            for port in ports:
                wait_for_port(
                    LOOPBACK, port, self.start_timeout, self._proc, logs=logs, name=self.name
                )
        except ServerStartError as exc:
            self.stop()
            extra = self.diagnose()
            if extra:
                raise ServerStartError(f"{exc}\n{extra}") from exc
            raise
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the process this object started; a no-op if none is running."""
        proc, self._proc = self._proc, None
        if proc is not None:
            terminate(proc, self.name)

    def restart(self) -> None:
        """Stop and start again on the same ports with the same data."""
        self.stop()
        self.start()

    def log_tail(self, n: int = 50) -> str:
        """The last `n` lines of the server's log."""
        return tail(self.log_path, n)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
