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
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from slidge.command import FormField, MUCCommand
from slidge.command.base import FormRecipient, FormValues
from slidge.contact import LegacyContact
from slidge.db.meta import JSONSerializable
from slidge.db.models import Participant as StoredParticipant
from slidge.db.models import Room
from slidge.group import LegacyBookmarks, LegacyMUC, LegacyParticipant
from slidge.util.types import Mention as SlidgeMention
from slidge.util.types import MucAffiliation, MucType, XMPPMessage
from slixmpp import JID, Message, Presence
from slixmpp.exceptions import XMPPError

from gateway.runtime import network_config

from . import accounts
from .client import IrcClientError
from .config import Config
from .contact import Contact
from .events import Channel
from .mentions import MentionsOnMessages, with_irc_nicks
from .translate import AddressError, ChannelAddress

if TYPE_CHECKING:
    from slidge.util.types import SpaceMetadata

    from .session import Session

JOIN_TIMEOUT = 30.0
KEPT_OCCUPANTS = 100  # occupants per room found without SQL (the recent speakers)
_ECHOING: ContextVar[bool] = ContextVar("echoing", default=False)
"""Set while `MUC.echo` runs, in its task only."""


def forget_occupant_list(room: Room | None) -> None:
    """Unload a kept room row's occupant list (`Room.participants`), so the next reader
    loads it from the database. A stale list is dangerous, not only wrong: merging a
    room row (slidge commits MUCs that way) makes the rows missing from it orphans, and
    its delete-orphan cascade deletes occupants who joined since."""
    if room is None:
        return
    state: Any = sa.inspect(room)
    # What Session.expire(room, ["participants"]) does, for a row in no session: the
    # loaded list goes, and so do appends slidge made to it (each new occupant's row
    # carries its room_id: the list is not what stores them).
    state._expire_attributes(state.dict, ["participants"])


class Bookmarks(LegacyBookmarks["MUC"]):
    """The user's rooms, one `MUC` object per room for the session's lifetime.

    slidge 0.4.2 builds a new MUC object, from a database query, every time it looks a
    room up (about a third of the CPU of an IRC message in a busy channel). Here every
    lookup, slidge's own included, returns the same object; when slidge reads the room
    from the database anyway (`from_store`), that object takes the fresh row. With one
    object per room, its occupants can be kept too (`MUC.occupant`).
    """

    def __init__(self, session: Any) -> None:
        super().__init__(session)
        self._rooms: dict[str, MUC] = {}

    def from_store(self, stored: Room) -> MUC:
        muc = self._rooms.get(stored.legacy_id)
        if muc is None:
            return super().from_store(stored)
        muc.stored = muc.archive.room = stored
        return muc

    def _cached(self, legacy_id: str) -> MUC | None:
        muc = self._rooms.get(legacy_id)
        if muc is None:
            return None
        state: Any = sa.inspect(muc.stored)
        if not state.has_identity or "updated" in state.unloaded or not muc.stored.updated:
            return None  # slidge refreshes it, or fills in its details again
        forget_occupant_list(muc.stored)
        return muc

    def _remember(self, muc: MUC | None) -> None:
        if muc is not None and muc.stored.id is not None:
            self._rooms[muc.legacy_id] = muc

    async def by_legacy_id(self, legacy_id: str, create: bool = False) -> MUC | None:  # type: ignore[override]
        muc = self._cached(legacy_id)
        if muc is None:
            base: Any = super()
            muc = await base.by_legacy_id(legacy_id, create)
            self._remember(muc)
        return muc

    async def by_jid(self, jid: JID) -> MUC:
        try:
            muc = self._cached(await self.jid_local_part_to_legacy_id(jid.node))
        except XMPPError:
            muc = None
        if muc is None:
            muc = await super().by_jid(jid)
            self._remember(muc)
        return muc

    async def remove(self, muc: Any, *args: Any, **kwargs: Any) -> None:
        self._rooms.pop(muc.legacy_id, None)
        await super().remove(muc, *args, **kwargs)

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


