"""The echo network's "client library": the only module that talks to the network.

A real plugin's ``client.py`` wraps ``irc``, ``nio`` or the Delta Chat RPC. Here the network
is in-process: messages go into a queue and come back as events after ``delay``.
"""

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable

from .translate import MAX_LENGTH, EchoEvent, EchoMsgId, answer

log = logging.getLogger(__name__)


class EchoNetworkError(Exception):
    """The network refused a message; the text says why."""


class EchoClient:
    """One user's connection to the echo network."""

    def __init__(self, on_event: Callable[[EchoEvent], Awaitable[None]], delay: float) -> None:
        self._on_event = on_event
        self._delay = delay
        self._ids = itertools.count(1)
        self._queue: asyncio.Queue[EchoEvent] = asyncio.Queue(maxsize=1000)

    def send(self, text: str, corrects: EchoMsgId | None = None) -> EchoMsgId:
        """Send ``text`` (a correction of ``corrects`` if set); returns its id."""
        if len(text) > MAX_LENGTH:
            raise EchoNetworkError(f"message too long ({len(text)} > {MAX_LENGTH} characters)")
        if self._queue.full():
            raise EchoNetworkError("too many messages in flight; try again in a moment")
        msg_id = EchoMsgId(str(next(self._ids)))
        self._queue.put_nowait(answer(msg_id, text, corrects))
        return msg_id

    async def run(self) -> None:
        """Deliver answers in order until cancelled."""
        while True:
            event = await self._queue.get()
            if self._delay:
                await asyncio.sleep(self._delay)
            try:
                await self._on_event(event)
            except Exception:
                # A bad event must not kill the user's session: log it and go on.
                log.exception("Could not deliver echo event %s", event.msg_id)
