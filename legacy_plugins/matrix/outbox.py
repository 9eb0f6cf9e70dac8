"""What XMPP users send to Matrix: one request in flight per room, the next one right away.

The homeserver orders concurrent requests to a room as it happens to handle them
(Synapse creates up to several events of a room at once), so sending a burst
concurrently reorders it (``bench/matrix.py``). Each room therefore has one request in
flight at a time. With a lock, the next send of a burst started only once the previous
one's caller had released it, finished slidge's work on that message (its echo, the
archive) and the event loop came back round to the next waiter: the homeserver sat idle
meanwhile. :class:`Outbox` keeps one queue per room, drained by one task of its own
that starts the next job as soon as the previous request has its answer; each caller
awaits its own job's outcome (the event ID, or the error it raised), and does the rest of
its work while the next request is already on its way.

A caller cancelled before its job started takes the job out of the queue; one cancelled
while its job runs leaves the job to finish (a request is never cut halfway through).
The drain task ends when its queue is empty; a cancelled drain (the session ending)
cancels the jobs still waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import Any, TypeVar

__all__ = ["Outbox"]

T = TypeVar("T")
Job = Callable[[], Awaitable[Any]]
Spawn = Callable[[Coroutine[Any, Any, None], str], object]
"""Starts a task that the session owns (``BaseSession.create_task``)."""


class Outbox:
    def __init__(self, spawn: Spawn) -> None:
        self._spawn = spawn
        self._queues: dict[Hashable, deque[tuple[Job, asyncio.Future[Any]]]] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    def busy(self) -> bool:
        """Whether any job is running or waiting."""
        return bool(self._queues)

    async def wait_idle(self, timeout: float) -> None:
        """Return once no job runs or waits, or after `timeout` seconds."""
        if self._queues:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._idle.wait()

    async def run(self, key: Hashable, job: Callable[[], Awaitable[T]]) -> T:
        """Run `job` after every job queued before it under `key`, one at a time;
        returns its result or raises its exception."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
            self._idle.clear()
            self._spawn(self._drain(key, queue), f"matrix sends to {key}")
        queue.append((job, future))
        return await future

    async def _drain(self, key: Hashable, queue: deque[tuple[Job, asyncio.Future[Any]]]) -> None:
        try:
            while queue:
                job, future = queue[0]
                if not future.done():  # else its caller was cancelled before it started
                    try:
                        result = await job()
                    except Exception as e:
                        if not future.done():
                            future.set_exception(e)
                    else:
                        if not future.done():
                            future.set_result(result)
                queue.popleft()
        finally:
            del self._queues[key]
            if not self._queues:
                self._idle.set()
            for _job, future in queue:
                future.cancel()
