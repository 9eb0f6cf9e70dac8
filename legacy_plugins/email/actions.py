"""What a user does in any email chat, 1:1 or group: send a sticker, react, delete, mark read.

Shared by :class:`~.contact.Contact` and :class:`~.group.MUC`; both map the action to the
same Delta Chat call on the message's id. :func:`core_avatar` turns the core's pictures
into their avatars.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from slidge.util.types import Avatar, ChatState, Sticker
from slixmpp.exceptions import XMPPError

from .errors import EmailError, as_xmpp_error
from .translate import ChatId, MsgId

if TYPE_CHECKING:
    from .session import Session


def core_avatar(profile_image: str | None) -> Avatar | None:
    """An avatar from a picture of the core (a contact's profile image, a group image).
    The core names its files by their content's hash, so the name is a stable id."""
    if not profile_image:
        return None
    path = Path(profile_image)
    return Avatar(path=path, unique_id=path.name)


class MessageActions:
    """Mixed in before slidge's recipient class, so these implement its hooks."""

    session: Session

    async def target_chat(self) -> ChatId:
        """The Delta Chat chat this contact or room writes to."""
        raise NotImplementedError

    async def on_sticker(self, sticker: Sticker) -> str | None:
        try:
            return await self.session.send_sticker(await self.target_chat(), sticker)
        except EmailError as e:
            raise as_xmpp_error(e) from e

    async def on_react(self, legacy_msg_id: str, emojis: list[str], thread: str | None) -> None:
        msg_id = self._msg(legacy_msg_id)
        self.session.reacted(msg_id, emojis)  # before the core's event about it can come
        try:
            await self.session.account.react(msg_id, emojis)
        except EmailError as e:
            raise as_xmpp_error(e) from e

    async def on_retract(self, legacy_msg_id: str, thread: str | None) -> None:
        try:
            await self.session.account.delete_for_all(self._msg(legacy_msg_id))
        except EmailError as e:
            raise as_xmpp_error(e) from e

    async def on_displayed(self, legacy_msg_id: str, thread: str | None) -> None:
        try:
            await self.session.account.mark_seen([self._msg(legacy_msg_id)])
        except EmailError as e:
            raise as_xmpp_error(e) from e

    async def on_chat_state(self, chat_state: ChatState, thread: str | None) -> None:
        return  # email has no typing notifications

    @staticmethod
    def _msg(legacy_msg_id: str) -> MsgId:
        try:
            return MsgId(int(legacy_msg_id))
        except ValueError:
            raise XMPPError(
                "item-not-found", f"No email message has the id {legacy_msg_id!r}"
            ) from None
