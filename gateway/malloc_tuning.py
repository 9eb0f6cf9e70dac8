"""glibc malloc settings for a network process: fewer arenas, free pages given back.

A network process allocates most of its memory while it starts (imports, the database,
the XMPP session) and much of it is freed again before it settles; glibc keeps such
freed memory for reuse instead of returning it to the kernel, and keeps one arena per
thread that ever allocated (up to eight per core). :func:`install`, called by
:mod:`gateway.child` before slidge starts, caps the arenas at :data:`ARENAS` (what
``MALLOC_ARENA_MAX=2`` does) and schedules ``malloc_trim(0)`` on the event loop
:data:`FIRST_TRIM` seconds after start-up and every :data:`TRIM_EVERY` seconds after that,
so memory freed after a burst (many joins, a large backlog) goes back to the system.

Neither changes what the process does; on a C library without these calls (musl, macOS)
both are skipped. ``bench/memory.py`` measures the effect.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

ARENAS = 2
"""Most malloc arenas: the event loop's thread and the few worker threads share them."""
FIRST_TRIM = 15.0
"""Seconds after the event loop starts before the first trim (start-up is over by then)."""
TRIM_EVERY = 60.0
"""Seconds between later trims; one trim takes about a millisecond."""

_M_ARENA_MAX = -8  # from glibc's malloc.h


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):
        return None
    return libc


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas; whether it could."""
    libc = _glibc()
    return libc is not None and libc.mallopt(_M_ARENA_MAX, arenas) == 1


def trim() -> bool:
    """Give freed heap memory back to the kernel; whether any was."""
    libc = _glibc()
    return libc is not None and libc.malloc_trim(0) == 1


def _trim_and_reschedule(loop: asyncio.AbstractEventLoop, every: float) -> None:
    trim()
    loop.call_later(every, _trim_and_reschedule, loop, every)


def install(
    loop: asyncio.AbstractEventLoop, first: float = FIRST_TRIM, every: float = TRIM_EVERY
) -> None:
    """Limit the arenas now and trim on ``loop`` after ``first`` s, then every ``every`` s."""
    if _glibc() is None:
        log.debug("not glibc: malloc left as it is")
        return
    limit_arenas()
    loop.call_later(first, _trim_and_reschedule, loop, every)
