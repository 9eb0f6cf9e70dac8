"""Back-pressure on what XMPP users send: a burst waits as text, not as live tasks.

slixmpp turns every stanza it reads into a stanza object and a task per handler at once.
A user who pastes 1,000 lines into a room therefore had 1,000 tasks, each with its stanza
and a chain of slidge frames (~6 KiB), waiting for the room's turn to send (one Matrix
request in flight per room keeps the order, see :mod:`.outbox`); they were freed once
sent, but the pages they took stayed with the process (bench/README.md).

:class:`Inbox` is an incoming stanza filter. It lets at most :data:`LIVE` message
stanzas of one sender (bare JID) be handled at once: a message stanza counts until the
last reference to it goes, i.e. when every slidge handler of it has finished. Beyond
that, the sender's stanzas wait in a queue of their own as serialized XML (~0.5 KiB a
message) and are handed to slixmpp, rebuilt, one by one in the order they came as
earlier ones finish. Nothing is dropped and one sender's stanzas keep their order: once
something of a sender waits, everything after it waits too (messages and presences; IQ
results and errors pass, as a running handler may be waiting for one, and so do IQ
gets, which change nothing). Other senders are not held up.

If no stanza of a sender finishes for :data:`WATCH` seconds while some wait (a very
slow upload, or a stanza kept alive by something), the next one is let in anyway and the
fact logged: slower and less bounded, never stuck.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING
from xml.etree import ElementTree as ET

from slixmpp import Iq, Message
from slixmpp.xmlstream import StanzaBase

from gateway import malloc_tuning

if TYPE_CHECKING:
    from slixmpp import BaseXMPP

log = logging.getLogger(__name__)

LIVE = 8
"""Message stanzas of one sender handled at once (a room sends one at a time anyway)."""
WATCH = 10.0
"""Seconds without any of a sender's stanzas finishing before the next is let in anyway."""
TRIM_DELAY = 1.0
"""Seconds between a burst's end and the malloc trim that follows (several coalesce)."""


class _Trimmer:
    def __init__(self) -> None:
        self.pending: asyncio.TimerHandle | None = None

    def soon(self) -> None:
        if self.pending is None:
            self.pending = asyncio.get_running_loop().call_later(TRIM_DELAY, self._now)

    def _now(self) -> None:
        self.pending = None
        malloc_tuning.trim()


_trimmer = _Trimmer()


def trim_soon() -> None:
    """Give freed heap memory back to the system shortly (one trim for several calls):
    after a burst, the periodic trim of :mod:`gateway.malloc_tuning` may be a minute
    away."""
    _trimmer.soon()


class _Sender:
    __slots__ = ("held", "live", "progress", "watching")

    def __init__(self) -> None:
        self.live = 0
        self.held: deque[str] = deque()
        self.progress = 0
        """Finished stanzas so far: the watchdog looks for a change."""
        self.watching = False


class Inbox:
    def __init__(self, xmpp: BaseXMPP, live: int = LIVE, watch: float = WATCH):
        self.xmpp = xmpp
        self.live = live
        self.watch = watch
        self.senders: dict[str, _Sender] = {}
        self._refs: dict[int, weakref.ref[Message]] = {}
        """The live message stanzas' weak references (stanzas are not hashable)."""
        self._releasing = False

    def install(self) -> None:
        self.xmpp.add_filter("in", self.filter)

    def held(self) -> int:
        """Stanzas waiting, all senders together."""
        return sum(len(s.held) for s in self.senders.values())

    def filter(self, stanza: StanzaBase) -> StanzaBase | None:
        if self._releasing or not _ordered(stanza):
            return stanza
        key = stanza["from"].bare
        sender = self.senders.get(key)
        if sender is None:
            if not isinstance(stanza, Message):
                return stanza
            sender = self.senders[key] = _Sender()
        if sender.held or (isinstance(stanza, Message) and sender.live >= self.live):
            sender.held.append(ET.tostring(stanza.xml, encoding="unicode"))
            self._watch(key, sender)
            return None
        self._count(key, sender, stanza)
        return stanza

    def _count(self, key: str, sender: _Sender, stanza: StanzaBase) -> None:
        if isinstance(stanza, Message):
            sender.live += 1
            ref = weakref.ref(stanza, self._finished(key))
            self._refs[id(ref)] = ref

    def _finished(self, key: str) -> Callable[[weakref.ref[Message]], None]:
        def callback(ref: weakref.ref[Message]) -> None:
            # Runs while the stanza is being freed, in the middle of whatever freed it:
            # only schedule the rest.
            self._refs.pop(id(ref), None)
            try:
                self.xmpp.loop.call_soon_threadsafe(self._done, key)
            except RuntimeError:  # the loop is closed: the process is ending
                pass

        return callback

    def _done(self, key: str) -> None:
        sender = self.senders.get(key)
        if sender is None:
            return
        sender.live -= 1
        sender.progress += 1
        self._release(key, sender)

    def _release(self, key: str, sender: _Sender, extra: int = 0) -> None:
        """Hand waiting stanzas to slixmpp while the sender has room (`extra` more)."""
        while sender.held and (sender.live < self.live + extra):
            # Our own serialization of a stanza slixmpp already parsed: no DTD, no entities.
            xml = ET.fromstring(sender.held.popleft())  # noqa: S314
            try:
                stanza = self.xmpp._build_stanza(xml)
            except Exception:
                log.exception("Could not rebuild a held stanza of %s: %s", key, xml)
                continue
            self._count(key, sender, stanza)
            self._releasing = True
            try:
                self.xmpp.recv_stanza(stanza)
            finally:
                self._releasing = False
            del stanza
        if not sender.held and not sender.live:
            del self.senders[key]
            if sender.progress > self.live:
                trim_soon()  # after a burst

    def _watch(self, key: str, sender: _Sender) -> None:
        if not sender.watching:
            sender.watching = True
            self.xmpp.loop.call_later(self.watch, self._check, key, sender, sender.progress)

    def _check(self, key: str, sender: _Sender, progress: int) -> None:
        sender.watching = False
        if self.senders.get(key) is not sender or not sender.held:
            return
        if sender.progress == progress:
            log.warning(
                "None of %d stanzas of %s being handled finished in %g s; "
                "letting the next of %d waiting in",
                sender.live,
                key,
                self.watch,
                len(sender.held),
            )
            self._release(key, sender, extra=sender.live - self.live + 1)
        if sender.held:
            self._watch(key, sender)


def _ordered(stanza: StanzaBase) -> bool:
    """Whether the stanza keeps its place behind the sender's waiting ones."""
    if isinstance(stanza, Iq):
        return bool(stanza["type"] == "set")
    return True
