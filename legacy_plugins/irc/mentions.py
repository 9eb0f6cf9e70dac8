"""XEP-0372 mentions in IRC channels, both ways.

On IRC a mention *is* the nick in the text (`alice: hi`, `thanks alice`), compared under
the server's CASEMAPPING. IRC → XMPP, `find_mentions` finds the words of a channel line
that are nicks of the room (the user's own included) and returns their spans in code
points of the message body — Python string indexes, which is what XEP-0372's `begin`
and `end` count (end exclusive) — and `MentionsOnMessages` puts them on the groupchat
message as `<reference type='mention' uri='xmpp:ROOM/NICK'/>`: slidge 0.4.2's
`send_text` has no parameter for them, so the participant takes them as a keyword and
adds slixmpp's `Reference` stanza to the message before slidge archives and sends it.

XMPP → IRC, a client may mark a mention and write something else than the nick at its
span (a display name). slidge 0.4.2 hands the plugin only the text, so the gateway keeps
the mention references of each groupchat message it receives (`ReferenceStash`, a small
bounded memory filled by a synchronous stanza handler, before slidge's handler runs) and
the room puts the occupants' IRC nicks at those spans (`apply_references`) before the
line goes out. The functions above the slidge glue are pure.
"""

from __future__ import annotations

import collections
import dataclasses
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote

from slixmpp import JID, Message

from gateway.mentions import REFERENCE_NS, MentionsOnMessages, mention_uri

from .events import casefold

if TYPE_CHECKING:
    from slidge.util.types import XMPPMessage

    from .client import IrcClient
    from .group import MUC

__all__ = [
    "Mention",
    "MentionsOnMessages",
    "ReferenceStash",
    "apply_references",
    "find_mentions",
    "find_mentions_by",
    "member_lookup",
    "mention_uri",
    "with_irc_nicks",
]

STASHED_PER_ROOM = 16  # groupchat messages with mentions waiting for slidge's handler
_WORD = re.compile(r"[\w\[\]\\`^{|}\-]+")
"""A run of nick characters (RFC 2812's letters, digits and specials, and the Unicode
letters some servers allow): `alice:` and `@alice` yield `alice`; `bob_` stays `bob_`."""
_NOT_BEFORE = frozenset("/.=#&?%<$")  # a path, a host name, a query: not a mention
_NOT_AFTER = re.compile(r"[.@][\w]")  # alice.example.org, alice@example.org


@dataclass(frozen=True, slots=True)
class Mention:
    """`nick` (as the room knows it) is named at `text[begin:end]`."""

    begin: int
    end: int
    nick: str


# --- pure ------------------------------------------------------------------------------


def find_mentions(text: str, nicks: Iterable[str], casemapping: str) -> tuple[Mention, ...]:
    """The words of `text` that are one of `nicks` under `casemapping`, in order.
    Nicks of one character are skipped (too many false hits), as are words inside a
    URL, a host name or an email address."""
    by_folded = {casefold(nick, casemapping): nick for nick in nicks if len(nick) > 1}
    if not by_folded:
        return ()
    return find_mentions_by(text, by_folded.get, casemapping)


def find_mentions_by(
    text: str, lookup: Callable[[str], str | None], casemapping: str
) -> tuple[Mention, ...]:
    """`find_mentions` with the nicks given as `lookup`: folded word → the nick it names
    (of more than one character), or None. A channel's member table answers that
    without folding every member's nick for every line."""
    found: list[Mention] = []
    for match in _WORD.finditer(text):
        begin, end = match.span()
        nick = lookup(casefold(match.group(), casemapping))
        if nick is None and match.group().endswith("-"):  # "alice- look" or "alice--"
            word = match.group().rstrip("-")
            nick = lookup(casefold(word, casemapping))
            end = begin + len(word)
        if nick is None:
            continue
        if begin > 0 and text[begin - 1] in _NOT_BEFORE:
            continue
        if _NOT_AFTER.match(text, end):
            continue
        found.append(Mention(begin, end, nick))
    return tuple(found)


def apply_references(text: str, mentions: Sequence[Mention]) -> str:
    """`text` with each mention's span replaced by its nick. Spans out of range or
    overlapping an earlier one are ignored."""
    pieces: list[str] = []
    cursor = 0
    for mention in sorted(mentions, key=lambda m: (m.begin, m.end)):
        if mention.begin < cursor or not mention.begin < mention.end <= len(text):
            continue
        pieces += [text[cursor : mention.begin], mention.nick]
        cursor = mention.end
    pieces.append(text[cursor:])
    return "".join(pieces)


