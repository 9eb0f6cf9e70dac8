"""Pure mapping of what Matrix sends to the values the XMPP side shows (:mod:`.events`).

`parse_sync` validates a ``/sync`` response once, at the edge, and turns it into a
`SyncBatch` of small frozen events (`Message`, `Reaction`, `Redaction`, `Membership`, …);
anything malformed or uninteresting is dropped there, never raised. Message text arrives
as `StyledText` with Matrix reply fallbacks stripped (`strip_reply_fallback`), edits
point at the event they replace, media carry their ``mxc://`` URI, and each message
names whom it mentions (:mod:`.mentions`). An event that carries
``unsigned.transaction_id`` was sent by this very device (the gateway), so it is marked
``own_device`` and not delivered twice. ``/messages`` pages and ``/members`` answers are
read the same way; `backfill_messages` picks from a room's history what its archive
lacks, and `what_it_is` names an event that cannot be decrypted.

The other direction, event contents built from what the XMPP user sends, is
:mod:`.contents`. No I/O, no clock: times are the events' own ``origin_server_ts``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from gateway.formatting import StyledText, to_plain

from .events import (
    HTML_FORMAT,
    MEDIA_KINDS,
    PRESENCE_STATES,
    Encrypted,
    InvitedRoom,
    JoinedRoom,
    Media,
    Membership,
    Message,
    MsgKind,
    Reaction,
    Receipt,
    Redaction,
    StateChange,
    SyncBatch,
    TimelineEvent,
    Typing,
    UserPresence,
)
from .html import html_to_styled
from .ids import EventId, RoomId, UserId, is_room_id, is_user_id
from .mentions import mentioned

__all__ = [
    "UNREADABLE",
    "backfill_messages",
    "parse_direct",
    "parse_event",
    "parse_members",
    "parse_messages",
    "parse_sync",
    "strip_reply_fallback",
    "what_it_is",
]

_MSGTYPES: dict[str, MsgKind] = {
    "m.text": "text",
    "m.emote": "emote",
    "m.notice": "notice",
    "m.image": "image",
    "m.file": "file",
    "m.audio": "audio",
    "m.video": "video",
}


# --- small validators ----------------------------------------------------------------


def _obj(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> Sequence[Any]:
    return value if isinstance(value, list) else ()


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# --- events --------------------------------------------------------------------------


def strip_reply_fallback(body: str) -> str:
    """Remove the ``> <@user:server> quoted text`` lines (and the blank line after them)
    that Matrix clients put before the text of a reply."""
    lines = body.split("\n")
    if not lines or not lines[0].startswith("> <"):
        return body
    n = 0
    while n < len(lines) and lines[n].startswith(">"):
        n += 1
    if n < len(lines) and lines[n] == "":
        n += 1
    return "\n".join(lines[n:])


def _message_text(content: Mapping[str, Any], is_reply: bool) -> StyledText:
    body = _str(content.get("body")) or ""
    formatted = _str(content.get("formatted_body"))
    if formatted is not None and content.get("format") == HTML_FORMAT:
        styled = html_to_styled(formatted)  # <mx-reply> is dropped by the reader
        if to_plain(styled).strip() or not body.strip():
            return styled
    return StyledText.plain(strip_reply_fallback(body) if is_reply else body)


def _media(content: Mapping[str, Any], kind: MsgKind) -> Media | None:
    info = _obj(content.get("info"))
    name = _str(content.get("filename")) or _str(content.get("body")) or kind
    mimetype = _str(info.get("mimetype"))
    size = _int(info.get("size"))
    url = _str(content.get("url"))
    if url is not None and url.startswith("mxc://"):
        return Media(url, name, mimetype, size)
    file = _obj(content.get("file"))
    url = _str(file.get("url"))
    if url is not None and url.startswith("mxc://"):
        return Media(url, name, mimetype, size, encrypted=True, file=file)
    return None


@dataclass(frozen=True, slots=True)
class _Head:
    """What every room event has."""

    room_id: RoomId
    event_id: EventId
    sender: UserId
    ts: int
    own: bool
    """Sent by this device (the gateway): it carries our transaction ID."""


def _parse_message(
    head: _Head, event: Mapping[str, Any], content: Mapping[str, Any]
) -> Message | None:
    if not content:
        return None  # a redacted message: its redaction event tells the story
    relates = _obj(content.get("m.relates_to"))
    replaces: EventId | None = None
    if relates.get("rel_type") == "m.replace" and (target := _str(relates.get("event_id"))):
        new_content = content.get("m.new_content")
        if not isinstance(new_content, Mapping):
            return None
        replaces = EventId(target)
        content = new_content
    reply = _str(_obj(relates.get("m.in_reply_to")).get("event_id"))
    if event.get("type") == "m.sticker":
        kind: MsgKind = "sticker"
    else:
        msgtype = _str(content.get("msgtype"))
        if msgtype is None:
            return None
        kind = _MSGTYPES.get(msgtype, "text")  # unknown msgtypes: show the body
    media = _media(content, kind) if kind in MEDIA_KINDS else None
    if kind in MEDIA_KINDS and media is None:
        kind = "text"
    if media is not None:
        # Since spec v1.10, a body that differs from the file name is a caption.
        filename = _str(content.get("filename"))
        has_caption = filename is not None and content.get("body") not in (None, filename)
        text = _message_text(content, reply is not None) if has_caption else StyledText()
    else:
        text = _message_text(content, reply is not None)
    return Message(
        head.room_id,
        head.event_id,
        head.sender,
        head.ts,
        kind,
        text,
        media=media,
        reply_to=EventId(reply) if reply and replaces is None else None,
        replaces=replaces,
        own_device=head.own,
        mentions=mentioned(content),
    )


def _parse_reaction(
    head: _Head, _event: Mapping[str, Any], content: Mapping[str, Any]
) -> Reaction | None:
    relates = _obj(content.get("m.relates_to"))
    target, key = _str(relates.get("event_id")), _str(relates.get("key"))
    if relates.get("rel_type") != "m.annotation" or not target or not key:
        return None
    r = head
    return Reaction(r.room_id, r.event_id, r.sender, r.ts, EventId(target), key, r.own)


def _parse_redaction(
    head: _Head, event: Mapping[str, Any], content: Mapping[str, Any]
) -> Redaction | None:
    # Room versions up to 10 put 'redacts' at the top, version 11 in the content.
    target = _str(content.get("redacts")) or _str(event.get("redacts"))
    if not target:
        return None
    r = head
    reason = _str(content.get("reason"))
    return Redaction(r.room_id, r.event_id, r.sender, r.ts, EventId(target), reason, r.own)


def _parse_encrypted(
    head: _Head, event: Mapping[str, Any], content: Mapping[str, Any]
) -> Encrypted:
    r = head
    session = _str(content.get("session_id")) or ""
    return Encrypted(r.room_id, r.event_id, r.sender, r.ts, session, r.own, event)


_ROOM_EVENTS: dict[
    str, Callable[[_Head, Mapping[str, Any], Mapping[str, Any]], TimelineEvent | None]
] = {
    "m.room.message": _parse_message,
    "m.sticker": _parse_message,
    "m.reaction": _parse_reaction,
    "m.room.redaction": _parse_redaction,
    "m.room.encrypted": _parse_encrypted,
}


def _parse_state(
    room_id: RoomId, sender: UserId, etype: str, state_key: str, content: Mapping[str, Any]
) -> Membership | StateChange | None:
    if etype != "m.room.member":
        return StateChange(room_id, sender, etype, state_key, content)
    membership = _str(content.get("membership"))
    if membership is None or not is_user_id(state_key):
        return None
    return Membership(
        room_id,
        sender,
        UserId(state_key),
        membership,
        displayname=_str(content.get("displayname")),
        avatar_url=_str(content.get("avatar_url")),
        is_direct=content.get("is_direct") is True,
        reason=_str(content.get("reason")),
    )


def parse_event(room_id: RoomId, raw: object) -> TimelineEvent | None:
    """One timeline (or state) event, or None if it is malformed or of no interest."""
    event = _obj(raw)
    etype = _str(event.get("type"))
    sender = _str(event.get("sender"))
    if etype is None or sender is None or not is_user_id(sender):
        return None
    content = _obj(event.get("content"))
    state_key = _str(event.get("state_key"))
    if state_key is not None:
        return _parse_state(room_id, UserId(sender), etype, state_key, content)
    event_id = _str(event.get("event_id"))
    parse = _ROOM_EVENTS.get(etype)
    if event_id is None or parse is None:
        return None
    own = _str(_obj(event.get("unsigned")).get("transaction_id")) is not None
    ts = _int(event.get("origin_server_ts")) or 0
    return parse(_Head(room_id, EventId(event_id), UserId(sender), ts, own), event, content)


def _parse_ephemeral(room_id: RoomId, raw: object) -> list[Typing | Receipt]:
    event = _obj(raw)
    content = _obj(event.get("content"))
    if event.get("type") == "m.typing":
        users = frozenset(UserId(u) for u in _list(content.get("user_ids")) if _str(u))
        return [Typing(room_id, users)]
    if event.get("type") != "m.receipt":
        return []
    receipts: list[Typing | Receipt] = []
    for event_id, by_type in content.items():
        for rtype, private in (("m.read", False), ("m.read.private", True)):
            for user in _obj(_obj(by_type).get(rtype)):
                if is_user_id(user):
                    receipts.append(Receipt(room_id, UserId(user), EventId(event_id), private))
    return receipts


def _parse_joined(room_id: RoomId, raw: Mapping[str, Any]) -> JoinedRoom:
    timeline = _obj(raw.get("timeline"))
    summary = _obj(raw.get("summary"))
    state: list[Membership | StateChange] = []
    for item in _list(_obj(raw.get("state")).get("events")):
        parsed = parse_event(room_id, item)
        if isinstance(parsed, Membership | StateChange):
            state.append(parsed)
    events = [parse_event(room_id, item) for item in _list(timeline.get("events"))]
    ephemeral: list[Typing | Receipt] = []
    for item in _list(_obj(raw.get("ephemeral")).get("events")):
        ephemeral.extend(_parse_ephemeral(room_id, item))
    return JoinedRoom(
        room_id,
        tuple(state),
        tuple(e for e in events if e is not None),
        limited=timeline.get("limited") is True,
        prev_batch=_str(timeline.get("prev_batch")),
        ephemeral=tuple(ephemeral),
        joined_count=_int(summary.get("m.joined_member_count")),
        invited_count=_int(summary.get("m.invited_member_count")),
        heroes=tuple(UserId(h) for h in _list(summary.get("m.heroes")) if _str(h)),
    )


def _parse_invited(room_id: RoomId, raw: Mapping[str, Any], me: UserId) -> InvitedRoom:
    inviter: UserId | None = None
    is_direct = False
    name: str | None = None
    encrypted = False
    for item in _list(_obj(raw.get("invite_state")).get("events")):
        event = parse_event(room_id, item)
        if isinstance(event, Membership) and event.user == me and event.membership == "invite":
            inviter, is_direct = event.sender, event.is_direct
        elif isinstance(event, StateChange) and event.type == "m.room.name":
            name = _str(event.content.get("name")) or name
        elif isinstance(event, StateChange) and event.type == "m.room.encryption":
            encrypted = True
    return InvitedRoom(room_id, inviter, is_direct, name, encrypted)


def parse_direct(content: object) -> dict[UserId, tuple[RoomId, ...]]:
    """``m.direct`` account data: user → their direct rooms (invalid entries dropped)."""
    direct: dict[UserId, tuple[RoomId, ...]] = {}
    for user, rooms in _obj(content).items():
        valid = tuple(RoomId(r) for r in _list(rooms) if isinstance(r, str) and is_room_id(r))
        if is_user_id(user) and valid:
            direct[UserId(user)] = valid
    return direct


def parse_sync(body: object, me: UserId) -> SyncBatch:
    """A ``/sync`` response as a `SyncBatch`; ``ValueError`` only if it has no
    ``next_batch`` (then it is not a sync response at all)."""
    data = _obj(body)
    next_batch = _str(data.get("next_batch"))
    if not next_batch:
        raise ValueError("the homeserver's sync response has no next_batch token")
    rooms = _obj(data.get("rooms"))
    joined = tuple(
        _parse_joined(RoomId(room_id), _obj(raw))
        for room_id, raw in _obj(rooms.get("join")).items()
        if is_room_id(room_id)
    )
    invited = tuple(
        _parse_invited(RoomId(room_id), _obj(raw), me)
        for room_id, raw in _obj(rooms.get("invite")).items()
        if is_room_id(room_id)
    )
    left = tuple(RoomId(r) for r in _obj(rooms.get("leave")) if is_room_id(r))
    direct = None
    for item in _list(_obj(data.get("account_data")).get("events")):
        if _obj(item).get("type") == "m.direct":
            direct = parse_direct(_obj(item).get("content"))
    to_device = tuple(
        _obj(e)
        for e in _list(_obj(data.get("to_device")).get("events"))
        if _str(_obj(e).get("type")) and is_user_id(_str(_obj(e).get("sender")) or "")
    )
    changed = frozenset(
        UserId(u)
        for u in _list(_obj(data.get("device_lists")).get("changed"))
        if isinstance(u, str) and is_user_id(u)
    )
    otk = _int(_obj(data.get("device_one_time_keys_count")).get("signed_curve25519"))
    presence = tuple(
        p for p in map(_parse_presence, _list(_obj(data.get("presence")).get("events"))) if p
    )
    return SyncBatch(next_batch, joined, invited, left, direct, to_device, changed, otk, presence)


def _parse_presence(raw: object) -> UserPresence | None:
    event = _obj(raw)
    content = _obj(event.get("content"))
    sender = _str(event.get("sender"))
    state = _str(content.get("presence"))
    if event.get("type") != "m.presence" or not sender or not is_user_id(sender):
        return None
    if state not in PRESENCE_STATES:
        return None
    status = _str(content.get("status_msg")) or None
    ago = _int(content.get("last_active_ago"))
    return UserPresence(UserId(sender), state, status, ago)  # type: ignore[arg-type]


def parse_messages(room_id: RoomId, body: object) -> tuple[list[TimelineEvent], str | None]:
    """A ``/messages`` page: its events in the order given, and the ``end`` token (None
    when there is nothing more)."""
    data = _obj(body)
    events = [parse_event(room_id, raw) for raw in _list(data.get("chunk"))]
    return [e for e in events if e is not None], _str(data.get("end"))


def parse_members(room_id: RoomId, body: object) -> list[Membership]:
    """A ``/members`` answer: each member's current membership."""
    events = [parse_event(room_id, raw) for raw in _list(_obj(body).get("chunk"))]
    return [e for e in events if isinstance(e, Membership)]


