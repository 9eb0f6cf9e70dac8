"""IRC channels as MUCs hosted by the component: `#chan%server@…`.

Joining the MUC joins the IRC channel (the join presence is answered once the server
sent the member list and what it plays back on join, or with an error naming the IRC
refusal); the last XMPP client leaving it parts the channel — unless the room is
*persistent* (the `configure` command on the room, stored with the room): then the
channel stays joined while the user is offline, what is said lands in the room archive,
and the gateway rejoins it when it starts (a bouncer). Occupants are the channel's
members, each linked to the `nick%server` contact so a client can open a private chat;
their role and affiliation follow their channel modes (Biboumi's mapping, see
`translate.muc_role_affiliation`) and bans (outcast). What the user types goes out as
PRIVMSGs (or an ACTION for `/me`), the subject is the topic, a moderator's kick is an
IRC KICK, a ban (outcast) is +b and a KICK, and an invitation (XEP-0249) an IRC INVITE.

This module is the room itself (joining, leaving, what the user sends, the topic, the
history a joining client gets, the `configure` command) and the user's list of rooms.
The rest of the room, by role: `participant` (one occupant: moderation as IRC commands,
its presences), `occupants` (the occupant rows at the scale of IRC joins, the member
list), and `gateway.rooms` (the rooms and recent speakers kept as objects, shared with
Matrix).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from slidge.command import FormField, MUCCommand
from slidge.command.base import FormRecipient, FormValues
from slidge.db.meta import JSONSerializable
from slidge.group import LegacyBookmarks, LegacyMUC
from slidge.util.types import Mention as SlidgeMention
from slidge.util.types import MucType, XMPPMessage
from slixmpp import Presence
from slixmpp.exceptions import XMPPError

from gateway.rooms import KeptOccupants, KeptRooms, forget_occupant_list
from gateway.runtime import network_config

from .client import IrcClientError
from .config import Config
from .events import Channel
from .mentions import with_irc_nicks
from .occupants import Occupants
from .participant import Participant
from .translate import AddressError, AddressMapping, ChannelAddress

if TYPE_CHECKING:
    from slidge.util.types import SpaceMetadata

    from .session import Session

__all__ = ["JOIN_TIMEOUT", "MUC", "Bookmarks", "ConfigureChannel", "Participant"]

JOIN_TIMEOUT = 30.0


@functools.lru_cache(maxsize=1024)
def _room_legacy_id(mapping: AddressMapping, local_part: str) -> str:
    """The legacy id of the room at JID local part `local_part` (slidge asks for every
    message the user sends: 6.7 µs to parse and render it each time). Refusals raise,
    and are not kept. `mapping` is the session's one object (`Session.mapping`): a new
    one per call would be hashed and compared field by field to find the entry."""
    return mapping.render(mapping.parse_room(local_part))


@functools.lru_cache(maxsize=1024)
def channel_legacy_id(mapping: AddressMapping, server: str, channel: str) -> str:
    """The legacy id of `channel` on `server` (for every line said in a channel: 3.7 µs
    to render it each time). Refusals raise, and are not kept."""
    return mapping.render(ChannelAddress(server, Channel(channel)))


class Bookmarks(KeptRooms["MUC"], LegacyBookmarks["MUC"]):
    """The user's rooms, one `MUC` object per room for the session's lifetime
    (`gateway.rooms.KeptRooms`), so its occupants can be kept too (`MUC.occupant`)."""

    session: Session

    async def jid_local_part_to_legacy_id(self, local_part: str) -> str:
        try:
            return _room_legacy_id(self.session.mapping, local_part)
        except AddressError as e:
            raise XMPPError("item-not-found", str(e)) from e

    async def legacy_id_to_jid_local_part(self, legacy_id: str) -> str:
        return legacy_id

    async def fill(self) -> None:
        """IRC has no list of "my channels" to fetch: rooms appear when joined."""

    async def fetch_space_metadata(self, legacy_id: str) -> SpaceMetadata:
        raise NotImplementedError


class MUC(Occupants, KeptOccupants[Participant], LegacyMUC[Participant]):
    """An IRC channel as a room: joining and leaving it, what the user sends, the topic,
    persistence; its occupants come from `Occupants`, its kept objects from
    `gateway.rooms.KeptOccupants`."""

    session: Session
    HAS_DESCRIPTION = False
    REACTION = False
    RETRACTION = False
    REPLIES = False
    MARKS = False
    RECEIPTS = False
    CHAT_STATES = False
    persistent = False
    """Keep the channel joined while the user is offline (stored with the room)."""

    def occupant(self, nick: str) -> Participant | None:
        """The occupant kept for IRC nick `nick`, found without SQL: the room's recent
        speakers (`Session.participant(keep=True)` keeps them, `gateway.rooms.KeptOccupants`;
        nothing else uses these copies, which are only as fresh as their last read)."""
        return self.kept(nick)

    def features(self) -> list[str]:
        """slidge offers moderation (XEP-0425) in every room; IRC cannot take a line back."""
        moderation = self.xmpp.plugin["xep_0425"].stanza.NS
        return [feature for feature in super().features() if feature != moderation]

    def serialize_extra_attributes(self) -> JSONSerializable | None:
        return {"persistent": True} if self.persistent else None

    def deserialize_extra_attributes(self, data: JSONSerializable) -> None:
        self.persistent = data.get("persistent") is True

    def set_persistent(self, persistent: bool) -> None:
        self.persistent = persistent
        self.update_stored_attribute(extra_attributes=self.serialize_extra_attributes())

    @functools.cached_property
    def address(self) -> ChannelAddress:
        """Parsed once: a room's legacy id never changes (every JOIN asked it again)."""
        return self.session.mapping.parse_room(self.legacy_id)

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
            if not self.get_user_resources() and not self.persistent:
                client.part(address.channel)
            raise XMPPError("service-unavailable", str(e)) from e
        self.user_nick = client.nick
        _cap_history(join_presence, network_config(Config).history_on_join)
        if self._presence_sent is None:
            self._presence_sent = set()
        try:
            await super().join(join_presence)
        finally:
            self.write_presence_sent()
            # slidge left the room row with every occupant row (and its contact row)
            # loaded: kept with the room for the session, they are memory nobody reads
            # (slidge merges the room again before it reads the list).
            forget_occupant_list(self.stored)

    def on_presence_unavailable(self, p: Presence) -> None:
        had = bool(self.get_user_resources())
        super().on_presence_unavailable(p)
        if had and not self.get_user_resources() and not self.persistent:
            self.session.create_task(self.session.leave_room(self))

    async def on_message(self, message: XMPPMessage) -> str:
        client = await self.session.client_for(self.address.server)
        message = with_irc_nicks(self, message)  # XEP-0372 mentions: IRC nicks in the line
        return await self.session.send_message(client, self.channel, message)

    async def on_set_subject(self, subject: str) -> None:
        client = await self.session.client_for(self.address.server)
        self.session.send(client, "TOPIC", self.channel, subject.replace("\n", " "))

    async def on_leave(self) -> None:
        """Leaving for good (XEP-0077 remove, slidge's leave command): also when persistent."""
        if self.persistent:
            self.set_persistent(False)
        await self.session.leave_room(self)

    async def on_sticker(self, sticker: object) -> str:
        raise NotImplementedError

    async def parse_mentions(self, text: str | None) -> tuple[SlidgeMention, ...]:
        """None: the IRC line gets its mentions from the message's references
        (`mentions.with_irc_nicks`). slidge's guess, unused here, loaded every occupant
        from the database for every message the user sent (a quarter of its CPU)."""
        return ()


