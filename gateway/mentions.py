"""XEP-0372 mention references on the groupchat messages a network's occupants send.

slidge 0.4.2's ``send_text`` has no parameter for mentions: a plugin's participant class
takes them with `MentionsOnMessages` as the keyword ``mentions`` — each an object with
``begin`` and ``end`` (code points of the body, end exclusive, which is what Python string
indexes count) and the occupant's ``xmpp:ROOM/NICK`` URI (`mention_uri`) — and they are
added to the message before slidge archives and sends it."""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import quote

from slixmpp import Message
from slixmpp.plugins.xep_0372.stanza import Reference

__all__ = ["REFERENCE_NS", "MentionsOnMessages", "Span", "mention_uri"]

REFERENCE_NS = "urn:xmpp:reference:0"
# RFC 5122 characters an xmpp: URI keeps as they are; everything else is %-encoded.
_URI_SAFE = "!$&'()*+,;=:@/-._~"


class Span(Protocol):
    @property
    def begin(self) -> int: ...
    @property
    def end(self) -> int: ...


def mention_uri(room_jid: str, nick: str) -> str:
    """`xmpp:ROOM/NICK` (RFC 5122: `#` → %23, `%` → %25, `[` → %5B…)."""
    return "xmpp:" + quote(f"{room_jid}/{nick}", safe=_URI_SAFE)


class MentionsOnMessages:
    """Mixin for a room's participant class: `send_text(..., mentions=...)` puts XEP-0372
    mention references on the groupchat message (archive included)."""

    def _send(self, stanza: Any, *args: Any, **kwargs: Any) -> Any:
        mentions: tuple[tuple[Span, str], ...] = kwargs.pop("mentions", None) or ()
        if mentions and isinstance(stanza, Message):
            for mention, uri in mentions:
                ref = Reference()
                ref["type"], ref["uri"] = "mention", uri
                ref["begin"], ref["end"] = str(mention.begin), str(mention.end)
                stanza.append(ref)
        return super()._send(stanza, *args, **kwargs)  # type: ignore[misc]
