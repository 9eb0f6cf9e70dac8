"""Pure mapping between Delta Chat's core and the XMPP side: ids, addresses, messages, events.

No I/O here: everything takes the core's JSON (already decoded) or plain values and
returns frozen dataclasses or strings. The core's JSON is validated once, at this edge
(:func:`parse_message`, :func:`parse_event`); malformed input raises
:class:`MalformedEvent`, which the session logs and skips.

Addresses as JIDs
    An email address is one contact: ``Alice.B@Example.org`` becomes the JID localpart
    ``alice.b\\40example.org`` — the address lower-cased (JID localparts are
    case-insensitive and so, in practice, are mailboxes), then escaped with XEP-0106
    (``@`` → ``\\40``, space → ``\\20``, ``"&'/:<>\\`` likewise). A localpart that does not
    unescape to an address with exactly one ``@`` and a dotted domain is no contact.

Groups as rooms
    A Delta Chat group is a chat of the user's account; its stable id is the core's chat
    id, so the room is ``group-<chat id>@<gateway>``. Such a localpart has no ``\\40``
    and can never be mistaken for an address.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal, NewType
from urllib.parse import unquote, urlsplit

MsgId = NewType("MsgId", int)
"""A message id in one Delta Chat account's database."""
ChatId = NewType("ChatId", int)
"""A chat id in one Delta Chat account's database (1:1, group, mailing list)."""
ContactId = NewType("ContactId", int)
"""A contact id in one Delta Chat account's database."""

SELF_CONTACT = ContactId(1)
"""The core's id for the account's own user."""
INFO_CONTACT = ContactId(2)
"""The core's id for the sender of info messages ("member added", …)."""
LAST_SPECIAL_CHAT = 9
"""Chat ids up to this are the core's special chats (trash, archive link…)."""
GROUP_PREFIX = "group-"

Security = Literal["automatic", "ssl", "starttls", "plain"]
SECURITIES: tuple[Security, ...] = ("automatic", "ssl", "starttls", "plain")

_XEP0106 = {
    " ": "\\20",
    '"': "\\22",
    "&": "\\26",
    "'": "\\27",
    "/": "\\2f",
    ":": "\\3a",
    "<": "\\3c",
    ">": "\\3e",
    "@": "\\40",
}
_UNESCAPE = re.compile(r"\\(20|22|26|27|2f|3a|3c|3e|40|5c)", re.IGNORECASE)
_LABEL = r"[a-z0-9]([a-z0-9-]*[a-z0-9])?"
_ADDRESS = re.compile(rf"^[^@\s<>\"]{{1,64}}@{_LABEL}(\.{_LABEL})+$")
MAX_ADDRESS = 254


class MalformedEvent(ValueError):
    """The core sent JSON we cannot read; the message says which field."""


# -- addresses and JIDs ---------------------------------------------------------------


def normalize_address(address: str) -> str:
    """``address`` trimmed and lower-cased, or ValueError if it is not an email address."""
    addr = address.strip().lower()
    if addr.startswith("mailto:"):
        addr = addr.removeprefix("mailto:")
    if len(addr) > MAX_ADDRESS or not _ADDRESS.match(addr):
        raise ValueError(f"{address!r} is not an email address like alice@example.org")
    return addr


def address_to_localpart(address: str) -> str:
    """The JID localpart of a contact (see the module docstring)."""
    addr = normalize_address(address)
    out = []
    for ch in addr:
        if ch == "\\":
            out.append("\\5c")
        else:
            out.append(_XEP0106.get(ch, ch))
    return "".join(out)


def localpart_to_address(localpart: str) -> str:
    """The address a contact JID's localpart names, or ValueError."""
    addr = _UNESCAPE.sub(lambda m: chr(int(m.group(1), 16)), localpart)
    try:
        return normalize_address(addr)
    except ValueError:
        raise ValueError(
            f"{localpart!r} names no email address: write to alice\\40example.org@<gateway> "
            "for alice@example.org"
        ) from None


def group_localpart(chat_id: ChatId) -> str:
    return f"{GROUP_PREFIX}{int(chat_id)}"


group_legacy_id = group_localpart
"""A room's legacy id is its localpart: ``group-<chat id>``."""


def localpart_to_group(localpart: str) -> ChatId:
    """The chat id of a room JID's localpart, or ValueError."""
    number = localpart.lower().removeprefix(GROUP_PREFIX)
    if not localpart.lower().startswith(GROUP_PREFIX) or not number.isdigit():
        raise ValueError(f"{localpart!r} is not a Delta Chat group (group-<number>)")
    chat_id = int(number)
    if chat_id <= LAST_SPECIAL_CHAT or chat_id > 2**32 - 1:
        raise ValueError(f"{localpart!r} is not a Delta Chat group")
    return ChatId(chat_id)


