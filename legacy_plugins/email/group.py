"""Delta Chat groups as MUCs hosted by the gateway: chat 12 is ``group-12@<gateway>``.

A group is a chat of the user's account (``Chat-Group-ID`` on the wire): encrypted when
every member has a key (SecureJoin or Autocrypt), else an "ad-hoc" plain-mail group. Its
name is the room's name; its members, each an address, are participants tied to their
contacts, so the room is non-anonymous. Members added or removed by others arrive as
the core's info messages, shown by the room itself; the user adds a member by inviting
the contact to the room and removes one by kicking them. Everyone is a plain member:
Delta Chat groups have no admins. Email has no presence, so every member is shown as
present (available).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from slidge.group import LegacyBookmarks, LegacyMUC, LegacyParticipant, MucType
from slidge.util.types import XMPPMessage
from slixmpp.exceptions import XMPPError

from .actions import MessageActions, core_avatar
from .client import ChatInfo
from .contact import Contact
from .errors import EmailError, as_xmpp_error
from .translate import SELF_CONTACT, ChatId, group_legacy_id, localpart_to_group

if TYPE_CHECKING:
    from .session import Session

__all__ = ["MUC", "Bookmarks", "Participant"]


class Participant(LegacyParticipant[Contact]):
    async def on_set_affiliation(
        self, affiliation: str, reason: str | None, nickname: str | None
    ) -> None:
        """Member: add them to the Delta Chat group (an invitation lands here too);
        none or outcast: remove them. Delta Chat has no admins or owners."""
        if affiliation == "member":
            await self._change(add=True)
        elif affiliation in ("none", "outcast"):
            await self._change(add=False)
        else:
            raise XMPPError("feature-not-implemented", "Delta Chat groups have members only")

    async def on_kick(self, reason: str | None) -> None:
        """The user kicked a member: remove them from the Delta Chat group."""
        await self._change(add=False)

    async def _change(self, *, add: bool) -> None:
        muc = self.muc
        assert isinstance(muc, MUC)
        if self.contact is None:
            raise XMPPError("bad-request", "Only people with an email address can be members")
        address = self.contact.legacy_id
        account = muc.session.account
        try:
            chat = await account.chat(muc.chat_id)
            info = await account.contact_for(address)
            if add and info is None and not chat.is_encrypted:
                info = await account.contact(await account.create_address_contact(address))
            if info is None or (chat.is_encrypted and not info.is_key_contact):
                raise XMPPError(
                    "not-acceptable",
                    f"{address} has no key yet: this group is encrypted, so they need to "
                    "exchange keys with you first ('invite' or 'join')",
                )
            if add:
                await account.add_member(muc.chat_id, info.id)
            else:
                await account.remove_member(muc.chat_id, info.id)
        except EmailError as e:
            raise as_xmpp_error(e) from e


class MUC(MessageActions, LegacyMUC[Participant]):
    session: Session
    REPLIES = True
    CORRECTION = True
    RETRACTION = True
    HAS_DESCRIPTION = False

    @property
    def chat_id(self) -> ChatId:
        return localpart_to_group(self.legacy_id)

    async def target_chat(self) -> ChatId:
        return self.chat_id

    async def update_info(self) -> None:
        self.type = MucType.GROUP
        try:
            chat = await self.session.account.chat(self.chat_id)
        except EmailError as e:
            raise XMPPError("item-not-found", f"No such email group: {e}") from e
        if chat.kind != "Group":
            raise XMPPError("item-not-found", f"{self.legacy_id} is not a group")
        self.name = chat.name
        self.n_participants = len(chat.contact_ids)
        if chat.profile_image:
            self.avatar = core_avatar(chat.profile_image)

    async def refresh_from(self, chat: ChatInfo) -> None:
        """The core says the group changed: name, image and members."""
        if chat.name and chat.name != self.name:
            self.name = chat.name
        await self.set_avatar(core_avatar(chat.profile_image))
        await self.refresh_members(chat)

    async def refresh_members(self, chat: ChatInfo | None = None) -> None:
        """Make the room's occupants the group's members."""
        if chat is None:
            chat = await self.session.account.chat(self.chat_id)
        addresses = set()
        for contact_id in chat.contact_ids:
            if contact_id == SELF_CONTACT:
                continue
            info = await self.session.account.contact(contact_id)
            addresses.add(info.address)
            participant = await self.get_participant_by_legacy_id(info.address)
            participant.affiliation, participant.role = "member", "participant"
            participant.online()  # email has no presence: a member is present
        async for participant in self.get_participants():
            if participant.is_user or participant.is_system or participant.contact is None:
                continue
            if participant.contact.legacy_id not in addresses:
                self.remove_participant(participant)
        self.n_participants = len(chat.contact_ids)

    async def fill_participants(self) -> AsyncIterator[Participant]:
        chat = await self.session.account.chat(self.chat_id)
        for contact_id in chat.contact_ids:
            if contact_id == SELF_CONTACT:
                continue
            info = await self.session.account.contact(contact_id)
            participant = await self.get_participant_by_legacy_id(info.address)
            participant.affiliation, participant.role = "member", "participant"
            participant.online()  # email has no presence: a member is present
            yield participant
        user = await self.get_user_participant()
        user.affiliation, user.role = "member", "participant"
        yield user

    async def on_message(self, message: XMPPMessage) -> str | None:
        try:
            return await self.session.send_message(self.chat_id, message)
        except EmailError as e:
            raise as_xmpp_error(e) from e

    async def on_set_config(self, name: str | None, description: str | None) -> None:
        """The room's configuration form (``muc#roomconfig_roomname``), which is how XMPP
        clients rename a group chat: renames the Delta Chat group for everyone."""
        name = (name or "").strip()
        if not name or name == self.name:
            return
        try:
            await self.session.account.set_chat_name(self.chat_id, name)
        except EmailError as e:
            raise as_xmpp_error(e) from e
        self.name = name

    async def on_avatar(self, data: bytes | None, mime: str | None) -> str | None:
        """The room's avatar (vCard): the Delta Chat group image, for everyone. The
        room's avatar follows when the core reports the change (ChatModified)."""
        try:
            await self.session.set_group_image(self.chat_id, data)
        except EmailError as e:
            raise as_xmpp_error(e) from e
        return None

    async def on_set_subject(self, subject: str) -> None:
        raise XMPPError(
            "feature-not-implemented",
            "Delta Chat groups have no subject: change the room's name in its configuration",
        )

    async def on_leave(self) -> None:
        try:
            await self.session.account.leave_group(self.chat_id)
        except EmailError as e:
            raise as_xmpp_error(e) from e

    async def available_emojis(self, legacy_msg_id: str | None = None) -> set[str] | None:
        return None


class Bookmarks(LegacyBookmarks[MUC]):
    session: Session

    async def legacy_id_to_jid_local_part(self, legacy_id: str) -> str:
        return group_legacy_id(localpart_to_group(legacy_id))

    async def jid_local_part_to_legacy_id(self, local_part: str) -> str:
        try:
            return group_legacy_id(localpart_to_group(local_part))
        except ValueError as e:
            raise XMPPError("item-not-found", str(e)) from e

    async def fill(self) -> None:
        for chat_id in await self.session.account.chats():
            try:
                chat = await self.session.account.chat(chat_id)
                if chat.kind != "Group" or not chat.self_in_group:
                    continue
                muc = await self.by_legacy_id(group_legacy_id(chat_id))
                await muc.add_to_bookmarks(auto_join=True)
            except (EmailError, XMPPError) as e:
                self.log.warning("Could not show the group %s: %s", chat_id, e)
