"""The Matrix plugin's shared vocabulary: the events of a validated ``/sync``.

Small frozen values (`Message`, `Reaction`, `Redaction`, `Encrypted`, `Membership`,
`StateChange`, `Typing`, `Receipt`, `UserPresence`) grouped per room (`JoinedRoom`,
`InvitedRoom`) into one `SyncBatch`, in the manner of the IRC plugin's ``events.py``.
:mod:`.translate` makes them from the homeserver's JSON; the session, the encryption
modules and the room bookkeeping (:mod:`.rooms`) consume them without touching JSON.
Nothing here parses or builds anything: that is :mod:`.translate` (Matrix to these
values) and :mod:`.contents` (what the XMPP user sends, to Matrix event contents).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.formatting import StyledText

from .ids import EventId, RoomId, UserId

__all__ = [
    "HTML_FORMAT",
    "MEDIA_KINDS",
    "PRESENCE_STATES",
    "Encrypted",
    "InvitedRoom",
    "JoinedRoom",
    "Media",
    "Membership",
    "Message",
    "MsgKind",
    "PresenceState",
    "Reaction",
    "Receipt",
    "Redaction",
    "StateChange",
    "SyncBatch",
    "TimelineEvent",
    "Typing",
    "UserPresence",
    "only_echoes",
]

MsgKind = Literal["text", "emote", "notice", "image", "file", "audio", "video", "sticker"]
MEDIA_KINDS: frozenset[str] = frozenset({"image", "file", "audio", "video", "sticker"})
HTML_FORMAT = "org.matrix.custom.html"
"""The ``format`` of HTML message bodies, both ways."""


@dataclass(frozen=True, slots=True)
class Media:
    """A file an event points at."""

    url: str
    """``mxc://server/id`` (of the encrypted bytes when the file is encrypted)."""
    name: str
    mimetype: str | None = None
    size: int | None = None
    encrypted: bool = False
    file: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)
    """An encrypted file's ``file`` object: its key, IV and hash."""


@dataclass(frozen=True, slots=True)
class Message:
    """``m.room.message`` (or ``m.sticker``): new, or an edit of ``replaces``."""

    room_id: RoomId
    event_id: EventId
    sender: UserId
    ts: int
    kind: MsgKind
    text: StyledText
    """The text, without reply fallback; for media, the caption (may be empty)."""
    media: Media | None = None
    reply_to: EventId | None = None
    replaces: EventId | None = None
    own_device: bool = False
    mentions: tuple[UserId, ...] = ()
    """Who it mentions (`mentioned`)."""


@dataclass(frozen=True, slots=True)
class Reaction:
    """``m.reaction``: ``sender`` annotated ``target`` with ``key`` (an emoji)."""

    room_id: RoomId
    event_id: EventId
    sender: UserId
    ts: int
    target: EventId
    key: str
    own_device: bool = False


@dataclass(frozen=True, slots=True)
class Redaction:
    """``m.room.redaction`` of ``target`` (a message, a reaction, …)."""

    room_id: RoomId
    event_id: EventId
    sender: UserId
    ts: int
    target: EventId
    reason: str | None = None
    own_device: bool = False


@dataclass(frozen=True, slots=True)
class Encrypted:
    """``m.room.encrypted``: an end-to-end encrypted event, to decrypt (:mod:`.crypto`)."""

    room_id: RoomId
    event_id: EventId
    sender: UserId
    ts: int
    session_id: str = ""
    """The Megolm session it was encrypted with (the key that may arrive later)."""
    own_device: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """The whole event, as the decryption needs it."""
    reason: str = ""
    """Why it could not be decrypted (set by the session)."""


@dataclass(frozen=True, slots=True)
class Membership:
    """``m.room.member``: ``user`` is now ``membership`` in the room."""

    room_id: RoomId
    sender: UserId
    user: UserId
    membership: str
    displayname: str | None = None
    avatar_url: str | None = None
    is_direct: bool = False
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class StateChange:
    """Another state event that matters to the XMPP side (name, topic, encryption, …)."""

    room_id: RoomId
    sender: UserId
    type: str
    state_key: str
    content: Mapping[str, Any]


TimelineEvent = Message | Reaction | Redaction | Encrypted | Membership | StateChange


@dataclass(frozen=True, slots=True)
class Typing:
    """``m.typing``: who is typing in the room right now."""

    room_id: RoomId
    users: frozenset[UserId]


@dataclass(frozen=True, slots=True)
class Receipt:
    """``m.receipt``: ``user`` has read up to ``event_id``."""

    room_id: RoomId
    user: UserId
    event_id: EventId
    private: bool = False


PresenceState = Literal["online", "unavailable", "offline"]
PRESENCE_STATES: frozenset[str] = frozenset({"online", "unavailable", "offline"})


@dataclass(frozen=True, slots=True)
class UserPresence:
    """``m.presence``: ``user`` is online, unavailable (away) or offline."""

    user: UserId
    state: PresenceState
    status: str | None = None
    last_active_ago: int | None = None
    """Milliseconds since the user was last active, when the homeserver says."""


@dataclass(frozen=True, slots=True)
class JoinedRoom:
    """What one sync says about a room the user is in."""

    room_id: RoomId
    state: tuple[Membership | StateChange, ...] = ()
    timeline: tuple[TimelineEvent, ...] = ()
    limited: bool = False
    prev_batch: str | None = None
    ephemeral: tuple[Typing | Receipt, ...] = ()
    joined_count: int | None = None
    invited_count: int | None = None
    heroes: tuple[UserId, ...] = ()


@dataclass(frozen=True, slots=True)
class InvitedRoom:
    """A pending invitation, with the stripped state the server shows invitees."""

    room_id: RoomId
    inviter: UserId | None
    is_direct: bool
    name: str | None = None
    encrypted: bool = False


@dataclass(frozen=True, slots=True)
class SyncBatch:
    """One ``/sync`` response, validated."""

    next_batch: str
    joined: tuple[JoinedRoom, ...] = ()
    invited: tuple[InvitedRoom, ...] = ()
    left: tuple[RoomId, ...] = ()
    direct: Mapping[UserId, tuple[RoomId, ...]] | None = field(default=None)
    """The user's ``m.direct`` account data, if this sync changed it."""
    to_device: tuple[Mapping[str, Any], ...] = ()
    """To-device events (encryption keys sent to this device), raw."""
    device_lists_changed: frozenset[UserId] = frozenset()
    """People whose devices changed (their keys must be fetched again)."""
    one_time_keys: int | None = None
    """How many of this device's one-time keys the homeserver still holds."""
    presence: tuple[UserPresence, ...] = ()


def only_echoes(batch: SyncBatch) -> bool:
    """Whether the batch holds nothing but events this gateway sent (and already shows)."""
    return (
        bool(batch.joined)
        and all(
            not room.state
            and not room.ephemeral
            and not room.limited
            and all(getattr(event, "own_device", False) for event in room.timeline)
            for room in batch.joined
        )
        and not (batch.invited or batch.left or batch.presence or batch.to_device)
        and batch.direct is None
        and not batch.device_lists_changed
    )  # (the one-time key count, in every sync, is looked at with the next other batch)
