"""What a plugin calls to reach the roster and the presences slidge keeps to itself.

These are slidge fixes 1 and 50 (listed with the others in :mod:`gateway.slidge_fixes`):
neither is installed by :func:`gateway.slidge_fixes.apply`; a plugin calls them.
``tests/unit/test_slidge_fixes.py`` and ``tests/unit/test_slidge_fix_presence_hook.py``
hold their detectors.

1. ``LegacyRoster._fill`` never pushes contacts to the roster, because it tests
   ``hasattr(xmpp, "TEST_MODE")``, which is always true (a class attribute of
   ``SubclassableOnce``). Plugins call :func:`push_to_roster` instead.
50. slidge has no way for a plugin to see a presence before its own handlers do: they
    are methods of its session dispatcher, private to ``BaseGateway``
    (``_BaseGateway__dispatcher``). Its ``presence`` handler answers a MUC nick change with
    "Slidge does not let you change your nickname in groups", and its ``groupchat_join``
    handler answers an unregistered JID with ``registration-required``; IRC has nick
    changes and Biboumi-style auto-registration. :func:`handle_before_slidge` lets a
    plugin's handler stand in front of either, and hand the presence on (or not).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from slidge.contact import LegacyContact


async def push_to_roster(contact: LegacyContact) -> None:
    """Bug 1: put a friend into the user's roster through the XEP-0356 privilege."""
    contact.is_friend = True
    await contact.add_to_roster()


SLIDGE_HANDLERS = {"presence": "on_presence", "groupchat_join": "on_groupchat_join"}
"""Fix 50: the slixmpp events :func:`handle_before_slidge` can take, and the name of the
slidge dispatcher method that handles each."""

SlidgeHandler = Callable[[Any], Awaitable[None]]
"""Fix 50: slidge's own handler of a presence event, for a plugin's handler to call."""


def handle_before_slidge(
    xmpp: Any, handlers: Mapping[str, Callable[[Any, SlidgeHandler], Awaitable[None]]]
) -> bool:
    """Fix 50: for each ``event: handler`` of ``handlers`` (events of
    :data:`SLIDGE_HANDLERS`), run ``await handler(presence, slidge_handler)`` in place of
    slidge's handler of ``event``; ``handler`` decides whether to hand ``presence`` on.

    Call it from the plugin gateway's ``__init__``, after ``super().__init__()``. Returns
    False, changing nothing, if this slidge has not the handlers it expects.
    """
    dispatcher = getattr(xmpp, "_BaseGateway__dispatcher", None)
    originals: dict[str, SlidgeHandler] = {}
    for event in handlers:
        original = getattr(dispatcher, SLIDGE_HANDLERS[event], None)
        if original is None:
            return False
        originals[event] = original
    for event, handler in handlers.items():
        xmpp.del_event_handler(event, originals[event])
        xmpp.add_event_handler(event, _in_front(handler, originals[event]))
    return True


def _in_front(
    handler: Callable[[Any, SlidgeHandler], Awaitable[None]], slidge_handler: SlidgeHandler
) -> SlidgeHandler:
    async def in_front_of_slidge(presence: Any) -> None:
        await handler(presence, slidge_handler)

    return in_front_of_slidge
