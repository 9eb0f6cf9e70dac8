"""slixmpp's send queue kept short when a burst of stanzas is sent (slidge fix 40).

Everything a component sends waits in slixmpp's ``XMLStream.waiting_queue`` as a stanza
object until its loop ``run_filters`` has run the outgoing filters and written it. For
every async filter (a presence meets three: slidge's caps, XEP-0153's avatar hash,
XEP-0319's idle time) that loop makes a task and waits for it with a 1 s timeout,
several turns of the event loop per presence, even when the filter never waits for
anything. A burst of joins sends presences faster than that: with 50 users joining 5
rooms each at once, the queue held 5,600 stanzas (about 6 KiB each with their plugin
objects), and the memory they took is what a network process keeps after the burst
(CPython's arenas stay mapped while any block in them lives).

:func:`_run_filters` is the same loop with one change: an async filter is first run
*eagerly*, in the loop's own task; one that finishes without waiting (the common case)
gives its result at once, and one that does wait continues in a task handled exactly as
slixmpp handles it (1 s, then the slow path that sends it later). The filters, their
order and the order of the stanzas are slixmpp's. Every :data:`FAIR_EVERY` stanzas the
loop yields, so a long queue does not hold the event loop.

``tests/unit/test_slidge_memory.py`` has a detector (fails when slixmpp's loop changes)
and compares the two loops on the same stanzas and filters.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from inspect import iscoroutinefunction
from typing import Any

log = logging.getLogger(__name__)

FAIR_EVERY = 64
"""Stanzas written in a row before the send loop lets other tasks run."""

_MODES = ("out", "out_sync", "out_sce")
_SLOW_SENDS: set[asyncio.Future[None]] = set()
"""Stanzas whose filters took over a second, sent later (slixmpp's slow path)."""


async def _resume(coro: Coroutine[Any, Any, Any], waiting_for: Any) -> Any:
    """Run `coro` on from where it first waited (`waiting_for`: what it yielded, a
    future or None), as a task would have; its result is the filter's."""
    try:
        while True:
            if waiting_for is None:
                await asyncio.sleep(0)
            else:
                waiting_for._asyncio_future_blocking = False
                await asyncio.wait({waiting_for})
            try:
                waiting_for = coro.send(None)
            except StopIteration as done:
                return done.value
    except BaseException:
        coro.close()
        raise


async def _async_filter(stream: Any, coro: Coroutine[Any, Any, Any], used: set[Any]) -> Any:
    """An async filter's result: at once if it finishes without waiting, else as
    slixmpp's loop gets it (a task, 1 s, then its slow path: ``ContinueQueue``)."""
    from slixmpp.xmlstream.xmlstream import ContinueQueue

    try:
        waiting_for = coro.send(None)
    except StopIteration as done:
        return done.value
    task = asyncio.ensure_future(_resume(coro, waiting_for))
    _done, pending = await asyncio.wait({task}, timeout=1)
    if pending:
        stream._XMLStream__slow_tasks.append(task)
        later = asyncio.ensure_future(stream._continue_slow_send(task, used), loop=stream.loop)
        _SLOW_SENDS.add(later)  # slixmpp keeps no reference to it; a task needs one
        later.add_done_callback(_SLOW_SENDS.discard)
        raise ContinueQueue("Slow coroutine, rescheduling filters")
    return task.result()


async def _filtered(stream: Any, data: Any) -> Any:
    """`data` through the outgoing filters, in slixmpp's order; None: dropped."""
    from slixmpp.xmlstream import StanzaBase
    from slixmpp.xmlstream.xmlstream import ContinueQueue

    filters = stream._XMLStream__filters
    used: set[Any] = set()
    for mode in _MODES:
        for flt in filters[mode]:
            used.add(flt)
            if mode != "out_sync" and iscoroutinefunction(flt):
                data = await _async_filter(stream, flt(data), used)
            elif isinstance(data, StanzaBase):
                data = flt(data)
            if data is None:
                raise ContinueQueue("Empty stanza")
    return data


async def _run_filters(self: Any) -> None:
    """Fix 40: slixmpp's ``XMLStream.run_filters``, async filters run eagerly."""
    from slixmpp.xmlstream import StanzaBase, tostring
    from slixmpp.xmlstream.xmlstream import ContinueQueue

    in_a_row = 0
    while True:
        if in_a_row >= FAIR_EVERY:
            in_a_row = 0
            await asyncio.sleep(0)
        data, use_filters = await self.waiting_queue.get()
        in_a_row += 1
        try:
            if use_filters and isinstance(data, StanzaBase):
                data = await _filtered(self, data)
            if isinstance(data, StanzaBase):
                xml = tostring(data.xml, xmlns=self.default_ns, stream=self, top_level=True)
                self.send_raw(xml)
            elif isinstance(data, str | bytes):
                self.send_raw(data)
        except ContinueQueue as exc:
            log.debug("Stanza in send queue not sent: %s", exc)
        except asyncio.CancelledError:
            log.debug("Send coroutine received cancel(), stopping")
            return
        except Exception:
            log.exception("Exception raised in send queue:")
        self.waiting_queue.task_done()


def eager_send_filters() -> None:
    """Fix 40: install :func:`_run_filters` as slixmpp's send loop (idempotent). The
    loop it replaces stays its ``__wrapped__``, so detectors read slixmpp's source."""
    from slixmpp.xmlstream.xmlstream import XMLStream

    current = XMLStream.__dict__["run_filters"]
    if current is _run_filters:
        return
    _run_filters.__wrapped__ = current  # type: ignore[attr-defined]
    XMLStream.run_filters = _run_filters  # type: ignore[method-assign]


def apply() -> None:
    """Install the memory fixes (40-49); call before slidge connects."""
    eager_send_filters()
