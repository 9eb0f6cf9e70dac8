"""One user's mail account in Delta Chat's core: the only module that calls the core's API.

An :class:`EmailAccount` owns a ``deltachat-rpc-server`` process (:mod:`.rpc`) whose
accounts directory is the user's own, holding exactly one Delta Chat account. It turns
the core's JSON-RPC methods into typed calls (``send_text``, ``edit``, ``react``…) and its
event stream into :class:`~.translate.DcEvent` values; it decides nothing about XMPP.

Settings every account gets (:data:`ACCOUNT_SETTINGS`), each found the hard way:

* ``force_encryption = 0``: since core 2.50 an account neither sends nor even downloads
  unencrypted mail. The gateway's users mostly write to ordinary email users, so plain
  mail must flow; Autocrypt still encrypts with every peer whose key the core knows.
* ``mdns_enabled = 1``: read receipts (only ever sent in encrypted chats).
* ``bcc_self``: from the ``keep_mail_on_server`` setting (see :mod:`.config`).
* ``last_msg_id``: the watermark of messages handed to XMPP; set to 0 at registration so
  the first mail is not skipped (the core's default skips all but the newest).

The core hides a classic mail from an unknown sender in a *contact request* chat; the
gateway shows it (see :mod:`.session`) and :meth:`accept_chat`/:meth:`block_chat` answer it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import AddressError, EmailError, LoginFailed
from .rpc import DeltaChatRpc, RpcError
from .translate import (
    ChatId,
    ContactId,
    DcEvent,
    DcMessage,
    LoginParams,
    MalformedEvent,
    MsgId,
    normalize_address,
    parse_event,
    parse_message,
)

log = logging.getLogger(__name__)

ACCOUNT_SETTINGS: dict[str, str] = {"force_encryption": "0", "mdns_enabled": "1"}
ADDRESS_CONTACTS = 0x04  # DC_GCL_ADDRESS: list address-contacts instead of key-contacts


@dataclass(frozen=True, slots=True)
class ChatInfo:
    """A chat of the account, as the gateway sees it."""

    id: ChatId
    name: str
    kind: str  # Single, Group, Mailinglist, OutBroadcast, InBroadcast
    is_contact_request: bool
    is_encrypted: bool
    is_device: bool
    is_self_talk: bool
    contact_ids: tuple[ContactId, ...]
    can_send: bool
    self_in_group: bool
    profile_image: str | None


@dataclass(frozen=True, slots=True)
class ContactInfo:
    id: ContactId
    address: str
    display_name: str
    is_key_contact: bool
    profile_image: str | None
    is_blocked: bool


def _chat(raw: Mapping[str, Any]) -> ChatInfo:
    return ChatInfo(
        id=ChatId(int(raw["id"])),
        name=str(raw.get("name") or ""),
        kind=str(raw.get("chatType") or "Single"),
        is_contact_request=bool(raw.get("isContactRequest")),
        is_encrypted=bool(raw.get("isEncrypted")),
        is_device=bool(raw.get("isDeviceChat")),
        is_self_talk=bool(raw.get("isSelfTalk")),
        contact_ids=tuple(ContactId(int(c)) for c in raw.get("contactIds") or ()),
        can_send=bool(raw.get("canSend", True)),
        self_in_group=bool(raw.get("selfInGroup", True)),
        profile_image=raw.get("profileImage") or None,
    )


def _contact(raw: Mapping[str, Any]) -> ContactInfo:
    return ContactInfo(
        id=ContactId(int(raw["id"])),
        address=str(raw.get("address") or "").lower(),
        display_name=str(raw.get("displayName") or raw.get("address") or ""),
        is_key_contact=bool(raw.get("isKeyContact")),
        profile_image=raw.get("profileImage") or None,
        is_blocked=bool(raw.get("isBlocked")),
    )


class EmailAccount:
    """The user's Delta Chat account and the core process that runs it."""

    def __init__(self, directory: Path, *, name: str, request_timeout: float = 60.0) -> None:
        self.directory = directory
        self.rpc = DeltaChatRpc(directory / "accounts", name=name)
        self.timeout = request_timeout
        self.id = 0
        self._replay: list[DcEvent] = []
        self._backup: asyncio.Task[Any] | None = None
        """The offer of the account to a second device, while one is open."""

    # -- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        """Start the core and select the account (created if the directory is new)."""
        await self.rpc.start()
        ids = await self.call("get_all_account_ids")
        self.id = int(ids[0]) if ids else int(await self.call("add_account"))

    async def close(self) -> None:
        task, self._backup = self._backup, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, EmailError):
                await task
        await self.rpc.close()

    async def call(self, method: str, *params: Any, timeout: float | None = None) -> Any:
        return await self.rpc.call(method, *params, timeout=timeout or self.timeout)

    async def acall(self, method: str, *params: Any, timeout: float | None = None) -> Any:
        """``call`` for methods whose first parameter is this account's id."""
        return await self.call(method, self.id, *params, timeout=timeout)

    async def is_configured(self) -> bool:
        return bool(await self.acall("is_configured"))

    async def configure(self, login: LoginParams, *, timeout: float, new: bool = True) -> None:
        """Log in to IMAP and SMTP with ``login``; :class:`LoginFailed` says why not.
        A ``new`` account starts its watermark at 0; a reconfigured one keeps it."""
        settings = {**ACCOUNT_SETTINGS, **({"last_msg_id": "0"} if new else {})}
        if login.display_name:
            settings["displayname"] = login.display_name
        await self.acall("batch_set_config", settings)
        try:
            await self.acall("add_or_update_transport", login.to_core(), timeout=timeout)
        except RpcError as e:
            reason = " ".join(e.message.replace("Error:", "").split()).strip("“” ")
            raise LoginFailed(f"Could not log in to {login.address}: {reason}") from e

    async def start(self, settings: Mapping[str, str], *, idle_timeout: float = 20.0) -> None:
        """Apply the gateway's settings, start IMAP and SMTP, and wait (bounded) until
        the inbox is read and watched (the first ``ImapInboxIdle``).

        On its very first connection the core takes the inbox as it finds it and skips
        what is already there: mail that arrived before that moment is not shown. Waiting
        here keeps that window to the login itself. Events seen meanwhile are replayed by
        :meth:`next_event`.
        """
        await self.acall("batch_set_config", {**ACCOUNT_SETTINGS, **settings})
        await self.acall("start_io")
        try:
            async with asyncio.timeout(idle_timeout):
                while True:
                    raw = await self.rpc.next_event()
                    if not isinstance(raw, dict) or raw.get("contextId") != self.id:
                        continue
                    body = raw.get("event")
                    if not isinstance(body, dict):
                        continue
                    if body.get("kind") == "ImapInboxIdle":
                        return
                    event = self._parse(raw)
                    if event is not None:
                        self._replay.append(event)
        except TimeoutError:
            log.warning(
                "The inbox of account %s is not watched after %g s (IMAP unreachable?); "
                "going on, the core keeps trying",
                self.id,
                idle_timeout,
            )

    async def address(self) -> str:
        return str(await self.acall("get_config", "configured_addr") or "").lower()

    async def remove(self) -> None:
        """Delete the account and every local file of it, then stop the core."""
        try:
            await self.acall("remove_account")
        finally:
            await self.close()
            shutil.rmtree(self.directory, ignore_errors=True)

    # -- events -------------------------------------------------------------------------

    async def next_event(self) -> DcEvent | None:
        """The next event of this account the gateway acts on (None: ignore, ask again)."""
        if self._replay:
            return self._replay.pop(0)
        return self._parse(await self.rpc.next_event())

    def _parse(self, raw: Any) -> DcEvent | None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("core event: %.300s", raw)
        try:
            event = parse_event(raw)
        except MalformedEvent as e:
            log.warning("Ignoring a malformed event from the core: %s (%.200r)", e, raw)
            return None
        if event is None or event.account != self.id:
            return None
        return event

    async def next_messages(self) -> list[MsgId]:
        """Messages after the ``last_msg_id`` watermark, oldest first."""
        return [MsgId(int(i)) for i in await self.acall("get_next_msgs")]

    async def set_watermark(self, msg_id: MsgId) -> None:
        await self.acall("set_config", "last_msg_id", str(int(msg_id)))

    # -- reading ------------------------------------------------------------------------

    async def message(self, msg_id: MsgId) -> DcMessage:
        return parse_message(await self.acall("get_message", int(msg_id)))

    async def message_exists(self, msg_id: MsgId) -> bool:
        return bool(await self.acall("get_existing_msg_ids", [int(msg_id)]))

    async def chat(self, chat_id: ChatId) -> ChatInfo:
        return _chat(await self.acall("get_full_chat_by_id", int(chat_id)))

    async def contact(self, contact_id: ContactId) -> ContactInfo:
        return _contact(await self.acall("get_contact", int(contact_id)))

    async def chats(self) -> list[ChatId]:
        return [ChatId(int(c)) for c in await self.acall("get_chatlist_entries", None, None, None)]

    async def reactions(self, msg_id: MsgId) -> Any:
        return await self.acall("get_message_reactions", int(msg_id))

    async def readers(self, msg_id: MsgId) -> list[ContactId]:
        receipts = await self.acall("get_message_read_receipts", int(msg_id))
        return [ContactId(int(r["contactId"])) for r in receipts or () if "contactId" in r]

    # -- contacts and chats -------------------------------------------------------------

    async def one_to_one_chat(self, address: str, *, create: bool) -> ChatId | None:
        """The chat to write to ``address`` in: the encrypted one if a SecureJoin or
        Autocrypt gave the core a key-contact with a chat, else the plain one (created
        if ``create``)."""
        try:
            addr = normalize_address(address)
        except ValueError as e:
            raise AddressError(str(e)) from e
        for flags in (0, ADDRESS_CONTACTS):
            for cid in await self.acall("get_contact_ids", flags, addr):
                contact = await self.contact(ContactId(int(cid)))
                if contact.address != addr:
                    continue
                chat = await self.acall("get_chat_id_by_contact_id", contact.id)
                if chat:
                    return ChatId(int(chat))
        if not create:
            return None
        contact_id = await self.acall("create_contact", addr, None)
        return ChatId(int(await self.acall("create_chat_by_contact_id", contact_id)))

    async def contact_for(self, address: str) -> ContactInfo | None:
        """The contact with ``address``: a key-contact if one exists, else the plain one."""
        addr = normalize_address(address)
        for flags in (0, ADDRESS_CONTACTS):
            for cid in await self.acall("get_contact_ids", flags, addr):
                contact = await self.contact(ContactId(int(cid)))
                if contact.address == addr:
                    return contact
        return None

    async def create_address_contact(self, address: str) -> ContactId:
        """A plain (address) contact: mail to it is unencrypted."""
        return ContactId(int(await self.acall("create_contact", normalize_address(address), None)))

    async def message_html(self, msg_id: MsgId) -> str | None:
        html = await self.acall("get_message_html", int(msg_id))
        return str(html) if html else None

    async def accept_chat(self, chat_id: ChatId) -> None:
        await self.acall("accept_chat", int(chat_id))

    async def block_chat(self, chat_id: ChatId) -> None:
        await self.acall("block_chat", int(chat_id))

    async def create_group(
        self, name: str, contact_ids: list[ContactId], *, encrypted: bool
    ) -> ChatId:
        method = "create_group_chat" if encrypted else "create_group_chat_unencrypted"
        params: tuple[Any, ...] = (name, False) if encrypted else (name,)
        chat_id = ChatId(int(await self.acall(method, *params)))
        for contact in contact_ids:
            await self.acall("add_contact_to_chat", int(chat_id), int(contact))
        return chat_id

    async def add_member(self, chat_id: ChatId, contact_id: ContactId) -> None:
        await self.acall("add_contact_to_chat", int(chat_id), int(contact_id))

    async def remove_member(self, chat_id: ChatId, contact_id: ContactId) -> None:
        await self.acall("remove_contact_from_chat", int(chat_id), int(contact_id))

    async def set_chat_name(self, chat_id: ChatId, name: str) -> None:
        await self.acall("set_chat_name", int(chat_id), name)

    async def set_chat_image(self, chat_id: ChatId, image: Path | None) -> None:
        """The group's image, for every member (None removes it); the core copies it."""
        await self.acall("set_chat_profile_image", int(chat_id), str(image) if image else None)

    async def set_self_avatar(self, image: Path | None) -> None:
        """The user's profile image, sent to Delta Chat peers with the next messages."""
        await self.acall("set_config", "selfavatar", str(image) if image else None)

    async def leave_group(self, chat_id: ChatId) -> None:
        await self.acall("leave_group", int(chat_id))

    # -- sending ------------------------------------------------------------------------

    async def send(
        self,
        chat_id: ChatId,
        text: str | None,
        *,
        quote: MsgId | None = None,
        file: Path | None = None,
        file_name: str | None = None,
        view_type: str | None = None,
    ) -> MsgId:
        data: dict[str, Any] = {"text": text}
        if quote is not None:
            data["quotedMessageId"] = int(quote)
        if file is not None:
            data["file"] = str(file)
            data["filename"] = file_name or file.name
        if view_type is not None:
            data["viewtype"] = view_type
        try:
            return MsgId(int(await self.acall("send_msg", int(chat_id), data)))
        except RpcError as e:
            raise EmailError(f"Delta Chat could not send the message: {e.message}") from e

    async def edit(self, msg_id: MsgId, text: str) -> None:
        await self.acall("send_edit_request", int(msg_id), text)

    async def delete_for_all(self, msg_id: MsgId) -> None:
        await self.acall("delete_messages_for_all", [int(msg_id)])

    async def react(self, msg_id: MsgId, emojis: list[str]) -> None:
        await self.acall("send_reaction", int(msg_id), emojis)

    async def mark_seen(self, msg_ids: list[MsgId]) -> None:
        await self.acall("markseen_msgs", [int(m) for m in msg_ids])

    # -- SecureJoin -----------------------------------------------------------------------

    async def invite_link(self, chat_id: ChatId | None = None) -> str:
        """The user's own invite link (or a group's): whoever opens it gets verified."""
        return str(await self.acall("get_chat_securejoin_qr_code", chat_id))

    async def invite_svg(self, chat_id: ChatId | None = None) -> str:
        svg = await self.acall("get_chat_securejoin_qr_code_svg", chat_id)
        return str(svg[1] if isinstance(svg, list) else svg)

    async def check_link(self, link: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.acall("check_qr", link)
        return result

    # -- a second device ------------------------------------------------------------------

    async def offer_backup(self) -> str:
        """Start offering this account to a second device (Delta Chat's "Add as second
        device"); returns the ``DCBACKUP…`` code to scan. :meth:`backup_taken` waits."""
        await self.acall("set_config", "bcc_self", "1")  # both devices see everything
        await self.cancel_backup()
        # No request timeout: the core answers once a device has fetched the account.
        self._backup = asyncio.create_task(
            self.rpc.call("provide_backup", self.id, timeout=None), name="dc-provide-backup"
        )
        for _ in range(100):  # the code exists once the transfer endpoint is up
            if self._backup.done():
                await self._backup  # failed: raise its error
            try:
                return str(await self.acall("get_backup_qr"))
            except RpcError:
                await asyncio.sleep(0.2)
        await self.cancel_backup()
        raise EmailError("Delta Chat could not prepare the transfer to a second device")

    async def backup_taken(self, timeout: float) -> bool:
        """Whether a device fetched the account within ``timeout`` s (else: cancelled)."""
        task = self._backup
        if task is None:
            return False
        try:
            async with asyncio.timeout(timeout):
                await task
        except TimeoutError:
            await self.cancel_backup()
            return False
        finally:
            self._backup = None
        return True

    async def cancel_backup(self) -> None:
        task, self._backup = self._backup, None
        if task is not None and not task.done():
            with contextlib.suppress(EmailError):
                await self.acall("stop_ongoing_process")
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, EmailError):
                await task

    async def secure_join(self, link: str) -> ChatId:
        return ChatId(int(await self.acall("secure_join", link)))
