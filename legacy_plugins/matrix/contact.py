"""Matrix users as XMPP contacts: ``@alice:example.org`` is ``alice%example.org@<gateway>``.

A contact stands for the person; the direct chat (a Matrix room) behind it is looked up,
or created, when the XMPP user writes (:meth:`Session.dm_room`). The JID ↔ user ID
mapping is :mod:`.ids` (case-safe); a JID that names a room is refused here, so slidge
tries it as a group chat instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from slidge.contact import LegacyContact, LegacyRoster
from slidge.util.types import ChatState, Sticker, XMPPMessage
from slixmpp.exceptions import XMPPError

from .errors import MatrixError, as_xmpp_error
from .ids import EventId, UserId, id_to_localpart, localpart_to_id

if TYPE_CHECKING:
    from .session import Session

__all__ = ["Contact", "Roster"]


class Contact(LegacyContact):
    session: Session
    REPLIES = True

    @property
    def user_id(self) -> UserId:
        return UserId(self.legacy_id)

    async def update_info(self) -> None:
        self.name = await self.session.profile_name(self.user_id) or self.user_id

    async def on_message(self, message: XMPPMessage) -> str | None:
        try:
            room_id = await self.session.dm_room(self.user_id)
            return await self.session.send_message(room_id, message)
        except MatrixError as e:
            raise as_xmpp_error(e) from e

    async def on_sticker(self, sticker: Sticker) -> str | None:
        raise NotImplementedError

    async def on_react(self, legacy_msg_id: str, emojis: list[str], thread: str | None) -> None:
        try:
            room_id = await self.session.dm_room(self.user_id)
            await self.session.react(room_id, EventId(legacy_msg_id), emojis)
        except MatrixError as e:
            raise as_xmpp_error(e) from e

    async def on_retract(self, legacy_msg_id: str, thread: str | None) -> None:
        try:
            room_id = await self.session.dm_room(self.user_id)
            await self.session.retract(room_id, EventId(legacy_msg_id))
        except MatrixError as e:
            raise as_xmpp_error(e) from e

    async def on_chat_state(self, chat_state: ChatState, thread: str | None) -> None:
        room_id = self.session.rooms.dm_room(self.user_id)
        if room_id is None:
            return  # no chat yet: nothing to show the other side
        try:
            await self.session.chat_state(room_id, chat_state)
        except MatrixError as e:
            raise as_xmpp_error(e) from e

    async def on_displayed(self, legacy_msg_id: str, thread: str | None) -> None:
        room_id = self.session.rooms.dm_room(self.user_id)
        if room_id is None:
            return
        try:
            await self.session.displayed(room_id, legacy_msg_id)
        except MatrixError as e:
            raise as_xmpp_error(e) from e

    async def available_emojis(self, legacy_msg_id: str | None = None) -> set[str] | None:
        return None


class Roster(LegacyRoster[Contact]):
    session: Session

    async def legacy_id_to_jid_username(self, legacy_id: str) -> str:
        return id_to_localpart(legacy_id)

    async def jid_username_to_legacy_id(self, jid_username: str) -> str:
        try:
            parsed = localpart_to_id(jid_username)
        except ValueError as e:
            raise XMPPError("item-not-found", str(e)) from e
        if parsed.kind != "user":
            raise XMPPError(
                "item-not-found", f"{parsed.matrix_id} is a room: join it as a group chat"
            )
        return parsed.matrix_id
