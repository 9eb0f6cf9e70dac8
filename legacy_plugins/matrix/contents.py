"""What the XMPP user sends, as Matrix event contents: the XMPP → Matrix half of translation.

Text (XEP-0393 styling becomes ``org.matrix.custom.html``, ``/me`` becomes ``m.emote``,
the people the client marked as mentioned go into ``m.mentions``), edits (``m.replace``
with ``m.new_content``), replies (``m.in_reply_to``, without a fallback, as the spec
allows since v1.13), reactions and media, and the Matrix presence for an XMPP one.
Pure: each function returns a JSON-ready ``dict`` and sends nothing; reading what
Matrix sends is :mod:`.translate`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.formatting import from_xep0393

from .events import HTML_FORMAT, PresenceState
from .html import styled_to_html
from .ids import EventId, UserId

__all__ = [
    "edit_content",
    "media_content",
    "msgtype_for",
    "presence_for_xmpp_show",
    "reaction_content",
    "text_content",
]

EMOTE_PREFIX = "/me "


def _text_fields(body: str) -> dict[str, Any]:
    emote = body.startswith(EMOTE_PREFIX)
    if emote:
        body = body.removeprefix(EMOTE_PREFIX)
    content: dict[str, Any] = {"msgtype": "m.emote" if emote else "m.text", "body": body}
    formatted = styled_to_html(from_xep0393(body))
    if formatted is not None:
        content["format"] = HTML_FORMAT
        content["formatted_body"] = formatted
    return content


def text_content(
    body: str, *, reply_to: EventId | None = None, mentions: Sequence[UserId] = ()
) -> dict[str, Any]:
    """An ``m.room.message`` for text the XMPP user wrote (XEP-0393 styling → HTML)."""
    content = _text_fields(body)
    if reply_to is not None:
        content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}
    content["m.mentions"] = {"user_ids": sorted(set(mentions))} if mentions else {}
    return content


def edit_content(original: EventId, body: str) -> dict[str, Any]:
    """An edit (``m.replace``) of ``original`` to ``body``; the outer body is the
    ``* new text`` fallback clients without edit support show."""
    new = _text_fields(body)
    content = {**new, "body": "* " + new["body"]}
    if "formatted_body" in new:
        content["formatted_body"] = "* " + new["formatted_body"]
    content["m.new_content"] = new
    content["m.relates_to"] = {"rel_type": "m.replace", "event_id": original}
    return content


def reaction_content(target: EventId, key: str) -> dict[str, Any]:
    """An ``m.reaction`` to ``target``."""
    return {"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}}


def msgtype_for(mimetype: str | None) -> str:
    """The ``msgtype`` of a file by its MIME type."""
    major = (mimetype or "").split("/", 1)[0]
    return {"image": "m.image", "audio": "m.audio", "video": "m.video"}.get(major, "m.file")


def media_content(
    mxc: str,
    name: str,
    mimetype: str | None,
    size: int,
    *,
    caption: str | None = None,
    file: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An ``m.image``/``m.file``/… event for an uploaded file (caption per spec v1.10);
    with ``file`` (keys of an encrypted upload), the file is given as encrypted."""
    info: dict[str, Any] = {"size": size}
    if mimetype:
        info["mimetype"] = mimetype
    content: dict[str, Any] = {
        "msgtype": msgtype_for(mimetype),
        "body": caption or name,
        "filename": name,
        "info": info,
    }
    if file is not None:
        content["file"] = {**file, "url": mxc}
    else:
        content["url"] = mxc
    return content


def presence_for_xmpp_show(show: str | None) -> PresenceState:
    """The Matrix presence for an XMPP ``<show/>`` ("" or None: available; no
    presence at all: pass "unavailable")."""
    if show in ("away", "xa"):
        return "unavailable"
    if show == "unavailable":
        return "offline"
    return "online"  # available, chat, dnd (Matrix has no "busy")
