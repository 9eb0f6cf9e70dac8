"""An asyncio JSON-RPC client for ``deltachat-rpc-server`` over its stdin and stdout.

The server is Delta Chat's core (IMAP IDLE, SMTP, MIME, Autocrypt, groups) as a child
process: one request per line on stdin, one response or notification per line on stdout,
logs on stderr. Requests carry ids so many can be in flight; each waits at most its own
timeout. Events are not pushed: the server answers a ``get_next_event`` long poll, which
:meth:`DeltaChatRpc.next_event` issues. The official Python client does the same with
threads; this one is a few asyncio tasks owned by the object, and nothing else in
Passerelle imports it except :mod:`.client`.

One process serves every account in its ``accounts_dir`` (``DC_ACCOUNTS_PATH``); the
gateway runs one per registered user, so a user's account, keys and mail live in that
user's directory and a crash stays with one user.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from .errors import EmailError

log = logging.getLogger(__name__)

SERVER_BINARY = "deltachat-rpc-server"
DEFAULT_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
LINE_LIMIT = 64 * 1024 * 1024  # a message list or a long mail body fits in one line


class RpcError(EmailError):
    """The core answered a request with an error; ``message`` is the core's text."""

    def __init__(self, method: str, code: int, message: str) -> None:
        self.method = method
        self.code = code
        self.message = message
        super().__init__(f"Delta Chat core: {method} failed: {message}")


class RpcServerGone(EmailError):
    """The ``deltachat-rpc-server`` process exited or was never started."""


def find_server() -> str:
    """The Rust binary inside the ``deltachat_rpc_server`` wheel, else one on ``$PATH``."""
    spec = importlib.util.find_spec("deltachat_rpc_server")
    if spec is not None and spec.origin is not None:
        binary = Path(spec.origin).parent / SERVER_BINARY
        if binary.is_file():
            return str(binary)
    found = shutil.which(SERVER_BINARY)
    if found is None:
        raise RpcServerGone(
            f"{SERVER_BINARY} not found: install the Python package 'deltachat-rpc-server' "
            f"(pinned in pyproject.toml) into {sys.prefix}"
        )
    return found


class DeltaChatRpc:
    """One ``deltachat-rpc-server`` process; use ``async with`` or ``start()``/``close()``."""

    def __init__(
        self, accounts_dir: Path, *, name: str = "deltachat", command: list[str] | None = None
    ) -> None:
        self.accounts_dir = accounts_dir
        self.command = command  # the server's argv; default: find_server() (tests pass fakes)
        self.log = log.getChild(name)
        self._proc: asyncio.subprocess.Process | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[str, asyncio.Future[Any]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._gone: asyncio.Event = asyncio.Event()

    @property
    def running(self) -> bool:
        return self._proc is not None and not self._gone.is_set()

    async def start(self) -> None:
        self.accounts_dir.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "DC_ACCOUNTS_PATH": str(self.accounts_dir)}
        env.setdefault("RUST_LOG", "warn")
        argv = self.command or [find_server()]
        self._proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            limit=LINE_LIMIT,
            start_new_session=True,
        )
        self.log.debug(
            "started %s (pid %d) in %s", SERVER_BINARY, self._proc.pid, self.accounts_dir
        )
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._gone = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._read_responses(self._proc.stdout), name="dc-rpc-stdout"),
            asyncio.create_task(self._read_logs(self._proc.stderr), name="dc-rpc-stderr"),
        ]

    async def close(self) -> None:
        """Stop the process (EOF on stdin, then SIGTERM, then SIGKILL) and our tasks."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            try:
                async with asyncio.timeout(STOP_TIMEOUT):
                    await proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
                try:
                    async with asyncio.timeout(STOP_TIMEOUT):
                        await proc.wait()
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
            self.log.debug("%s (pid %d) exited with %s", SERVER_BINARY, proc.pid, proc.returncode)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._fail_pending(RpcServerGone(f"{SERVER_BINARY} was stopped"))

    async def __aenter__(self) -> DeltaChatRpc:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    # -- requests -------------------------------------------------------------------

    async def call(self, method: str, *params: Any, timeout: float | None = DEFAULT_TIMEOUT) -> Any:
        """Call ``method``; returns its result, raises :class:`RpcError` or on timeout."""
        proc = self._proc
        if proc is None or proc.stdin is None or self._gone.is_set():
            raise RpcServerGone(f"{SERVER_BINARY} is not running (calling {method})")
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (method, future)
        line = json.dumps(
            {"jsonrpc": "2.0", "id": request_id, "method": method, "params": list(params)}
        )
        if method not in ("get_next_event",):
            self.log.debug("-> %s %s", method, _redact(method, params))
        try:
            proc.stdin.write(line.encode() + b"\n")
            await proc.stdin.drain()
            async with asyncio.timeout(timeout):
                return await future
        except (BrokenPipeError, ConnectionResetError) as e:
            raise RpcServerGone(f"{SERVER_BINARY} is gone (calling {method}): {e}") from e
        except TimeoutError:
            raise RpcError(method, -1, f"no answer within {timeout:g} s") from None
        finally:
            self._pending.pop(request_id, None)

    async def next_event(self) -> dict[str, Any]:
        """The next event of any account: ``{"contextId": account, "event": {...}}``."""
        event: dict[str, Any] = await self.call("get_next_event", timeout=None)
        return event

    # -- tasks --------------------------------------------------------------------------

    async def _read_responses(self, stdout: asyncio.StreamReader) -> None:
        try:
            while line := await stdout.readline():
                try:
                    message = json.loads(line)
                except json.JSONDecodeError:
                    self.log.warning("ignoring a line that is not JSON: %.200r", line)
                    continue
                self._resolve(message)
        finally:
            self._gone.set()
            self._fail_pending(RpcServerGone(f"{SERVER_BINARY} exited"))

    def _resolve(self, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        entry = self._pending.get(request_id) if isinstance(request_id, int) else None
        if entry is None:
            self.log.debug("answer to no pending request: %.200r", message)
            return
        method, future = entry
        if future.done():
            return
        if "error" in message:
            error = message["error"] or {}
            future.set_exception(
                RpcError(method, int(error.get("code", -1)), str(error.get("message", error)))
            )
        else:
            future.set_result(message.get("result"))

    async def _read_logs(self, stderr: asyncio.StreamReader) -> None:
        while line := await stderr.readline():
            self.log.debug("core: %s", line.decode("utf-8", "replace").rstrip())

    def _fail_pending(self, exc: Exception) -> None:
        for _method, future in list(self._pending.values()):
            if not future.done():
                future.set_exception(exc)
                # Whoever awaited it has gone if nobody retrieves it: don't warn.
                future.exception()
        self._pending.clear()


def _redact(method: str, params: tuple[Any, ...]) -> str:
    """Request parameters for the debug log, without passwords."""
    if method in ("add_or_update_transport", "add_transport", "batch_set_config"):
        return "[redacted]"
    if method == "set_config" and len(params) >= 2 and "pw" in str(params[1]):
        return "[redacted]"
    return repr(params)[:300]
