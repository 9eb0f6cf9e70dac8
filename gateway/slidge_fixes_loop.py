"""The event loop's ends: how slidge stops on SIGTERM and on a failed background task.

These are slidge fixes 4 and 9 (listed with the others in :mod:`gateway.slidge_fixes`,
whose :func:`~gateway.slidge_fixes.apply` installs them); ``tests/unit/test_slidge_fixes.py``
holds their detectors.

4. slidge's SIGTERM handler raises ``SigTermInterrupt`` from wherever the main thread is;
   inside a stanza handler slidge's own ``except Exception`` swallows it and the process
   keeps running until SIGKILL, without its clean shutdown.
   :func:`gateway.slidge_fixes.apply` replaces the handler with one that stops the event
   loop, after which slidge shuts down as usual.
9. slidge's event loop exception handler stops the whole gateway (exit code 3: every
   user of the network logged out, until the supervisor restarts it) when any task it
   started fails unobserved, including with an ``XMPPError``: the error a plugin raises
   for the user, which in a background task (fetching the user's avatar at login, say)
   has no stanza to answer. :func:`gateway.slidge_fixes.apply` wraps the handler so such
   an error is logged and the gateway goes on; any other exception still stops it, as
   before.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def _stop_loop_on_sigterm(_signum: int, _frame: object) -> None:
    """Bug 4: end ``loop.run_forever()`` instead of raising into whatever code runs."""
    import asyncio

    logging.getLogger("slidge.main").info("Caught SIGTERM, shutting down")
    loop = asyncio.get_event_loop()
    loop.call_soon_threadsafe(loop.stop)


def _answerless_errors_are_logged(handler: Callable[..., None]) -> Callable[..., None]:
    """Fix 9: slidge's loop exception handler, except for an ``XMPPError`` nobody can get."""
    from slixmpp.exceptions import XMPPError

    @functools.wraps(handler)
    def handle(self: Any, loop: Any, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, XMPPError):
            coro = getattr(context.get("future"), "get_coro", lambda: None)()
            where = getattr(coro, "__qualname__", "a task")
            log.warning("%s failed: %s (%s)", where, exc.condition, exc.text)
            return
        handler(self, loop, context)

    handle.passerelle_fix = True  # type: ignore[attr-defined]
    return handle


def log_answerless_errors() -> None:
    """Fix 9: install :func:`_answerless_errors_are_logged` (idempotent)."""
    from slidge.core.gateway import BaseGateway

    name = "_BaseGateway__exception_handler"
    current = getattr(BaseGateway, name)
    if not getattr(current, "passerelle_fix", False):
        setattr(BaseGateway, name, _answerless_errors_are_logged(current))
