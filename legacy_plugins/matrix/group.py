"""Matrix rooms that are not direct chats, as MUCs hosted by the gateway.

A room ``!AbC:example.org`` is ``!_ab_c%example.org@<gateway>`` (:mod:`.ids`, case-safe).
Its name and topic come from the room state; members are read with ``joined_members``
when the user joins the MUC; power levels give roles: 100 and up is an owner, 50 and up
a moderator (admin), others are members. Each member is a participant tied to the
member's contact, so the group is non-anonymous like Matrix itself.

Joining the MUC of a room the user is not in (by room ID, by alias ``#name%server``, or
after an invitation) joins it on Matrix first; a room joined by alias keeps that address
(remembered in the user's data). The first join back-fills the room's recent history
into the MUC archive (encrypted messages too, decrypted or as notices their keys correct
later). The user's kicks, bans and XEP-0249 invitations are Matrix kicks,
bans and invites.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from slidge.db.models import Participant as StoredParticipant
from slidge.group import LegacyBookmarks, LegacyMUC, LegacyParticipant, MucType
from slidge.util.types import (
    ChatState,
    HoleBound,
    Mention,
    MucAffiliation,
    SpaceMetadata,
    Sticker,
    XMPPMessage,
)
from slixmpp import JID, Presence
from slixmpp.exceptions import XMPPError

from gateway.formatting import to_xep0393
from gateway.mentions import MentionsOnMessages
from gateway.rooms import KeptOccupants, KeptRooms

from .contact import Contact
from .errors import MatrixError, as_xmpp_error
from .events import Encrypted
from .ids import EventId, RoomId, UserId, id_to_localpart, localpart_to_id
from .profiles import show_avatar
from .translate import backfill_messages

if TYPE_CHECKING:
    from .session import Session

__all__ = ["MUC", "Bookmarks", "Participant"]

OWNER_POWER = 100
MODERATOR_POWER = 50
NICKNAMES_FOR = 2.0
"""Seconds the occupants' nicknames are reused when looking for mentions."""


class Participant(MentionsOnMessages, LegacyParticipant[Contact]):
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


class MUC(KeptOccupants[Participant], LegacyMUC[Participant]):
    session: Session
    REPLIES = True
    HAS_DESCRIPTION = False
    _nicks: tuple[str, ...] | None = None
    """The occupants' nicknames (longer than one character), for `parse_mentions`."""
    _nicks_read = 0.0

    @property
    def room_id(self) -> RoomId:
        return RoomId(self.legacy_id)

    def speaker(self, user: str) -> Participant | None:
        """The occupant kept for Matrix user `user`, found without SQL: the room's
        recent speakers (`gateway.rooms.KeptOccupants`; the user's own included, kept
        by the echo of what the user sends too), or None: not kept, or stale."""
        return self.kept(user)

    def forget_speaker(self, user: str) -> None:
        """`user`'s membership or profile changed: read the occupant again next time."""
        self.forget_kept(user)
        self._nicks = None

    def user_key(self) -> str:
        """The user's occupant is kept under the user's Matrix ID: what the user says
        from other Matrix clients and the echoes of what the user sends from XMPP
        share the one copy."""
        return self.session.me

    async def parse_mentions(self, text: str | None) -> tuple[Mention, ...]:
        """slidge loads every occupant of the room, contacts joined, for each message the
        user sends, to look for their nicknames in it (a tenth of the CPU of a message
        sent to Matrix). A message that holds none of them cannot mention anyone: the
        nicknames alone tell, read at most every `NICKNAMES_FOR` seconds and again after
        any membership change (which is how names change on Matrix). Occupants not read
        yet: slidge's way."""
        if not text or self.stored.id is None or not self.participants_filled:
            return await super().parse_mentions(text)
        if not any(nick in text for nick in self._nicknames()):
            return ()
        return await super().parse_mentions(text)

    def _nicknames(self) -> tuple[str, ...]:
        now = time.monotonic()
        if self._nicks is None or now - self._nicks_read > NICKNAMES_FOR:
            with self.xmpp.store.session() as orm:
                rows = orm.scalars(
                    sa.select(StoredParticipant.nickname).where(
                        StoredParticipant.room_id == self.stored.id
                    )
                )
                self._nicks = tuple(nick for nick in rows if len(nick) > 1)
            self._nicks_read = now
        return self._nicks

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
        those already archived (before ``after``, from ``before`` on) or delivered.
        Encrypted ones are decrypted; one that cannot be is archived as the notice a
        live one gets, under its event ID, and its key is asked for at once: when the
        key arrives, the text corrects that notice (sent live and archived)."""
        count = self.session.cfg.backfill_count
        if count == 0 or not self.session.is_joined(self.room_id):
            return
        session = self.session
        events = await session.matrix.history(self.room_id, count)
        kept = backfill_messages(events, after, before, session.delivered, session.decrypt_history)
        for message in kept:
            participant = await self.get_participant_by_legacy_id(message.sender)
            if isinstance(message, Encrypted):
                text = session.unreadable(message)
            else:
                text = to_xep0393(message.text)
                if message.media is not None:
                    text = text or f"[{message.media.name}]"
                if message.kind == "emote":
                    text = "/me " + text
            participant.send_text(
                text,
                legacy_msg_id=message.event_id,
                when=datetime.fromtimestamp(message.ts / 1000, UTC),
                archive_only=True,
            )
        if any(isinstance(message, Encrypted) for message in kept):
            await session.ask_for_keys()

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
        """A moderator's retraction of someone's message (XEP-0425): a Matrix redaction
        with the moderator's reason."""
        try:
            await self.session.retract(self.room_id, EventId(legacy_msg_id), reason)
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


class Bookmarks(KeptRooms[MUC], LegacyBookmarks[MUC]):
    """The user's rooms, one `MUC` object per room for the session's lifetime
    (`gateway.rooms.KeptRooms`): slidge 0.4.2 builds a new one from an SQL query at
    every lookup (every Matrix event)."""

    session: Session

    async def known_legacy_id(self, local_part: str) -> str | None:
        """The room at `local_part`, without resolving an alias on the homeserver."""
        for room_id, local in self.session.room_addresses().items():
            if local == local_part:
                return room_id
        try:
            parsed = localpart_to_id(local_part)
        except ValueError:
            return None
        return parsed.matrix_id if parsed.kind == "room" else None

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
