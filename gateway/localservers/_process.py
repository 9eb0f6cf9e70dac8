"""The lifecycle shared by every local server: one child process, output in a file.

`ManagedServer` writes a config (`prepare`), starts the server in the foreground in its
own session (so a Ctrl-C in the terminal reaches the test runner, which then stops the
child in order), waits for its ports, and stops exactly that child: SIGTERM, up to 10 s,
then SIGKILL. Subclasses say what to run and which ports to wait for.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from gateway.localservers.errors import ServerStartError
from gateway.localservers.ports import LOOPBACK, tail, wait_for_port

log = logging.getLogger(__name__)

STOP_TIMEOUT = 10.0


def spawn(argv: Sequence[str], output: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """Start `argv` with stdin closed and stdout and stderr appended to `output`."""
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

    def start(self) -> None:
        """Write the config, start the server and wait until every port listens."""
        if self.running:
            raise RuntimeError(f"this {self.name} is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        self._proc = spawn(self.command(), self.output_path, self.workdir)
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