# -- messages ---------------------------------------------------------------------------

ViewType = Literal[
    "Unknown", "Text", "Image", "Gif", "Sticker", "Audio", "Voice", "Video", "File",
    "Call", "Webxdc", "Vcard",
]  # fmt: skip
DownloadState = Literal["Done", "Available", "Failure", "Undecipherable", "InProgress"]


@dataclass(frozen=True, slots=True)
class DcMessage:
    """One message of the core, reduced to what the gateway uses."""

    id: MsgId
    chat_id: ChatId
    from_id: ContactId
    sender_address: str
    sender_name: str
    text: str
    subject: str
    view_type: str
    is_info: bool
    system_type: str
    file: str | None
    file_name: str | None
    file_mime: str | None
    quoted_id: MsgId | None
    quoted_text: str | None
    is_edited: bool
    encrypted: bool
    download_state: str
    timestamp: int
    override_sender_name: str | None = None
    error: str | None = None
    has_html: bool = False
    """The mail has an HTML version richer than ``text`` (or ``text`` was cut short)."""
    received_timestamp: int = 0
    """When the core received it from the mail server; 0 for a message it made itself."""

    @property
    def outgoing(self) -> bool:
        return self.from_id == SELF_CONTACT

    @property
    def from_other_device(self) -> bool:
        """Sent by the user from another Delta Chat device (or mail program) of the same
        account: outgoing, yet received from the mail server (``bcc_self`` copies)."""
        return self.outgoing and self.received_timestamp > 0

    @property
    def has_file(self) -> bool:
        return bool(self.file)


