"""``passerelle run``: one child process per network, kept alive, stopped cleanly.

One :class:`asyncio.TaskGroup` owns a watcher task per network. A watcher starts its child,
forwards the child's output line by line with the network's name in front, and restarts it
with :class:`~gateway.backoff.Backoff` when it exits without being asked. One crashing
network never takes the others down. On SIGTERM or SIGINT every child gets SIGTERM (slidge
then sends unavailable presences and exits 0) and, after ``stop_timeout`` seconds, SIGKILL.

Children run in their own session, so a Ctrl-C in the terminal reaches only the supervisor,
which then stops them in order; and each child asks the kernel to SIGTERM it if the
supervisor dies (see :mod:`gateway.child`).

``passerelle run`` validates the configuration (pydantic) and then ``exec``s
``python -m gateway.supervisor --plan JSON``: the long-lived supervisor gets only the
:func:`plan` (child names, argv, pidfiles, log level) and never imports pydantic, slidge or
a plugin, so it stays small. The plan holds no secret; each child reads the config file.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    # The long-lived supervisor never speaks TLS; asyncio runs without the ssl module,
    # and leaving it out keeps OpenSSL (4 MiB of the supervisor's 22) out of this process.
    sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from . import __version__
from .backoff import Backoff

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger("gateway.supervisor")  # not __main__ under -m

EXIT_CONFIG = 78
"""Same value as :data:`gateway.child.EXIT_CONFIG` (not imported: the supervisor keeps
to its own few imports)."""

LOG_FORMAT = "supervisor | %(levelname)s %(name)s: %(message)s"

_LINE_LIMIT = 1 << 20


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to start one child process."""

    name: str
    argv: Sequence[str]
    pidfile: Path | None = None
    env: Mapping[str, str] | None = field(default=None, repr=False)


def network_children(cfg: Config) -> list[ChildSpec]:
    """One child per enabled network, running :mod:`gateway.child`, and the link
    component (:mod:`gateway.link`) when ``[link]`` is enabled."""
    assert cfg.path is not None
    run_dir = cfg.data_dir / "run"
    children = [
        ChildSpec(
            name=name,
            argv=[sys.executable, "-m", "gateway.child", "-c", str(cfg.path), "--network", name],
            pidfile=run_dir / f"{name}.pid",
        )
        for name in cfg.enabled_networks
    ]
    if cfg.settings.link is not None and cfg.settings.link.enabled:
        children.append(
            ChildSpec(
                name="link",
                argv=[sys.executable, "-m", "gateway.link", "-c", str(cfg.path)],
                pidfile=run_dir / "link.pid",
            )
        )
    return children


