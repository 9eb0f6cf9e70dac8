"""Matrix rooms that are not direct chats, as MUCs hosted by the gateway.

A room ``!AbC:example.org`` is ``!_ab_c%example.org@<gateway>`` (:mod:`.ids`, case-safe).
Its name and topic come from the room state; members are read with ``joined_members``
when the user joins the MUC; power levels give roles: 100 and up is an owner, 50 and up
a moderator (admin), others are members. Each member is a participant tied to the
member's contact, so the group is non-anonymous like Matrix itself.

Joining the MUC of a room the user is not in (by room ID, by alias ``#name%server``, or
after an invitation) joins it on Matrix first; a room joined by alias keeps that address
(remembered in the user's data). The first join back-fills the room's recent history
into the MUC archive. The user's kicks, bans and XEP-0249 invitations are Matrix kicks,
bans and invites.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, overload

import sqlalchemy as sa
from slidge.contact import LegacyContact
from slidge.db.models import Participant as StoredParticipant
from slidge.db.models import Room
from slidge.group import LegacyBookmarks, LegacyMUC, LegacyParticipant, MucType
from slidge.util.types import (
    ChatState,
    HoleBound,
    MucAffiliation,
    SpaceMetadata,
    Sticker,
    XMPPMessage,
)
from slixmpp import JID, Message, Presence
from slixmpp.exceptions import XMPPError

from gateway.formatting import to_xep0393

from .contact import Contact
from .errors import MatrixError, as_xmpp_error
from .ids import EventId, RoomId, UserId, id_to_localpart, localpart_to_id
from .profiles import show_avatar
from .translate import backfill_messages

if TYPE_CHECKING:
    from .session import Session

__all__ = ["MUC", "Bookmarks", "Participant"]

OWNER_POWER = 100
MODERATOR_POWER = 50
KEPT_SPEAKERS = 100  # occupants per room found without SQL (the recent speakers)
_IN_ECHO: ContextVar[bool] = ContextVar("in_echo", default=False)
"""True inside `MUC.echo`, in that task only."""


def _unload_occupants(room: Room | None) -> None:
    """Unload a kept room row's occupant list so the next reader loads it from the
    database: slidge merges room rows, and a stale list would orphan (and delete, by
    its delete-orphan cascade) the occupants who joined since."""
    if room is not None:
        state: Any = sa.inspect(room)
        state._expire_attributes(state.dict, ["participants"])


class Participant(LegacyParticipant[Contact]):
    muc: MUC

    def _user_id(self) -> UserId:
        if self.contact is None:
            raise XMPPError("not-allowed", "This is you: use the room's leave instead")
        return UserId(self.contact.legacy_id)

    async def on_kick(self, reason: str | None) -> None:
        """A moderator's kick (role "none") is a Matrix kick."""
        try:
            await self.muc.session.matrix.kick(self.muc.room_id, self._user_id(), reason)
        except MatrixError as e:
            raise as_xmpp_error(e) from e

    async def on_set_affiliation(
        self, affiliation: MucAffiliation, reason: str | None, nickname: str | None
    ) -> None:
        """ "outcast" bans, "member" invites (or lifts a ban); other affiliations would
        be power level changes, which are not carried yet."""
        matrix, room, user = self.muc.session.matrix, self.muc.room_id, self._user_id()
        try:
            if affiliation == "outcast":
                await matrix.ban(room, user, reason)
            elif affiliation == "owner":
                await matrix.set_power(room, user, OWNER_POWER)
            elif affiliation == "admin":
                await matrix.set_power(room, user, MODERATOR_POWER)
            elif affiliation == "member" and self.affiliation in ("admin", "owner"):
                await matrix.set_power(room, user, 0)
            elif affiliation == "member":
                await self._make_member(reason)
            elif affiliation == "none" and self.affiliation == "outcast":
                await matrix.unban(room, user)
            else:
                raise NotImplementedError
        except MatrixError as e:
            raise as_xmpp_error(e) from e

    async def on_invitation(self, reason: str | None) -> None:
        """A XEP-0249 invitation from the user is a Matrix invite."""
        try:
            await self._make_member(reason)
        except MatrixError as e:
            raise as_xmpp_error(e) from e

    async def _make_member(self, reason: str | None) -> None:
        matrix, room, user = self.muc.session.matrix, self.muc.room_id, self._user_id()
        state = self.muc.session.rooms.rooms.get(room)
        member = state.members.get(user) if state is not None else None
        if member is not None and member.membership == "ban":
            await matrix.unban(room, user)
        if member is None or member.membership in ("leave", "ban"):
            await matrix.invite(room, user)