class Participant(MentionsOnMessages, LegacyParticipant[Contact]):
    muc: MUC

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


class MUC(LegacyMUC[Participant]):
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

    def __init__(self, session: Any, stored: Room) -> None:
        super().__init__(session, stored)
        self._occupants: dict[int, Participant] = {}
        """The recent speakers by row id (see `keep`); one slidge reads again leaves."""
        self._by_nick: dict[str, tuple[Participant, str]] = {}
        """IRC nick → (kept occupant, its stored nickname then), least recent first."""
        self._echo_user: Participant | None = None
        """The user's occupant as the last echo read it (see `echo`)."""

    def occupant(self, nick: str) -> Participant | None:
        """The kept occupant known as `nick` on IRC (see `keep`), found without SQL."""
        found = self._by_nick.pop(nick, None)
        if found is None:
            return None
        part, nickname = found
        if part.stored.nickname != nickname or part.stored.id not in self._occupants:
            return None  # renamed or gone since
        self._by_nick[nick] = found  # the most recent now
        forget_occupant_list(part.stored.__dict__.get("room"))
        return part

    def keep(self, nick: str, part: Participant) -> None:
        """Keep `part` as the occupant for IRC nick `nick`: the room's recent speakers
        (at most `KEPT_OCCUPANTS`) are found without a query when they speak again
        (`Session.participant(keep=True)`; nothing else uses these copies, which are only
        as fresh as their last read). Only a stored occupant: while slidge fills the
        occupant list it stores copies, not these objects."""
        state: Any = sa.inspect(part.stored)
        if part.is_system or not state.has_identity:
            return
        self._occupants[part.stored.id] = part
        self._by_nick[nick] = (part, part.stored.nickname)
        while len(self._by_nick) > KEPT_OCCUPANTS:
            oldest = next(iter(self._by_nick))
            old, _ = self._by_nick.pop(oldest)
            self._occupants.pop(old.stored.id, None)

    def participant_from_store(
        self, stored: StoredParticipant, contact: LegacyContact | None = None
    ) -> Participant:
        """slidge builds occupants from rows here, for whatever it is about to do with
        one (a role, a nick, a kick): from then on the kept copy is not trusted, the next
        message reads the row again."""
        self._occupants.pop(stored.id, None)
        if stored.is_user:
            self._echo_user = None
        return super().participant_from_store(stored, contact)

    def remove_participant(
        self,
        p: Participant,
        kick: bool = False,
        ban: bool = False,
        reason: str | None = None,
    ) -> None:
        super().remove_participant(p, kick, ban, reason)
        self._occupants.pop(p.stored.id, None)
        if p.is_user:
            self._echo_user = None

    async def echo(self, msg: Message, legacy_msg_id: str | None = None) -> str:
        """slidge's echo of what the user sent, which reads the user's occupant only for
        its occupant id and the archive's role and affiliation. slidge looks it up and
        stores it again (a read, a merge and a commit) for every message; here the copy
        from the last echo does, until slidge reads that row again."""
        token = _ECHOING.set(True)
        try:
            return await super().echo(msg, legacy_msg_id)
        finally:
            _ECHOING.reset(token)

    async def get_user_participant(
        self, *, fill_first: bool = False, store: bool = True, occupant_id: str | None = None
    ) -> Participant:
        echoing = _ECHOING.get() and not (fill_first or occupant_id) and store
        part = self._echo_user
        if echoing and part is not None and part.stored.nickname == self.user_nick:
            return part  # read-only use (see echo): never changed through this copy
        part = await super().get_user_participant(
            fill_first=fill_first, store=store, occupant_id=occupant_id
        )
        if echoing:
            self._echo_user = part
        return part

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
            if not self.get_user_resources() and not self.persistent:
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
            role, affiliation = client.channels.standing(state.name, member.nick)
            if client.state.is_own(member.nick):
                part = await self.get_user_participant()
            else:
                part = await self.session.participant(self, client, member.nick)
                accounts.filled(client, state.name, part, member.nick)  # IRCv3 accounts
            part.role, part.affiliation = role, affiliation
            yield part

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