class ConfigureChannel(MUCCommand[MUC]):
    NAME = "Configure this IRC channel"
    HELP = "Keep this channel joined while you are offline (persistent)"
    NODE = "configure"
    CHAT_COMMAND = "configure"

    @staticmethod
    async def run(muc: MUC, *args: str) -> FormRecipient[MUC]:
        return FormRecipient(
            f"IRC channel {muc.address.channel} on {muc.address.server}",
            "A persistent channel stays joined while you are offline; what is said "
            "meanwhile is in the room's archive when you come back.",
            [
                FormField(
                    "persistent",
                    "Persistent (stay in the channel while offline)",
                    type="boolean",
                    value="true" if muc.persistent else "false",
                )
            ],
            ConfigureChannel.save,
        )

    @staticmethod
    async def save(muc: MUC, values: FormValues) -> str:
        persistent = values.get("persistent") is True
        muc.set_persistent(persistent)
        if persistent:
            await muc.session.keep_joined(muc)
            return f"{muc.address.channel} stays joined while you are offline."
        if not muc.get_user_resources():
            await muc.session.leave_room(muc)
        return f"{muc.address.channel} is left when your last client leaves it."


def _cap_history(join_presence: Presence, cap: int) -> None:
    """At most `cap` archived messages for a joining client (it may ask for fewer)."""
    history = join_presence["muc_join"]["history"]
    try:
        requested = int(history["maxstanzas"])
    except ValueError:
        requested = cap
    history["maxstanzas"] = str(max(0, min(requested, cap)))
