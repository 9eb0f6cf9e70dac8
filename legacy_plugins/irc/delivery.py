"""Which of our messages the IRC server confirmed: echo-message bookkeeping, without I/O.

With the IRCv3 `echo-message` capability the server sends each PRIVMSG we send back to
us once it has relayed it (with its `msgid`, if the server tags messages), or answers
with an error numeric (404 "cannot send to channel", 401 "no such nick"...). A
`Deliveries` remembers, per target, the lines of each message in the order they were
written; the server answers them in that order. An echo is matched by its text (servers
relay the text unchanged), so a line whose echo never comes (a server that strips
colours, a silent drop) does not shift every later match: messages before the matched
one are given up as `confirmed=False`. An error numeric names only the target, so it
answers the oldest line still waiting for that target. A message is settled once every
one of its lines is answered: confirmed with the msgid of its first line, or refused
with the first error. `Deliveries` knows nothing about sockets, clocks or futures: the
caller passes `now` and gets back `Outcome`s carrying the token it gave.
`Confirmations` is the connection's side of it: one future per message, which its
sender awaits.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from . import events as ev

__all__ = ["SEND_ERRORS", "Confirmations", "Deliveries", "MessageRejected", "Outcome"]

T = TypeVar("T")

SEND_ERRORS = frozenset({"401", "403", "404", "407", "492", "531", "716"})
"""Numerics that refuse a PRIVMSG/NOTICE; their first parameter is the target."""


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    """A settled message. `confirmed`: every line came back (or was refused); False when
    it was given up because later messages were echoed first. `msgid` is the server's
    id of its first echoed line; `error` the first refusal, as (numeric, text)."""

    token: T
    confirmed: bool
    msgid: str | None = None
    error: tuple[str, str] | None = None


@dataclass(slots=True)
class _Pending(Generic[T]):
    token: T
    lines: collections.deque[str]
    expires: float
    msgid: str | None = None
    error: tuple[str, str] | None = field(default=None)

    def outcome(self, confirmed: bool = True) -> Outcome[T]:
        return Outcome(self.token, confirmed, self.msgid, self.error)


class Deliveries(Generic[T]):
    """Messages waiting for the server's echo, per target (folded with `fold`)."""

    def __init__(self, fold: Callable[[str], str]) -> None:
        self._fold = fold
        self._queues: dict[str, collections.deque[_Pending[T]]] = {}

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def expect(self, target: str, lines: list[str], token: T, expires: float) -> None:
        """A message of `lines` (the texts as sent, CTCP ACTION framing included) was
        written to `target`; forget it at `expires` if the server never answers."""
        if lines:
            pending = _Pending(token, collections.deque(lines), expires)
            self._queues.setdefault(self._fold(target), collections.deque()).append(pending)

    def echoed(self, target: str, text: str, msgid: str | None, now: float) -> list[Outcome[T]]:
        """Our own message came back. Returns the messages this settles (none if the
        echo matches nothing: a line sent another way, such as a raw command)."""
        key = self._fold(target)
        queue = self._queues.get(key)
        if not queue:
            return []
        index = next((i for i, p in enumerate(queue) if p.lines[0] == text), None)
        if index is None:
            return self._expire(key, now)
        settled = [queue.popleft().outcome(confirmed=False) for _ in range(index)]
        pending = queue[0]
        pending.lines.popleft()
        pending.msgid = pending.msgid or msgid
        if not pending.lines:
            settled.append(queue.popleft().outcome())
        self._drop_if_empty(key)
        return settled

    def refused(self, target: str, code: str, text: str, now: float) -> list[Outcome[T]] | None:
        """The server refused a line to `target`. None if no message to `target` is
        waiting (the numeric is not about one of ours); else what this settles."""
        key = self._fold(target)
        settled = self._expire(key, now)
        queue = self._queues.get(key)
        if not queue:
            return settled or None
        pending = queue[0]
        pending.lines.popleft()
        pending.error = pending.error or (code, text)
        if not pending.lines:
            settled.append(queue.popleft().outcome())
        self._drop_if_empty(key)
        return settled

    def clear(self) -> list[T]:
        """The connection is gone: every waiting message, oldest first per target."""
        tokens = [pending.token for queue in self._queues.values() for pending in queue]
        self._queues.clear()
        return tokens

    def _expire(self, key: str, now: float) -> list[Outcome[T]]:
        queue = self._queues.get(key)
        settled: list[Outcome[T]] = []
        while queue and queue[0].expires <= now:
            settled.append(queue.popleft().outcome(confirmed=False))
        self._drop_if_empty(key)
        return settled

    def _drop_if_empty(self, key: str) -> None:
        if not self._queues.get(key, True):
            del self._queues[key]


class MessageRejected(Exception):
    """The server refused a message (`code`: 404 cannot send, 401 no such nick...)."""

    def __init__(self, target: str, code: str, text: str) -> None:
        super().__init__(f"IRC server refused the message to {target}: {text} ({code})")
        self.code = code


_Token = tuple[str, "asyncio.Future[str | None]"]


class Confirmations:
    """`Deliveries` with a future per message, for the connection that sends them."""

    def __init__(self, fold: Callable[[str], str]) -> None:
        self._pending: Deliveries[_Token] = Deliveries(fold)

    async def wait(self, target: str, lines: list[str], timeout: float) -> str | None:
        """Until the server answered every line just written to `target`: its msgid.
        Raises `MessageRejected`, `TimeoutError`, or what `fail_all` was given."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[str | None] = loop.create_future()
        # Kept a minute past the timeout, so that a late echo is still recognised.
        self._pending.expect(target, lines, (target, done), loop.time() + timeout + 60)
        async with asyncio.timeout(timeout):
            return await asyncio.shield(done)

    def echoed(self, event: ev.MessageReceived) -> None:
        """One of our own messages came back."""
        text = f"\x01ACTION {event.text}\x01" if event.kind == "action" else event.text
        now = asyncio.get_running_loop().time()
        self._settle(self._pending.echoed(event.target, text, event.msgid, now))

    def refused(self, event: ev.ServerReply) -> bool:
        """Settle what `event` refuses; False if it refuses none of our messages."""
        if event.code not in SEND_ERRORS or not event.params:
            return False
        now = asyncio.get_running_loop().time()
        settled = self._pending.refused(event.params[0], event.code, event.text, now)
        self._settle(settled or [])
        return settled is not None

    def fail_all(self, error: Exception) -> None:
        """The connection is gone: every waiting sender gets `error`."""
        for _, done in self._pending.clear():
            if not done.done():
                done.set_exception(error)
                done.exception()  # retrieved: the sender may have stopped waiting

    @staticmethod
    def _settle(outcomes: list[Outcome[_Token]]) -> None:
        for outcome in outcomes:
            target, done = outcome.token
            if done.done():
                continue
            if outcome.error is not None:
                done.set_exception(MessageRejected(target, *outcome.error))
                done.exception()
            else:
                done.set_result(outcome.msgid)