def _get(raw: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    try:
        value = raw[key]
    except (KeyError, TypeError):
        raise MalformedEvent(f"message has no {key!r}") from None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MalformedEvent(f"message field {key!r} is {type(value).__name__}, not {kind}")
    return value


def _opt_int(raw: Mapping[str, Any], key: str) -> int:
    value = raw.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _opt_str(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    return value if isinstance(value, str) and value else None


def parse_message(raw: Any) -> DcMessage:
    """A :class:`DcMessage` from the core's ``Message`` JSON, or :class:`MalformedEvent`."""
    if not isinstance(raw, Mapping):
        raise MalformedEvent(f"message is {type(raw).__name__}, not an object")
    sender = raw.get("sender")
    if not isinstance(sender, Mapping):
        raise MalformedEvent("message has no sender object")
    quote = raw.get("quote")
    quoted_id = quoted_text = None
    if isinstance(quote, Mapping):
        if isinstance(quote.get("messageId"), int):
            quoted_id = MsgId(quote["messageId"])
        if isinstance(quote.get("text"), str):
            quoted_text = quote["text"]
    return DcMessage(
        id=MsgId(_get(raw, "id", int)),
        chat_id=ChatId(_get(raw, "chatId", int)),
        from_id=ContactId(_get(raw, "fromId", int)),
        sender_address=str(sender.get("address") or ""),
        sender_name=str(sender.get("displayName") or sender.get("address") or ""),
        text=_get(raw, "text", str),
        subject=str(raw.get("subject") or ""),
        view_type=str(raw.get("viewType") or "Unknown"),
        is_info=bool(raw.get("isInfo")),
        system_type=str(raw.get("systemMessageType") or "Unknown"),
        file=_opt_str(raw, "file"),
        file_name=_opt_str(raw, "fileName"),
        file_mime=_opt_str(raw, "fileMime"),
        quoted_id=quoted_id,
        quoted_text=quoted_text,
        is_edited=bool(raw.get("isEdited")),
        encrypted=bool(raw.get("showPadlock")),
        download_state=str(raw.get("downloadState") or "Done"),
        timestamp=_opt_int(raw, "timestamp"),
        override_sender_name=_opt_str(raw, "overrideSenderName"),
        error=_opt_str(raw, "error"),
        has_html=bool(raw.get("hasHtml")),
        received_timestamp=_opt_int(raw, "receivedTimestamp"),
    )


Delivery = Literal["deliver", "skip", "wait"]
HIDDEN_INFO = frozenset(
    {
        "ChatE2ee",
        "SecurejoinWait",
        "SecurejoinWaitTimeout",
        "MultiDeviceSync",
        "WebxdcStatusUpdate",
        "IrohNodeAddr",
    }
)
"""Info messages that are the core's bookkeeping, not something to show."""


def delivery(msg: DcMessage) -> Delivery:
    """Whether a new message goes to XMPP now, never, or once it is fully downloaded."""
    if msg.outgoing and not msg.from_other_device:
        return "skip"  # sent from XMPP through this gateway: the user saw it already
    if msg.download_state in ("Available", "InProgress"):
        return "wait"
    if msg.is_info and msg.system_type in HIDDEN_INFO:
        return "skip"  # the core's own bookkeeping, nothing a person said
    return "deliver"


def body_of(msg: DcMessage) -> str:
    """The text the XMPP user reads for ``msg``.

    The core already folds a classic email into "subject, en dash, text" (a chat message
    has no subject line to show); undecryptable or undownloadable mail says so instead of being
    empty. A file's caption is the text; a file without one gets no body here (the file
    is the message).
    """
    if msg.download_state == "Undecipherable":
        return "[This message could not be decrypted. It may have been sent to another device.]"
    if msg.download_state == "Failure":
        return "[This message could not be downloaded from the mail server.]"
    text = msg.text
    if msg.subject and not text and not msg.has_file:
        text = msg.subject
    return text


def html_file_name(msg: DcMessage) -> str:
    """The name of the attached HTML version of a mail: its subject, made file-safe."""
    stem = re.sub(r"[^\w\- ]+", "", msg.subject or "").strip()[:60] or "message"
    return f"{stem}.html"


def correction_needed(msg: DcMessage, delivered_text: str | None) -> bool:
    """Whether an already delivered message changed text (``Chat-Edit``) since then."""
    return msg.is_edited and delivered_text is not None and body_of(msg) != delivered_text


def reactions_of(raw: Any, contact_id: ContactId) -> list[str]:
    """The emojis contact ``contact_id`` has on a message, from the core's ``Reactions``."""
    if not isinstance(raw, Mapping):
        return []
    by_contact = raw.get("reactionsByContact")
    if not isinstance(by_contact, Mapping):
        return []
    emojis = by_contact.get(str(int(contact_id)), [])
    return [e for e in emojis if isinstance(e, str) and e] if isinstance(emojis, list) else []


# -- events -----------------------------------------------------------------------------

EventKind = Literal[
    "IncomingMsg",
    "MsgsChanged",
    "ReactionsChanged",
    "MsgRead",
    "MsgDeleted",
    "MsgFailed",
    "MsgDelivered",
    "ChatModified",
    "ContactsChanged",
    "SecurejoinInviterProgress",
    "SecurejoinJoinerProgress",
    "ConnectivityChanged",
    "Error",
    "Warning",
]
RELEVANT: frozenset[str] = frozenset(EventKind.__args__)  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class DcEvent:
    """An event of one account that the gateway acts on."""

    kind: EventKind
    account: int
    chat_id: ChatId | None = None
    msg_id: MsgId | None = None
    contact_id: ContactId | None = None
    progress: int | None = None
    text: str | None = None


def parse_event(raw: Any) -> DcEvent | None:
    """A :class:`DcEvent` from ``get_next_event``'s answer; None for events we ignore."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("event"), Mapping):
        raise MalformedEvent("event is not {contextId, event}")
    account = raw.get("contextId")
    if not isinstance(account, int):
        raise MalformedEvent("event has no contextId")
    body = raw["event"]
    kind = body.get("kind")
    if kind not in RELEVANT:
        return None

    def opt_int(key: str) -> int | None:
        value = body.get(key)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            raise MalformedEvent(f"{kind}: {key} is not an integer")
        return value

    chat = opt_int("chatId")
    msg = opt_int("msgId")
    contact = opt_int("contactId")
    text = body.get("msg") if isinstance(body.get("msg"), str) else None
    return DcEvent(
        kind=kind,
        account=account,
        chat_id=ChatId(chat) if chat is not None else None,
        msg_id=MsgId(msg) if msg is not None else None,
        contact_id=ContactId(contact) if contact is not None else None,
        progress=opt_int("progress"),
        text=text,
    )


# -- registration -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoginParams:
    """What the user typed in the registration form (servers optional: autoconfig)."""

    address: str
    password: str
    imap_host: str | None = None
    imap_port: int | None = None
    imap_security: Security | None = None
    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_security: Security | None = None
    display_name: str | None = None
    """Shown in the ``From:`` of the user's mail (Delta Chat's ``displayname``)."""

    def to_core(self) -> dict[str, Any]:
        """The core's ``EnteredLoginParam``."""
        param: dict[str, Any] = {"addr": self.address, "password": self.password}
        optional = {
            "imapServer": self.imap_host,
            "imapPort": self.imap_port,
            "imapSecurity": self.imap_security,
            "smtpServer": self.smtp_host,
            "smtpPort": self.smtp_port,
            "smtpSecurity": self.smtp_security,
        }
        param.update({k: v for k, v in optional.items() if v is not None})
        return param


class FormError(ValueError):
    """A registration form the gateway refuses; ``condition`` is the XMPP error."""

    def __init__(self, condition: Literal["bad-request", "not-allowed"], text: str) -> None:
        self.condition = condition
        super().__init__(text)


def login_params(
    form: Mapping[str, Any], *, allow_plaintext: bool, is_local: Callable[[str], bool]
) -> LoginParams:
    """The registration form, checked: an address, ports in range, a known security, and
    ``plain`` (no TLS) only to servers for which ``is_local`` holds, unless
    ``allow_plaintext``. Raises :class:`FormError`."""
    # Text fields only (a list-single may come as a one-item list); a re-submitted form
    # also carries e.g. "remove" (boolean).
    values: dict[str, str] = {}
    for key, raw in form.items():
        value = raw[0] if isinstance(raw, list) and len(raw) == 1 else raw
        if isinstance(value, str):
            values[key] = value.strip()
    try:
        address = normalize_address(values.get("address", ""))
    except ValueError as e:
        raise FormError("bad-request", str(e)) from e
    password = form.get("password")
    if not isinstance(password, str) or not password:
        raise FormError("bad-request", "The password is missing")

    def port(key: str) -> int | None:
        raw = values.get(key)
        if not raw:
            return None
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            raise FormError("bad-request", f"{key.replace('_', ' ')}: {raw!r} is not a port")
        return int(raw)

    def security(key: str, host: str | None) -> Security | None:
        raw = values.get(key) or "automatic"
        for known in SECURITIES:
            if raw == known:
                break
        else:
            raise FormError("bad-request", f"{key.replace('_', ' ')}: choose one of {SECURITIES}")
        if known == "plain" and not allow_plaintext and not (host and is_local(host)):
            raise FormError(
                "not-allowed",
                f"{key.replace('_', ' ')}: 'plain' would send your password unencrypted; this "
                "gateway allows it only for servers on this machine",
            )
        return None if known == "automatic" else known

    imap_host = values.get("imap_host") or None
    smtp_host = values.get("smtp_host") or None
    return LoginParams(
        address=address,
        password=password,
        imap_host=imap_host,
        imap_port=port("imap_port"),
        imap_security=security("imap_security", imap_host),
        smtp_host=smtp_host,
        smtp_port=port("smtp_port"),
        smtp_security=security("smtp_security", smtp_host),
        display_name=values.get("name") or None,
    )


# -- files from XMPP -------------------------------------------------------------------------

VOICE_SUFFIXES = frozenset({".m4a", ".aac", ".ogg", ".oga", ".opus", ".amr", ".3ga", ".weba"})
"""What XMPP clients record voice messages as: Conversations and Monal AAC in ``.m4a``
(some Conversations versions Opus in ``.ogg``/``.oga``), Gajim and Dino Opus in ``.ogg``
or ``.opus``. Music files (``.mp3``, ``.flac``, ``.wav``) stay audio files."""


def view_type_of_upload(file_name: str, content_type: str | None) -> str | None:
    """The Delta Chat view type to send an XMPP attachment as: ``Voice`` for a recording
    (XMPP has no voice-message flag: an audio file with a recorder's suffix is one), None
    to let the core decide from the file (image, video, audio, file)."""
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    if not mime or mime == "application/octet-stream":
        mime = mimetypes.guess_type(file_name, strict=False)[0] or ""
    suffix = PurePosixPath(file_name.lower()).suffix
    if mime.startswith(("video/", "image/", "text/")):
        return None
    if suffix in VOICE_SUFFIXES and (mime.startswith("audio/") or not mime):
        return "Voice"
    return None


def upload_file_name(url: str, content_type: str | None) -> str:
    """A file name for an attachment at ``url`` (its last path segment), with a suffix
    from ``content_type`` if it has none: the core picks the view type by suffix."""
    name = unquote(PurePosixPath(urlsplit(url).path).name) or "file"
    if not PurePosixPath(name).suffix and content_type:
        mime = content_type.split(";", 1)[0].strip().lower()
        suffix = mimetypes.guess_extension(mime, strict=False)
        if suffix:
            name += suffix
    return name


# -- SecureJoin links ---------------------------------------------------------------------

_INVITE = re.compile(r"^(https://i\.delta\.chat/#\S+|openpgp4fpr:\S+)$", re.IGNORECASE)


def invite_link(text: str) -> str:
    """A Delta Chat invite link (``https://i.delta.chat/#…`` or ``OPENPGP4FPR:…``) from what
    the user pasted, or ValueError."""
    link = text.strip().strip("<>")
    if not _INVITE.match(link):
        raise ValueError(
            "that is not a Delta Chat invite link: it starts with https://i.delta.chat/# "
            "or OPENPGP4FPR:"
        )
    return link