class MUC(LegacyMUC[Participant]):
    session: Session
    REPLIES = True
    HAS_DESCRIPTION = False

    def __init__(self, session: Any, stored: Room) -> None:
        super().__init__(session, stored)
        self._speakers: dict[str, tuple[Participant, int, str]] = {}
        """Matrix user → (kept occupant, its row id, its nickname then), least recent
        first: the room's recent speakers, found again without SQL (`speaker`)."""
        self._trusted: set[int] = set()
        """Row ids of the kept occupants not read again by slidge since."""

    @property
    def room_id(self) -> RoomId:
        return RoomId(self.legacy_id)

    def speaker(self, user: str) -> Participant | None:
        """The kept occupant for `user` (see `keep`), or None: not kept, or stale."""
        found = self._speakers.pop(user, None)
        if found is None:
            return None
        part, row, nickname = found
        if row not in self._trusted or part.stored.nickname != nickname:
            return None
        self._speakers[user] = found  # the most recent now
        _unload_occupants(part.stored.__dict__.get("room"))
        return part

    def keep(self, user: str, part: Participant) -> None:
        """Keep `part`, a stored occupant, for `user`'s next event to show (only that:
        anything that changes an occupant reads it again); at most `KEPT_SPEAKERS`."""
        state: Any = sa.inspect(part.stored)
        if part.is_system or not state.has_identity:
            return
        self._speakers[user] = (part, part.stored.id, part.stored.nickname)
        self._trusted.add(part.stored.id)
        while len(self._speakers) > KEPT_SPEAKERS:
            _, row, _ = self._speakers.pop(next(iter(self._speakers)))
            self._trusted.discard(row)

    def forget_speaker(self, user: str) -> None:
        """`user`'s membership or profile changed: read the occupant again next time."""
        found = self._speakers.pop(user, None)
        if found is not None:
            self._trusted.discard(found[1])

    def participant_from_store(
        self, stored: StoredParticipant, contact: LegacyContact | None = None
    ) -> Participant:
        """slidge reads an occupant row for whatever it is about to change (role, nick,
        kick): from then on the kept copy is not trusted."""
        self._trusted.discard(stored.id)
        return super().participant_from_store(stored, contact)

    def remove_participant(
        self,
        p: Participant,
        kick: bool = False,
        ban: bool = False,
        reason: str | None = None,
    ) -> None:
        super().remove_participant(p, kick, ban, reason)
        self._trusted.discard(p.stored.id)

    async def echo(self, msg: Message, legacy_msg_id: str | None = None) -> str:
        """slidge's echo of a message the user sent to the room. It reads the user's
        occupant only for its occupant id and the archive, yet slidge 0.4.2 reads it,
        merges and commits it for every message (half the CPU of a message sent to
        Matrix); here the user's kept occupant (see `keep`) stands in while trusted."""
        token = _IN_ECHO.set(True)
        try:
            return await super().echo(msg, legacy_msg_id)
        finally:
            _IN_ECHO.reset(token)

    async def get_user_participant(
        self, *, fill_first: bool = False, store: bool = True, occupant_id: str | None = None
    ) -> Participant:
        for_echo = _IN_ECHO.get() and store and not fill_first and occupant_id is None
        me = self.session.me
        if for_echo and (kept := self.speaker(me)) and kept.stored.nickname == self.user_nick:
            return kept
        part = await super().get_user_participant(
            fill_first=fill_first, store=store, occupant_id=occupant_id
        )
        if for_echo:
            self.keep(me, part)
        return part

    async def update_info(self) -> None:
        self.type = MucType.GROUP
        state = self.session.rooms.rooms.get(self.room_id)
        if state is None:
            # Not joined on Matrix yet (an invitation, or a room joined by address):
            # joining the MUC joins the room.
            invite = self.session.invites.get(self.room_id)
            self.name = (invite.name if invite else None) or self.room_id
            return
        me = self.session.me
        self.name = state.display_name(me)
        self.subject = state.topic or ""
        self.n_participants = state.joined_count
        await show_avatar(self.session.matrix, self, state.avatar_url)

    async def join(self, join_presence: Presence) -> None:
        """Joining the MUC of a room the user is not in joins it on Matrix first."""
        if not self.session.is_joined(self.room_id):
            try:
                await self.session.join_room(self.room_id)
            except MatrixError as e:
                raise as_xmpp_error(e) from e
            except TimeoutError as e:
                raise XMPPError(
                    "remote-server-timeout", f"Matrix did not show {self.room_id} in time"
                ) from e
            await self.update_info()
        await super().join(join_presence)

    def set_power(self, participant: Participant) -> None:
        """Role and affiliation from the member's Matrix power level."""
        state = self.session.rooms.room(self.room_id)
        user = participant.contact.legacy_id if participant.contact else self.session.me
        power = state.power(UserId(user))
        if power >= OWNER_POWER:
            participant.affiliation, participant.role = "owner", "moderator"
        elif power >= MODERATOR_POWER:
            participant.affiliation, participant.role = "admin", "moderator"
        else:
            participant.affiliation, participant.role = "member", "participant"

    async def backfill(
        self, after: HoleBound | None = None, before: HoleBound | None = None
    ) -> None:
        """The room's last ``backfill_count`` messages into the MUC archive, without
        those already archived (before ``after``, from ``before`` on) or delivered."""
        count = self.session.cfg.backfill_count
        if count == 0 or not self.session.is_joined(self.room_id):
            return
        events = await self.session.matrix.history(self.room_id, count)
        for message in backfill_messages(events, after, before, self.session.delivered):
            participant = await self.get_participant_by_legacy_id(message.sender)
            text = to_xep0393(message.text)
            if message.media is not None:
                text = text or f"[{message.media.name}]"
            participant.send_text(
                "/me " + text if message.kind == "emote" else text,
                legacy_msg_id=message.event_id,
                when=datetime.fromtimestamp(message.ts / 1000, UTC),
                archive_only=True,
            )

    async def fill_participants(self) -> AsyncIterator[Participant]:
        try:
            members = await self.session.matrix.joined_members(self.room_id)
        except MatrixError as e:
            self.log.warning("Could not read the members of %s: %s", self.room_id, e)
            return
        for user, _name in members.items():
            participant = await self.get_participant_by_legacy_id(user)
            self.set_power(participant)
            yield participant

    async def on_message(self, message: XMPPMessage) -> str | None:
        try:
            return await self.session.send_message(self.room_id, message)
        except MatrixError as e:
            raise as_xmpp_error(e) from e

    async def on_sticker(self, sticker: Sticker) -> str | None:
        raise NotImplementedError

    async def on_react(self, legacy_msg_id: str, emojis: list[str], thread: str | None) -> None:
        try:
            await self.session.react(self.room_id, EventId(legacy_msg_id), emojis)
        except MatrixError as e:
            raise as_xmpp_error(e) from e

    async def on_retract(self, legacy_msg_id: str, thread: str | None) -> None:
        try:
            await self.session.retract(self.room_id, EventId(legacy_msg_id))
        except MatrixError as e:
            raise as_xmpp_error(e) from e

    async def on_moderate(self, legacy_msg_id: str, reason: str | None) -> None:
        try:
            await self.session.retract(self.room_id, EventId(legacy_msg_id))
        except MatrixError as e:
            raise as_xmpp_error(e) from e
        (await self.get_user_participant()).moderate(legacy_msg_id, reason)

    async def on_chat_state(self, chat_state: ChatState, thread: str | None) -> None:
        try:
            await self.session.chat_state(self.room_id, chat_state)
        except MatrixError as e:
            raise as_xmpp_error(e) from e

    async def on_displayed(self, legacy_msg_id: str, thread: str | None) -> None:
        try:
            await self.session.displayed(self.room_id, legacy_msg_id)
        except MatrixError as e:
            raise as_xmpp_error(e) from e

    async def on_set_subject(self, subject: str) -> None:
        try:
            await self.session.matrix.set_topic(self.room_id, subject)
        except MatrixError as e:
            raise as_xmpp_error(e) from e

    async def on_avatar(self, data: bytes | None, mime: str | None) -> str | None:
        """The group chat's avatar (vCard) set from XMPP is the room's ``m.room.avatar``
        (if the user's power level allows it); returns its ``mxc://`` URI."""
        matrix = self.session.matrix
        try:
            mxc = await matrix.upload(data, mime or "image/png", "avatar") if data else None
            await matrix.set_room_avatar(self.room_id, mxc)
        except MatrixError as e:
            raise as_xmpp_error(e) from e
        return mxc

    async def on_leave(self) -> None:
        try:
            await self.session.matrix.leave(self.room_id)
        except MatrixError as e:
            raise as_xmpp_error(e) from e

    async def available_emojis(self, legacy_msg_id: str | None = None) -> set[str] | None:
        return None