class Supervisor:
    def __init__(
        self,
        children: Sequence[ChildSpec],
        *,
        backoff: Backoff = Backoff(),
        stop_timeout: float = 10.0,
        output: TextIO | None = None,
    ) -> None:
        self.children = children
        self.backoff = backoff
        self.stop_timeout = stop_timeout
        self.output = output if output is not None else sys.stdout
        self.stopping = asyncio.Event()
        self.restarts: dict[str, int] = {c.name: 0 for c in children}
        self.gave_up: set[str] = set()
        """Children that exited with a configuration error and were not restarted."""

    def stop(self) -> None:
        self.stopping.set()

    async def run(self) -> None:
        """Run every child until :meth:`stop`; returns once all have exited."""
        async with asyncio.TaskGroup() as tg:
            for child in self.children:
                tg.create_task(self._watch(child), name=f"watch-{child.name}")

    async def _watch(self, spec: ChildSpec) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        while not self.stopping.is_set():
            started = loop.time()
            rc = await self._run_once(spec)
            if self.stopping.is_set():
                return
            if rc == EXIT_CONFIG:
                log.error("%s: configuration error (see above); not restarting it", spec.name)
                self.gave_up.add(spec.name)
                return
            failures = self.backoff.failures_after(failures, loop.time() - started)
            delay = self.backoff.delay(failures, random.random())  # noqa: S311  (jitter, not crypto)
            log.warning(
                "%s exited with code %s after %.1f s; restarting in %.1f s",
                spec.name, rc, loop.time() - started, delay,
            )  # fmt: skip
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self.stopping.wait()
            self.restarts[spec.name] += 1

    async def _run_once(self, spec: ChildSpec) -> int:
        env = dict(os.environ if spec.env is None else spec.env)
        env["PYTHONUNBUFFERED"] = "1"
        proc = await asyncio.create_subprocess_exec(
            *spec.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            env=env,
            limit=_LINE_LIMIT,
        )
        log.info("%s started (pid %d)", spec.name, proc.pid)
        if spec.pidfile is not None:
            spec.pidfile.parent.mkdir(parents=True, exist_ok=True)
            spec.pidfile.write_text(f"{proc.pid}\n")
        try:
            async with asyncio.TaskGroup() as tg:
                assert proc.stdout is not None
                tg.create_task(self._forward(spec.name, proc.stdout))
                exited = tg.create_task(proc.wait())
                stop = tg.create_task(self.stopping.wait())
                await asyncio.wait((exited, stop), return_when=asyncio.FIRST_COMPLETED)
                if not exited.done():
                    await self._terminate(spec.name, proc)
                stop.cancel()
        finally:
            if proc.returncode is None:  # we are being cancelled: don't leave it behind
                proc.kill()
                await proc.wait()
            if spec.pidfile is not None:
                with contextlib.suppress(FileNotFoundError):
                    spec.pidfile.unlink()
        assert proc.returncode is not None
        return proc.returncode

    async def _terminate(self, name: str, proc: asyncio.subprocess.Process) -> None:
        log.info("stopping %s (pid %d)", name, proc.pid)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(self.stop_timeout):
                await proc.wait()
        except TimeoutError:
            log.warning("%s did not stop within %.0f s; killing it", name, self.stop_timeout)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        log.info("%s stopped (exit code %s)", name, proc.returncode)

    async def _forward(self, name: str, stream: asyncio.StreamReader) -> None:
        prefix = f"{name} | "
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # longer than the limit: pass it on in pieces
                line = await stream.read(_LINE_LIMIT)
            if not line:
                return
            self.output.write(prefix + line.decode("utf-8", "replace").rstrip("\n") + "\n")
            self.output.flush()


async def run_supervisor(supervisor: Supervisor) -> None:
    """Run until SIGTERM or SIGINT, then stop every child."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, supervisor.stop)
    try:
        await supervisor.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def plan(cfg: Config) -> dict[str, Any]:
    """What the lean supervisor process needs, as plain JSON-able values (no secret)."""
    return {
        "version": __version__,
        "log_level": cfg.settings.log_level,
        "children": [
            {"name": c.name, "argv": list(c.argv), "pidfile": str(c.pidfile or "") or None}
            for c in network_children(cfg)
        ],
    }


def children_from_plan(data: dict[str, Any]) -> list[ChildSpec]:
    return [
        ChildSpec(
            name=c["name"],
            argv=list(c["argv"]),
            pidfile=Path(c["pidfile"]) if c.get("pidfile") else None,
        )
        for c in data["children"]
    ]


def exec_supervisor(data: dict[str, Any]) -> None:
    """Replace this process (same pid) by a fresh interpreter running :func:`main`."""
    sys.stdout.flush()
    sys.stderr.flush()
    argv = [sys.executable, "-m", "gateway.supervisor", "--plan", json.dumps(data)]
    os.execv(sys.executable, argv)  # noqa: S606  (our own interpreter, argv is a list)


def main(argv: list[str] | None = None) -> int:
    """Run the children of a plan until SIGTERM/SIGINT: 0, or 1 after configuration errors."""
    parser = argparse.ArgumentParser(prog="python -m gateway.supervisor")
    parser.add_argument("--plan", required=True, help="JSON from gateway.supervisor.plan()")
    data = json.loads(parser.parse_args(argv).plan)
    logging.basicConfig(level=data["log_level"], format=LOG_FORMAT, force=True)
    out = logging.getLogger("passerelle")
    children = children_from_plan(data)
    out.info("Passerelle %s: starting %s", data["version"], ", ".join(c.name for c in children))
    if log.isEnabledFor(logging.DEBUG):
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"pydantic", "slidge"})
        log.debug("modules loaded: %d; pydantic/slidge: %s", len(sys.modules), heavy or "none")
    supervisor = Supervisor(children)
    asyncio.run(run_supervisor(supervisor))
    if supervisor.gave_up:
        failed = ", ".join(sorted(supervisor.gave_up))
        out.error("stopped after configuration errors in: %s", failed)
        return 1
    out.info("all networks stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
