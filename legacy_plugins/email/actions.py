"""What a user does to a message in any email chat, 1:1 or group: react, delete, mark read.

Shared by :class:`~.contact.Contact` and :class:`~.group.MUC`; both map the action to the
same Delta Chat call on the message's id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from slidge.util.types import ChatState, Sticker
from slixmpp.exceptions import XMPPError

from .errors import EmailError, as_xmpp_error
from .translate import MsgId

if TYPE_CHECKING:
    from .session import Session


class MessageActions:
    """Mixed in before slidge's recipient class, so these implement its hooks."""

    session: Session

    async def on_sticker(self, sticker: Sticker) -> str | None:
        raise NotImplementedError

    async def on_react(self, legacy_msg_id: str, emojis: list[str], thread: str | None) -> None:
        try:
            await self.session.account.react(self._msg(legacy_msg_id), emojis)
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
