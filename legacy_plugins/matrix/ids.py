"""Matrix identifiers and the JID local parts that stand for them: a case-safe bijection.

A JID local part is case-insensitive (XMPP clients and servers lower-case it), while Matrix
IDs are case-sensitive: room IDs such as ``!OGEhHVWSdvArJz:example.org`` are mixed case,
and old user IDs may be too. So every ID is written in lower case only, with an escape
for everything else, in the spirit of the Matrix spec's own "mapping from other character
sets"::

    a-z 0-9 . - +     themselves
    A-Z               '_' and the letter in lower case     (Bob → _bob)
    _                 '__'
    anything else     '=' and two lower-case hex digits per UTF-8 byte  (: → =3a)

The local part and the server name are joined by ``%`` (as biboumi joins nick and
server), and rooms keep their sigil, so users and rooms never share a JID::

    @alice:example.org          →  alice%example.org
    @Bob_X:example.org:8448     →  _bob___x%example.org=3a8448
    !OGEhHV:example.org         →  !_o_g_eh_h_v%example.org
    !tuyAF74tmy8                →  !tuy_a_f74tmy8      (room version 12: no server)
    #room:example.org           →  #room%example.org

Decoding accepts only the canonical form (decode, encode again, compare), so one Matrix
ID has exactly one JID and a JID typed in any case decodes to the same ID.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, NewType

__all__ = [
    "EventId",
    "ParsedLocalpart",
    "RoomAlias",
    "RoomId",
    "UserId",
    "id_to_localpart",
    "is_room_id",
    "is_user_id",
    "localpart_to_id",
    "server_name",
]

UserId = NewType("UserId", str)
"""A Matrix user ID, ``@local:server``."""
RoomId = NewType("RoomId", str)
"""A Matrix room ID, ``!opaque:server``."""
RoomAlias = NewType("RoomAlias", str)
"""A Matrix room alias, ``#name:server``."""
EventId = NewType("EventId", str)
"""A Matrix event ID, ``$opaque`` (or ``$opaque:server`` in old room versions)."""

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-+")
_HEX = frozenset("0123456789abcdef")
_SIGILS: dict[str, Literal["user", "room", "alias"]] = {"@": "user", "!": "room", "#": "alias"}
# Historical user IDs may hold any printable ASCII but ':' in their local part.
_USER_RE = re.compile(r"@[\x21-\x39\x3b-\x7e]+:[\x21-\x7e]+")
# Room version 12 room IDs are a hash without a server name (MSC4291).
_ROOM_RE = re.compile(r"![\x21-\x39\x3b-\x7e]+(:[\x21-\x7e]+)?")
_ALIAS_RE = re.compile(r"#[^:\s]+:[\x21-\x7e]+")
MAX_ID_LENGTH = 255
"""The Matrix spec's limit on the length of a user, room or alias ID."""


@dataclass(frozen=True, slots=True)
class ParsedLocalpart:
    """What a JID local part names on Matrix."""

    kind: Literal["user", "room", "alias"]
    matrix_id: str


def is_user_id(value: str) -> bool:
    return len(value) <= MAX_ID_LENGTH and _USER_RE.fullmatch(value) is not None


def is_room_id(value: str) -> bool:
    return len(value) <= MAX_ID_LENGTH and _ROOM_RE.fullmatch(value) is not None


def is_room_alias(value: str) -> bool:
    return len(value) <= MAX_ID_LENGTH and _ALIAS_RE.fullmatch(value) is not None


_VALIDATORS = {"user": is_user_id, "room": is_room_id, "alias": is_room_alias}


def server_name(matrix_id: str) -> str:
    """The server part of a user, room or alias ID (port included); empty for the room
    IDs of room version 12, which have none."""
    return matrix_id.split(":", 1)[1] if ":" in matrix_id else ""


def _encode(text: str) -> str:
    out: list[str] = []
    for char in text:
        if char in _PLAIN:
            out.append(char)
        elif char == "_":
            out.append("__")
        elif "A" <= char <= "Z":
            out.append("_" + char.lower())
        else:
            out.extend(f"={byte:02x}" for byte in char.encode("utf-8"))
    return "".join(out)


def _decode(text: str) -> str:
    raw = bytearray()
    i = 0
    while i < len(text):
        char = text[i]
        if char == "_":
            nxt = text[i + 1 : i + 2]
            if nxt == "_":
                raw += b"_"
            elif "a" <= nxt <= "z":
                raw += nxt.upper().encode()
            else:
                raise ValueError(f"'_' must be followed by '_' or a letter in {text!r}")
            i += 2
        elif char == "=":
            digits = text[i + 1 : i + 3]
            if len(digits) != 2 or not set(digits) <= _HEX:
                raise ValueError(f"'=' must be followed by two hex digits in {text!r}")
            raw.append(int(digits, 16))
            i += 3
        elif char in _PLAIN:
            raw += char.encode()
            i += 1
        else:
            raise ValueError(f"unexpected {char!r} in {text!r}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{text!r} does not decode to UTF-8") from None


def id_to_localpart(matrix_id: str) -> str:
    """The JID local part for a user ID, room ID or room alias (see the module docstring)."""
    sigil, rest = matrix_id[:1], matrix_id[1:]
    if sigil not in _SIGILS or not _VALIDATORS[_SIGILS[sigil]](matrix_id):
        raise ValueError(f"{matrix_id!r} is not a Matrix user ID, room ID or alias")
    if ":" not in rest:
        return f"!{_encode(rest)}"  # a room version 12 room ID
    local, server = rest.split(":", 1)
    prefix = "" if sigil == "@" else sigil
    return f"{prefix}{_encode(local)}%{_encode(server)}"


def localpart_to_id(localpart: str) -> ParsedLocalpart:
    """The Matrix ID a JID local part stands for; ``ValueError`` if it names nothing.

    The local part may come in any case (XMPP folds it); only the canonical spelling of
    an ID is accepted, so that each ID has one JID.
    """
    text = localpart.lower()
    sigil = text[:1] if text[:1] in ("!", "#") else "@"
    body = text[1:] if sigil != "@" else text
    if sigil == "!" and "%" not in body and body:
        matrix_id = f"!{_decode(body)}"  # a room version 12 room ID
    elif body.count("%") != 1:
        raise ValueError(
            f"{localpart!r} is not a Matrix address; write @alice:example.org as "
            "alice%example.org (see the gateway's README)"
        )
    else:
        local_enc, server_enc = body.split("%")
        if not local_enc or not server_enc:
            raise ValueError(f"{localpart!r} lacks a local part or a server name")
        matrix_id = f"{sigil}{_decode(local_enc)}:{_decode(server_enc)}"
    if not _VALIDATORS[_SIGILS[sigil]](matrix_id):
        raise ValueError(f"{matrix_id!r} is not a valid Matrix {_SIGILS[sigil]} identifier")
    if id_to_localpart(matrix_id) != text:
        raise ValueError(f"{localpart!r} is not the canonical spelling of {matrix_id!r}")
    return ParsedLocalpart(_SIGILS[sigil], matrix_id)