# --- history and what cannot be read -------------------------------------------------


class Bound(Protocol):
    """One end of what an archive already holds (slidge's ``HoleBound``)."""

    @property
    def id(self) -> str: ...
    @property
    def timestamp(self) -> datetime: ...


def backfill_messages(
    events: Sequence[TimelineEvent],
    after: Bound | None,
    before: Bound | None,
    delivered: Callable[[str], bool],
    decrypt: Callable[[Encrypted], TimelineEvent | None],
) -> list[Message | Encrypted]:
    """From a room's recent history (oldest first), the new messages worth archiving:
    after ``after`` and before ``before`` (by event ID, or by time when the ID is not in
    the page), not edits, and not already ``delivered``. Encrypted events among them go
    through ``decrypt``, oldest first: a message in the clear counts as any other; one
    that cannot be decrypted comes back as the `Encrypted` event (a notice to archive,
    which its key may correct later); anything else it holds is left out."""
    ids = [str(getattr(e, "event_id", "")) for e in events]
    start, end = 0, len(events)
    if after is not None:
        if after.id in ids:
            start = ids.index(after.id) + 1
        else:
            floor = after.timestamp.timestamp() * 1000
            start = next((n for n, e in enumerate(events) if _ts(e) > floor), len(events))
    if before is not None:
        if before.id in ids:
            end = ids.index(before.id)
        else:
            ceiling = before.timestamp.timestamp() * 1000
            end = next((n for n, e in enumerate(events) if _ts(e) >= ceiling), len(events))
    kept: list[Message | Encrypted] = []
    for event in events[start:end]:
        if not isinstance(event, Message | Encrypted) or delivered(event.event_id):
            continue
        shown = decrypt(event) if isinstance(event, Encrypted) else event
        if isinstance(shown, Encrypted) or (isinstance(shown, Message) and shown.replaces is None):
            kept.append(shown)
    return kept


def _ts(event: TimelineEvent) -> float:
    ts = getattr(event, "ts", None)
    return float(ts) if isinstance(ts, int) else 0.0


UNREADABLE = "🔒 [an end-to-end encrypted {what} Passerelle cannot decrypt: {reason}]"
_WHAT = {"m.replace": "edit of a message", "m.annotation": "reaction to a message"}
"""What an encrypted event is, by the relation it shows in the clear (as Element and
Passerelle send edits and reactions, so that servers can aggregate them)."""


def what_it_is(event: Encrypted) -> str:
    """What the notice of an undecryptable ``event`` calls it: a message, unless its
    clear relation says it is an edit or a reaction."""
    content = event.raw.get("content")
    relation = content.get("m.relates_to") if isinstance(content, Mapping) else None
    kind = relation.get("rel_type") if isinstance(relation, Mapping) else None
    return _WHAT.get(kind, "message") if isinstance(kind, str) else "message"
