"""IRC channels as MUCs hosted by the component: `#chan%server@…`.

Joining the MUC joins the IRC channel (the join presence is answered once the server
sent the member list, or with an error naming the IRC refusal); the last XMPP client
leaving it parts the channel. Occupants are the channel's members, each linked to the
`nick%server` contact so a client can open a private chat; their role and affiliation
follow their channel modes (Biboumi's mapping, see `translate.muc_role_affiliation`).
What the user types goes out as PRIVMSGs (or an ACTION for `/me`), the subject is the
topic, and a moderator's kick is an IRC KICK.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from slidge.group import LegacyBookmarks, LegacyMUC, LegacyParticipant
from slidge.util.types import MucAffiliation, MucType, XMPPMessage
from slixmpp import Presence
from slixmpp.exceptions import XMPPError

from gateway.runtime import network_config

from .client import IrcClientError
from .config import Config
from .contact import Contact
from .events import Channel
from .translate import AddressError, ChannelAddress, muc_role_affiliation, xmpp_to_irc

if TYPE_CHECKING:
    from slidge.util.types import SpaceMetadata

    from .session import Session

JOIN_TIMEOUT = 30.0


class Bookmarks(LegacyBookmarks["MUC"]):
    async def jid_local_part_to_legacy_id(self, local_part: str) -> str:
        mapping = network_config(Config).address_mapping()
        try:
            return mapping.render(mapping.parse_room(local_part))
        except AddressError as e:
            raise XMPPError("item-not-found", str(e)) from e

    async def legacy_id_to_jid_local_part(self, legacy_id: str) -> str:
        return legacy_id

    async def fill(self) -> None:
        """IRC has no list of "my channels" to fetch: rooms appear when joined."""

    async def fetch_space_metadata(self, legacy_id: str) -> SpaceMetadata:
        raise NotImplementedError


class Participant(LegacyParticipant[Contact]):
    muc: MUC

    async def on_kick(self, reason: str | None) -> None:
        client = await self.muc.session.client_for(self.muc.address.server)
        self.muc.session.send(client, "KICK", self.muc.channel, self.nickname, reason or "")

    async def on_set_affiliation(
        self, affiliation: MucAffiliation, reason: str | None, nickname: str | None
    ) -> None:
        client = await self.muc.session.client_for(self.muc.address.server)
        modes = {"owner": "+q", "admin": "+o", "member": "+v", "none": "-o", "outcast": "+b"}
        mode = modes.get(affiliation)
        if mode is None:
            raise XMPPError("feature-not-implemented", f"No IRC mode for {affiliation}")
        target = f"{self.nickname}!*@*" if affiliation == "outcast" else self.nickname
        self.muc.session.send(client, "MODE", self.muc.channel, mode, target)


class MUC(LegacyMUC[Participant]):
    session: Session
    HAS_DESCRIPTION = False
    REACTION = False
    RETRACTION = False
    REPLIES = False
    MARKS = False
    RECEIPTS = False
    CHAT_STATES = False

    @property
    def address(self) -> ChannelAddress:
        return network_config(Config).address_mapping().parse_room(self.legacy_id)

    @property
    def channel(self) -> Channel:
        client = self.session.clients.get(self.address.server)
        state = client.channels.get(self.address.channel) if client else None
        return state.name if state else self.address.channel

    async def update_info(self) -> None:
        self.name = self.address.channel
        self.type = MucType.CHANNEL_NON_ANONYMOUS
        client = self.session.clients.get(self.address.server)
        self.user_nick = client.nick if client else self.session.identity(self.address.server).nick

    async def join(self, join_presence: Presence) -> None:
        address = self.address
        client = await self.session.client_for(address.server)
        try:
            await client.join(address.channel, JOIN_TIMEOUT)
        except IrcClientError as e:
            if not self.get_user_resources():
                client.part(address.channel)
            raise XMPPError("service-unavailable", str(e)) from e
        self.user_nick = client.nick
        _cap_history(join_presence, network_config(Config).history_on_join)
        await super().join(join_presence)

    async def fill_participants(self) -> AsyncIterator[Participant]:
        client = self.session.clients.get(self.address.server)
        state = client.channels.get(self.address.channel) if client else None
        if client is None or state is None:
            return
        for member in list(state.members.values()):
            role, affiliation = muc_role_affiliation(member.prefixes, client.state.isupport)
            if client.state.is_own(member.nick):
                part = await self.get_user_participant()
            else:
                part = await self.session.participant(self, client, member.nick)
            part.role, part.affiliation = role, affiliation
            yield part

    def on_presence_unavailable(self, p: Presence) -> None:
        had = bool(self.get_user_resources())
        super().on_presence_unavailable(p)
        if had and not self.get_user_resources():
            self.session.create_task(self.session.leave_room(self))

    async def on_message(self, message: XMPPMessage) -> str:
        client = await self.session.client_for(self.address.server)
        body = message.body or ""
        urls = " ".join(a.url for a in message.attachments)
        if urls:
            body = f"{body} {urls}".strip()
        legacy_id = str(uuid.uuid4())
        text = self.session.outgoing_text(legacy_id, body, message.replace)
        self.session.send_text(client, self.channel, xmpp_to_irc(text))
        return legacy_id

    async def on_set_subject(self, subject: str) -> None:
        client = await self.session.client_for(self.address.server)
        self.session.send(client, "TOPIC", self.channel, subject.replace("\n", " "))

    async def on_leave(self) -> None:
        await self.session.leave_room(self)

    async def on_sticker(self, sticker: object) -> str:
        raise NotImplementedError


def _cap_history(join_presence: Presence, cap: int) -> None:
    """At most `cap` archived messages for a joining client (it may ask for fewer)."""
    history = join_presence["muc_join"]["history"]
    try:
        requested = int(history["maxstanzas"])
    except ValueError:
        requested = cap
    history["maxstanzas"] = str(max(0, min(requested, cap)))
