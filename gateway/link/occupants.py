"""The IRC users of one link who are occupants of its room ("XMPP puppets").

An IRC user becomes an occupant when they first speak (or, with ``relay_joins_parts``,
when they are seen in the channel), with a JID of their own on the component
(``dave%irc.example.net@link.example.org/irc``) and the MUC nick from the template; a
409 conflict moves on to the next nick (``dave[irc]``…). The occupant follows the IRC
user's nick changes (a MUC nick change: status 303, same JID) and leaves when they leave
IRC. Occupants are keyed by the IRC nick folded with the server's CASEMAPPING. After
the XMPP connection drops, or when the room kicks one, they join again on their next
line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from .bridge import Recent, muc_nick, muc_nick_candidates, puppet_localpart
from .component import LinkComponent, MucPresence

__all__ = ["IrcOccupants", "XmppPuppet"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class XmppPuppet:
    """An IRC user's occupant in the room."""

    irc_nick: str
    jid: str
    nick: str | None = None
    """Their MUC nick, once joined."""
    joined: bool = False


class IrcOccupants:
    """The occupants that stand for IRC users in one room."""

    def __init__(
        self,
        component: LinkComponent,
        room: str,
        host: str,
        template: str,
        *,
        fold: Callable[[str], str],
        casemapping: Callable[[], str],
        reserved: Callable[[], str | None],
        room_lost: Callable[[], None],
    ) -> None:
        self._component = component
        self._room = room
        self._host = host
        self._template = template
        self._fold = fold
        self._casemapping = casemapping
        self._reserved = reserved
        """The listener's nick, which no IRC user may take."""
        self._room_lost = room_lost
        """Called when a join found no room (and created one, undone at once)."""
        self._by_nick: dict[str, XmppPuppet] = {}
        self._by_jid: dict[str, XmppPuppet] = {}
        self.refused: Recent[str, tuple[str, str]] = Recent(100)
        """Bare JIDs of IRC users' occupants the room refused lately, with the IRC nick
        and the room's reason (``registration-required``: members-only; ``forbidden``:
        no voice in a moderated room): what the admin's ``check`` lists."""

    def __repr__(self) -> str:
        return f"<IrcOccupants of {self._room}>"

    def owns(self, jid: str) -> bool:
        return jid in self._by_jid

    def nicks(self) -> set[str]:
        return {p.nick for p in self._by_nick.values() if p.nick is not None}

    @property
    def joined(self) -> int:
        return sum(1 for p in self._by_nick.values() if p.joined)

    def irc_nick_of(self, nick: str) -> str | None:
        """The IRC nick of the occupant called `nick` in the room, if it is one of ours."""
        return next((p.irc_nick for p in self._by_nick.values() if p.nick == nick), None)

    def by_jid(self, jid: str) -> XmppPuppet | None:
        return self._by_jid.get(jid)

    def by_nick(self, irc_nick: str) -> XmppPuppet | None:
        return self._by_nick.get(self._fold(irc_nick))

    def irc_nicks(self) -> list[str]:
        return [p.irc_nick for p in self._by_nick.values()]

    def unjoined(self) -> None:
        """The room no longer has them (lost connection, rejoin): join again when used."""
        for puppet in self._by_nick.values():
            puppet.joined = False

    async def occupant(self, irc_nick: str) -> XmppPuppet | None:
        """The occupant of IRC user `irc_nick`, joined now if needed; None if the room
        refuses it or the XMPP connection is down."""
        puppet = self._by_nick.get(self._fold(irc_nick))
        if puppet is not None and puppet.joined:
            return puppet
        if not self._component.online.is_set():
            return None
        if puppet is None:
            puppet = XmppPuppet(irc_nick, self._new_jid(irc_nick))
            self._by_nick[self._fold(irc_nick)] = puppet
            self._by_jid[puppet.jid] = puppet
        for nick in muc_nick_candidates(muc_nick(self._template, irc_nick)):
            if nick == self._reserved():
                continue
            result = await self._component.join(self._room, nick, puppet.jid)
            if result.ok and not result.created:
                puppet.nick, puppet.joined = result.nick, True
                return puppet
            if result.created:
                await self._component.destroy(self._room, puppet.jid, "Created by mistake")
                self._room_lost()
                break
            if result.error != "conflict":
                log.warning(
                    "%r: the room refused %s as %r: %s %s",
                    self, irc_nick, nick, result.error, result.text,
                )  # fmt: skip
                self.refused.put(puppet.jid.partition("/")[0], (irc_nick, result.error or ""))
                break
        self._forget(puppet)
        return None

    def _new_jid(self, irc_nick: str) -> str:
        localpart = puppet_localpart(self._host, irc_nick, self._casemapping())
        bare = f"{localpart}@{self._component.boundjid.domain}"
        jid, n = f"{bare}/irc", 1
        while jid in self._by_jid:  # a renamed occupant keeps the JID of its first nick
            n += 1
            jid = f"{bare}/irc{n}"
        return jid

    def _forget(self, puppet: XmppPuppet) -> None:
        self._by_jid.pop(puppet.jid, None)
        key = self._fold(puppet.irc_nick)
        if self._by_nick.get(key) is puppet:
            del self._by_nick[key]

    async def rename(self, old: str, new: str) -> None:
        """IRC user `old` is now `new`: their occupant takes the matching MUC nick."""
        puppet = self._by_nick.pop(self._fold(old), None)
        if puppet is None:
            return
        self._by_nick[self._fold(new)] = puppet
        puppet.irc_nick = new
        if not puppet.joined:
            return
        for nick in muc_nick_candidates(muc_nick(self._template, new)):
            if nick == puppet.nick:
                return
            if nick == self._reserved():
                continue
            result = await self._component.join(self._room, nick, puppet.jid, new=False)
            if result.ok:
                puppet.nick = result.nick
                return
            if result.error != "conflict":
                log.warning("%r: could not rename %s to %r: %s", self, old, nick, result.error)
                return

    def leave(self, irc_nick: str, reason: str) -> None:
        """IRC user `irc_nick` left IRC (or the channel): so does their occupant."""
        puppet = self._by_nick.get(self._fold(irc_nick))
        if puppet is None:
            return
        self._forget(puppet)
        if puppet.joined and puppet.nick is not None and self._component.online.is_set():
            self._component.leave(self._room, puppet.nick, puppet.jid, reason)

    def leave_all(self, status: str) -> None:
        for puppet in list(self._by_nick.values()):
            if puppet.joined and puppet.nick is not None:
                self._component.leave(self._room, puppet.nick, puppet.jid, status)

    def keep_only(self, present: set[str]) -> None:
        """The channel's members are `present` (folded): the others' occupants leave."""
        for key, puppet in list(self._by_nick.items()):
            if key not in present:
                self.leave(puppet.irc_nick, "no longer on IRC")

    def on_presence(self, presence: MucPresence) -> None:
        """A presence addressed to one of them: a kick makes it join again when used."""
        puppet = self._by_jid.get(presence.to)
        gone = presence.is_self and not presence.available and 303 not in presence.codes
        if puppet is not None and gone:
            puppet.joined = False

    def on_error(self, jid: str, condition: str) -> None:
        puppet = self._by_jid.get(jid)
        if puppet is not None and condition == "forbidden":
            self.refused.put(jid.partition("/")[0], (puppet.irc_nick, condition))
        if puppet is not None and condition == "not-acceptable":
            puppet.joined = False  # the room forgot it: join again on its next line
