"""The occupant of an IRC channel's room: what the user does to one, and its presences.

A moderator's kick is an IRC KICK, an affiliation is a channel mode (owner +q, admin +o,
member +v, none -o, or lifts the bans on the nick), a ban (outcast) is +b and a KICK, and
an invitation (XEP-0249) an IRC INVITE; someone slidge made an occupant of who is not in
the channel (invited or banned by JID) does not stay one. Its presences: slidge's
"presence sent" flag is gathered while a client joins and written once
(`occupants.Occupants.write_presence_sent`), and a plain "available" that would repeat
the presence that announced a new occupant is not sent again.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from slidge.group import LegacyParticipant
from slidge.util.types import CachedPresence, MucAffiliation
from slixmpp import JID, Presence
from slixmpp.exceptions import XMPPError

from .contact import Contact
from .mentions import MentionsOnMessages

if TYPE_CHECKING:
    from .group import MUC

__all__ = ["Participant"]


class Participant(MentionsOnMessages, LegacyParticipant[Contact]):
    """A member of the channel as an occupant (the module docstring says what it does)."""

    muc: MUC
    announced = False
    """Its first presence, a plain "available", was the last one sent (see `online`), or
    would have been, in a room no client is in, and is stored (`Occupants._create_occupant`
    knows both, and tells it here)."""

    def _send(self, stanza: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(stanza, Presence):
            self.announced = False  # another presence went out since
        return super()._send(stanza, *args, **kwargs)

    @property
    def _presence_sent(self) -> bool:
        return self.stored.presence_sent

    @_presence_sent.setter
    def _presence_sent(self, sent: bool) -> None:
        """slidge's flag, kept for one write of all the occupants shown to a joining
        client (`MUC.write_presence_sent`, before the client's own presence)."""
        pending = self.muc._presence_sent
        if not sent or pending is None or self.is_system or self.stored.id is None:
            base: Any = LegacyParticipant
            base._presence_sent.fset(self, sent)
            return
        if not self.stored.presence_sent:
            self.stored.presence_sent = True
            pending.add(self.stored.id)

    def send_initial_presence(self, full_jid: JID, *args: Any, **kwargs: Any) -> None:
        if self.is_user:  # the end of the occupant list slidge sends a joining client
            self.muc.write_presence_sent()
        super().send_initial_presence(full_jid, *args, **kwargs)

    def online(self, status: str | None = None, last_seen: datetime | None = None) -> None:
        """A plain "available" right after the one that announced this new occupant
        (the JOIN handler says it again) would be the same presence twice: not sent.
        Nor is one nobody would get that changes nothing (`_unheard`)."""
        if status is None and last_seen is None and (self.announced or self._unheard()):
            self.announced = False
            return
        self.announced = False
        super().online(status, last_seen)

    def _unheard(self) -> bool:
        """Whether a plain "available" would go to no client (none of the user's is in
        the room) and store nothing: the row says a presence was sent and the contact's
        cached presence is that "available" already. So is the occupant of a JOIN in a
        room no client has joined yet (`Occupants.joined_occupant` stores both), for
        which slidge built the presence for nobody: 9 % of the CPU of 50 users joining
        5 channels each at once. (A new occupant's JOIN is told so by the code that
        made it, `announced`, without reading the presence back: 11-18 µs a JOIN.)"""
        if self.is_user or self.is_system or not self.stored.presence_sent:
            return False
        if self.muc.get_user_resources():
            return False
        return self._get_last_presence() == CachedPresence()

    async def on_kick(self, reason: str | None) -> None:
        client = await self.muc.session.client_for(self.muc.address.server)
        self.muc.session.send(client, "KICK", self.muc.channel, self.nickname, reason or "")

    async def on_set_affiliation(
        self, affiliation: MucAffiliation, reason: str | None, nickname: str | None
    ) -> None:
        muc, session = self.muc, self.muc.session
        client = await session.client_for(muc.address.server)
        channel = muc.channel
        if affiliation == "outcast":  # a MUC ban bans and removes: +b, then KICK
            session.send(client, "MODE", channel, "+b", f"{self.nickname}!*@*")
            if client.channels.member(channel, self.nickname) is not None:
                session.send(client, "KICK", channel, self.nickname, reason or "Banned")
            self._drop_if_absent()
            return
        if affiliation == "none":  # lift the bans on them, else take their op
            lifted = client.channels.bans_on(channel, self.nickname)
            for mask in lifted:
                session.send(client, "MODE", channel, "-b", mask)
            if lifted:
                self._drop_if_absent()
                return
        modes = {"owner": "+q", "admin": "+o", "member": "+v", "none": "-o"}
        mode = modes.get(affiliation)
        if mode is None:
            raise XMPPError("feature-not-implemented", f"No IRC mode for {affiliation}")
        session.send(client, "MODE", channel, mode, self.nickname)
        self._drop_if_absent()

    async def on_invitation(self, reason: str | None) -> None:
        """XEP-0249 from the user to this contact: an IRC INVITE."""
        client = await self.muc.session.client_for(self.muc.address.server)
        self.muc.session.send(client, "INVITE", self.nickname, self.muc.channel)
        self._drop_if_absent()

    def _drop_if_absent(self) -> None:
        """slidge makes an occupant of whoever the user invites or bans by JID; someone
        who is not in the channel must not stay one."""
        client = self.muc.session.clients.get(self.muc.address.server)
        if client is not None and client.channels.member(self.muc.channel, self.nickname):
            return
        self.muc.remove_participant(self)
