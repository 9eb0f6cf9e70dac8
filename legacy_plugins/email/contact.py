"""Email addresses as XMPP contacts: ``alice@example.org`` is ``alice\\40example.org@<gateway>``.

A contact stands for the address; the chat behind it (plain, or encrypted after a
SecureJoin or Autocrypt) is looked up, or created, when the user writes
(:meth:`Session.chat_for`). The escaping is :mod:`.translate` (lower-cased XEP-0106); a
JID that names no address is refused here, so slidge tries it as a room instead.
Adding an address to the roster (a subscription request) accepts or starts the chat.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from slidge.contact import LegacyContact, LegacyRoster
from slidge.util.types import XMPPMessage
from slixmpp.exceptions import XMPPError

from .actions import MessageActions, core_avatar
from .client import ContactInfo
from .errors import EmailError, as_xmpp_error
from .translate import ChatId, address_to_localpart, localpart_to_address

if TYPE_CHECKING:
    from .session import Session

__all__ = ["Contact", "Roster"]


class Contact(MessageActions, LegacyContact):
    session: Session
    REPLIES = True
    CORRECTION = True
    RETRACTION = True

    async def update_info(self) -> None:
        self.name = self.legacy_id
        if not self.session.opened:
            return
        try:
            info = await self.session.account.contact_for(self.legacy_id)
        except (EmailError, ValueError):
            return
        if info is not None:
            self.refresh_from(info)

    def refresh_from(self, info: ContactInfo) -> None:
        """Name and avatar from the core: the ``From:`` name, the profile image a Delta
        Chat peer sends (``Chat-User-Avatar``)."""
        if info.display_name and info.display_name != info.address:
            self.name = info.display_name
        avatar, current = core_avatar(info.profile_image), self.avatar
        if (avatar and avatar.unique_id) != (current and current.unique_id):
            self.avatar = avatar

    async def target_chat(self) -> ChatId:
        return await self.session.chat_for(self.legacy_id)

    async def on_message(self, message: XMPPMessage) -> str | None:
        try:
            return await self.session.send_message(await self.target_chat(), message)
        except EmailError as e:
            raise as_xmpp_error(e) from e

    async def on_friend_request(self, text: str = "") -> None:
        """The user added this address to their roster: accept or start the chat."""
        try:
            chat_id = await self.session.chat_for(self.legacy_id)
            await self.session.account.accept_chat(chat_id)
        except EmailError as e:
            raise as_xmpp_error(e) from e
        await self.accept_friend_request()

    async def on_friend_accept(self) -> None:
        return

    async def on_friend_delete(self, text: str = "") -> None:
        return  # the chat stays; blocking is an explicit command

    async def available_emojis(self, legacy_msg_id: str | None = None) -> set[str] | None:
        return None


class Roster(LegacyRoster[Contact]):
    session: Session

    async def legacy_id_to_jid_username(self, legacy_id: str) -> str:
        try:
            return address_to_localpart(legacy_id)
        except ValueError as e:
            raise XMPPError("bad-request", str(e)) from e

    async def jid_username_to_legacy_id(self, jid_username: str) -> str:
        try:
            return localpart_to_address(jid_username)
        except ValueError as e:
            raise XMPPError("item-not-found", str(e)) from e
