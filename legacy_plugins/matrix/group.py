"""Matrix rooms that are not direct chats, as MUCs hosted by the gateway.

A room ``!AbC:example.org`` is ``!_ab_c%example.org@<gateway>`` (:mod:`.ids`, case-safe).
Its name and topic come from the room state; members are read with ``joined_members``
when the user joins the MUC; power levels give roles: 100 and up is an owner, 50 and up
a moderator (admin), others are members. Each member is a participant tied to the
member's contact, so the group is non-anonymous like Matrix itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from slidge.group import LegacyBookmarks, LegacyMUC, LegacyParticipant, MucType
from slidge.util.types import ChatState, SpaceMetadata, Sticker, XMPPMessage
from slixmpp.exceptions import XMPPError

from .contact import Contact
from .errors import MatrixError, as_xmpp_error
from .ids import EventId, RoomId, id_to_localpart, localpart_to_id

if TYPE_CHECKING:
    from .session import Session

__all__ = ["MUC", "Bookmarks", "Participant"]

OWNER_POWER = 100
MODERATOR_POWER = 50


class Participant(LegacyParticipant[Contact]):
    pass


class MUC(LegacyMUC[Participant]):
    session: Session
    REPLIES = True
    HAS_DESCRIPTION = False

    @property
    def room_id(self) -> RoomId:
        return RoomId(self.legacy_id)

    async def update_info(self) -> None:
        self.type = MucType.GROUP
        state = self.session.rooms.rooms.get(self.room_id)
        if state is None:
            raise XMPPError(
                "item-not-found",
                f"You are not in the Matrix room {self.room_id}; join it from a Matrix "
                "client first (joining new rooms from XMPP is not supported yet)",
            )
        me = self.session.me
        self.name = state.display_name(me)
        self.subject = state.topic or ""
        self.n_participants = state.joined_count

    async def fill_participants(self) -> AsyncIterator[Participant]:
        try:
            members = await self.session.matrix.joined_members(self.room_id)
        except MatrixError as e:
            self.log.warning("Could not read the members of %s: %s", self.room_id, e)
            return
        state = self.session.rooms.room(self.room_id)
        for user, _name in members.items():
            participant = await self.get_participant_by_legacy_id(user)
            power = state.power(user)
            if power >= OWNER_POWER:
                participant.affiliation, participant.role = "owner", "moderator"
            elif power >= MODERATOR_POWER:
                participant.affiliation, participant.role = "admin", "moderator"
            else:
                participant.affiliation, participant.role = "member", "participant"
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

    async def on_leave(self) -> None:
        try:
            await self.session.matrix.leave(self.room_id)
        except MatrixError as e:
            raise as_xmpp_error(e) from e

    async def available_emojis(self, legacy_msg_id: str | None = None) -> set[str] | None:
        return None


class Bookmarks(LegacyBookmarks[MUC]):
    session: Session

    async def legacy_id_to_jid_local_part(self, legacy_id: str) -> str:
        return id_to_localpart(legacy_id)

    async def jid_local_part_to_legacy_id(self, local_part: str) -> str:
        try:
            parsed = localpart_to_id(local_part)
        except ValueError as e:
            raise XMPPError("item-not-found", str(e)) from e
        if parsed.kind == "user":
            raise XMPPError("item-not-found", f"{parsed.matrix_id} is a person: chat with them 1:1")
        if parsed.kind == "alias":
            raise XMPPError(
                "item-not-found",
                f"joining by alias ({parsed.matrix_id}) is not supported yet; the rooms you "
                "are in are in your bookmarks",
            )
        return parsed.matrix_id

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

    async def fetch_space_metadata(self, legacy_id: str) -> SpaceMetadata:
        raise NotImplementedError