class Bookmarks(LegacyBookmarks[MUC]):
    """The user's rooms, one `MUC` object per room for the session's lifetime: slidge
    0.4.2 builds a new one from an SQL query at every lookup (every Matrix event). When
    slidge reads the room anyway (`from_store`), the kept object takes the fresh row."""

    session: Session

    def __init__(self, session: Any) -> None:
        super().__init__(session)
        self._rooms: dict[str, MUC] = {}

    def from_store(self, stored: Room) -> MUC:
        muc = self._rooms.get(stored.legacy_id)
        if muc is None:
            return super().from_store(stored)
        muc.stored = muc.archive.room = stored
        return muc

    def _kept(self, legacy_id: str) -> MUC | None:
        muc = self._rooms.get(legacy_id)
        if muc is None:
            return None
        state: Any = sa.inspect(muc.stored)
        if not state.has_identity or "updated" in state.unloaded or not muc.stored.updated:
            return None  # slidge refreshes it, or fills in its details again
        _unload_occupants(muc.stored)
        return muc

    def _keep(self, muc: MUC | None) -> None:
        if muc is not None and muc.stored.id is not None:
            self._rooms[muc.legacy_id] = muc

    @overload
    async def by_legacy_id(self, legacy_id: str) -> MUC: ...

    @overload
    async def by_legacy_id(self, legacy_id: str, create: Literal[False]) -> MUC | None: ...

    @overload
    async def by_legacy_id(self, legacy_id: str, create: Literal[True]) -> MUC: ...

    async def by_legacy_id(self, legacy_id: str, create: bool = False) -> MUC | None:
        muc = self._kept(legacy_id)
        if muc is None:
            base: Any = super()
            muc = await base.by_legacy_id(legacy_id, create)
            self._keep(muc)
        return muc

    async def by_jid(self, jid: JID) -> MUC:
        """(Kept too: the user's join goes through here, and a second object for the
        room would have missed the resources it adds.)"""
        muc = self._kept(self._known_room(jid.node) or "")
        if muc is None:
            muc = await super().by_jid(jid)
            self._keep(muc)
        return muc

    def _known_room(self, local_part: str) -> str | None:
        """The room at `local_part`, without resolving an alias on the homeserver."""
        for room_id, local in self.session.room_addresses().items():
            if local == local_part:
                return room_id
        try:
            parsed = localpart_to_id(local_part)
        except ValueError:
            return None
        return parsed.matrix_id if parsed.kind == "room" else None

    async def remove(self, muc: Any, *args: Any, **kwargs: Any) -> None:
        self._rooms.pop(muc.legacy_id, None)
        await super().remove(muc, *args, **kwargs)

    async def legacy_id_to_jid_local_part(self, legacy_id: str) -> str:
        return self.session.room_addresses().get(legacy_id) or id_to_localpart(legacy_id)

    async def jid_local_part_to_legacy_id(self, local_part: str) -> str:
        try:
            parsed = localpart_to_id(local_part)
        except ValueError as e:
            raise XMPPError("item-not-found", str(e)) from e
        if parsed.kind == "user":
            raise XMPPError("item-not-found", f"{parsed.matrix_id} is a person: chat with them 1:1")
        if parsed.kind == "alias":
            return await self._by_alias(parsed.matrix_id, local_part)
        return parsed.matrix_id

    async def _by_alias(self, alias: str, local_part: str) -> str:
        """A room addressed by its alias keeps that address (remembered for the user);
        a room the user already has under another address says which."""
        known = {v: k for k, v in self.session.room_addresses().items()}
        if local_part in known:
            return known[local_part]
        try:
            room_id = await self.session.matrix.resolve_alias(alias)
        except MatrixError as e:
            raise XMPPError("item-not-found", f"No Matrix room is called {alias}: {e}") from e
        local = await self.legacy_id_to_jid_local_part(room_id)
        if self.by_jid_only_if_exists(JID(f"{local}@{self.xmpp.boundjid.bare}")) is not None:
            raise XMPPError(
                "gone",
                f"{alias} is a room you have already: {local}@{self.xmpp.boundjid.bare}",
            )
        self.session.remember_room_address(room_id, local_part)
        return room_id

    async def fill(self) -> None:
        partners = self.session.rooms.dm_partners()
        for room_id in list(self.session.rooms.rooms):
            if room_id in partners:
                continue
            try:
                muc = await self.by_legacy_id(room_id)
            except XMPPError as e:
                self.log.warning("Could not show the room %s: %s", room_id, e.text)
                continue
            try:
                await muc.add_to_bookmarks(auto_join=True)
            except Exception as e:
                self.log.warning("Could not bookmark the room %s: %s", room_id, e)
            # A new avatar while the gateway was stopped (update_info ran before).
            state = self.session.rooms.rooms.get(room_id)
            await show_avatar(self.session.matrix, muc, state.avatar_url if state else None)

    async def fetch_space_metadata(self, legacy_id: str) -> SpaceMetadata:
        raise NotImplementedError
