"""Keep what a network process built while starting out of the garbage collector's way.

A network process holds a large, long-lived heap once started (slixmpp, slidge,
SQLAlchemy, the plugins' modules and objects). CPython's full (generation 2) collection
walks every tracked object each time, and it runs on the event loop: in the IRC
benchmark (20 users x 3 channels, 4,000 messages each way) each full collection of the
IRC child while messages flowed stopped its loop for 70 to 90 ms, every user's messages
waiting. After start-up little of that heap ever becomes garbage, so :func:`install`
schedules one ``gc.collect()`` and ``gc.freeze()`` :data:`FREEZE_AFTER` seconds after
the event loop starts: the objects alive then move to a permanent generation that
collections skip (reference counting still frees them), and later full collections walk
only what came after: 4 to 10 ms while messages flow in the same benchmark (the joins,
which make many new objects, still see one of ~65 ms). See ``bench/README.md``, "Memory".
"""

from __future__ import annotations

import asyncio
import gc
import logging

log = logging.getLogger(__name__)

FREEZE_AFTER = 15.0
"""Seconds after the event loop starts (start-up is over by then, as for malloc's trim)."""


def freeze() -> int:
    """Collect, then move every object alive now out of later collections; how many."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("%d objects kept out of garbage collection", frozen)
    return frozen


def install(loop: asyncio.AbstractEventLoop, after: float = FREEZE_AFTER) -> None:
    """Schedule :func:`freeze` on `loop`, `after` seconds from when it runs."""
    loop.call_later(after, freeze)