def references_of(msg: Message, room_jid: str) -> tuple[Mention, ...]:
    """The mentions of occupants of `room_jid` that `msg` marks (XEP-0372), with their
    spans in `msg`'s body; the nick is the occupant's (the URI's resource)."""
    body: str = msg["body"]
    room = JID(room_jid).bare.lower()
    found: list[Mention] = []
    for ref in msg.xml.findall(f"{{{REFERENCE_NS}}}reference"):
        uri = ref.get("uri", "")
        if ref.get("type") != "mention" or not uri.startswith("xmpp:"):
            continue
        target, _, nick = uri.removeprefix("xmpp:").partition("/")
        # Clients differ: %-encoded as RFC 5122 says (%23chan%25server) or not at all
        # (#chan%server, where unquoting would eat "%12" of "%127.0.0.1").
        if room not in (target.lower(), unquote(target).lower()):
            continue
        nick = unquote(nick)  # IRC nicks have no "%"
        try:
            begin, end = int(ref.get("begin", "")), int(ref.get("end", ""))
        except ValueError:
            continue
        if nick and 0 <= begin < end <= len(body):
            found.append(Mention(begin, end, nick))
    return tuple(found)


# --- slidge glue -----------------------------------------------------------------------


def room_mentions(
    client: IrcClient, muc: MUC, channel: str, body: str
) -> tuple[tuple[Mention, str], ...]:
    """The mentions of the members of `channel` (the user included) in `body`, each
    with its URI in the room `muc`."""
    casemapping = client.state.isupport.casemapping
    found = find_mentions_by(body, member_lookup(client, channel), casemapping)
    if not found:
        return ()
    room = str(muc.jid.bare)
    return tuple((mention, mention_uri(room, mention.nick)) for mention in found)


def member_lookup(client: IrcClient, channel: str) -> Callable[[str], str | None]:
    """The nicks of `channel`'s members and the user's own, for `find_mentions_by`: read
    from the channel tracker's table (keyed by folded nick), one lookup per word."""
    state = client.channels.get(channel)
    members = state.members if state is not None else {}
    own = client.nick
    own_folded = client.state.isupport.casefold(own)

    def lookup(folded: str) -> str | None:
        if folded == own_folded:
            nick: str | None = own
        else:
            member = members.get(folded)
            nick = None if member is None else member.nick
        return nick if nick is not None and len(nick) > 1 else None

    return lookup


class ReferenceStash:
    """The mention references of the latest groupchat messages that carry some, per
    (sender, room), until the room's `on_message` takes them (bounded: old ones go)."""

    def __init__(self) -> None:
        self._stash: dict[tuple[str, str], collections.deque[tuple[str, tuple[Mention, ...]]]]
        self._stash = {}

    def remember(self, msg: Message) -> None:
        """Synchronous stanza handler for "groupchat_message"."""
        if msg.xml.find(f"{{{REFERENCE_NS}}}reference") is None:
            return
        room = msg["to"].bare
        mentions = references_of(msg, room)
        if not mentions:
            return
        key = (msg["from"].bare.lower(), room.lower())
        queue = self._stash.setdefault(key, collections.deque(maxlen=STASHED_PER_ROOM))
        queue.append((msg["body"], mentions))

    def take(self, sender: str, room: str, body: str) -> tuple[Mention, ...]:
        """The mentions of the message from `sender` to `room` whose body contained
        `body` (slidge may have cut a reply fallback off the front), as spans of `body`."""
        queue = self._stash.get((sender.lower(), room.lower()))
        if not queue or not body:
            return ()
        for i, (raw, mentions) in enumerate(queue):
            shift = raw.find(body)
            if shift < 0:
                continue
            del queue[i]
            if not queue:
                del self._stash[(sender.lower(), room.lower())]
            end = shift + len(body)
            return tuple(
                Mention(m.begin - shift, m.end - shift, m.nick)
                for m in mentions
                if shift <= m.begin and m.end <= end
            )
        return ()


STASH = ReferenceStash()
"""The network process's one stash (slidge runs one gateway per process)."""


def with_irc_nicks(muc: MUC, message: XMPPMessage) -> XMPPMessage:
    """`message` with the occupants the user's client marked as mentioned written as
    their IRC nicks."""
    body = message.body
    if not body:
        return message
    mentions = STASH.take(str(muc.session.user_jid.bare), str(muc.jid.bare), body)
    if not mentions:
        return message
    return dataclasses.replace(message, body=apply_references(body, mentions))
