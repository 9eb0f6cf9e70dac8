"""One registered XMPP user's mail account, and the core's events turned into XMPP.

The session owns the user's :class:`~.client.EmailAccount` (a ``deltachat-rpc-server``
process) and one task, :meth:`Session._pump`, which reads the core's events in order and
turns each into a call on a slidge object: a new message becomes ``contact.send_text``
or ``participant.send_text``, an edit ``correct``, a deletion ``retract``, a reaction
``react``, a read receipt ``displayed``. If the core process dies, the pump restarts it
with capped backoff; the user hears once that mail is interrupted, and once that it is
back. Logging out stops the process.

Messages reach XMPP at least once and in order: the pump hands over every message after
the account's watermark (``last_msg_id``, kept in the core's database) and moves the
watermark only after each hand-over, so mail that arrived while the gateway was down is
delivered after the next login, once.

Incoming chats
    * 1:1 (plain or encrypted) → the sender's contact, ``alice\\40example.org@<gateway>``;
    * a *contact request* (first mail from an unknown sender) → the message, from a
      contact not in the roster, plus a notice from the gateway saying how to accept or
      block; replying accepts;
    * a group (``Chat-Group-ID``) → the room ``group-<chat id>@<gateway>``;
    * mailing lists, broadcast channels, the device chat and "saved messages" are not
      shown (see README.md).
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
import random
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from slidge import BaseSession, global_config
from slidge.command import SearchResult
from slidge.command.base import FormField
from slidge.util.types import (
    LegacyAttachment,
    MessageReference,
    Sticker,
    XMPPAttachment,
    XMPPMessage,
)
from slixmpp import JID
from slixmpp.exceptions import XMPPError

from gateway.backoff import Backoff
from gateway.runtime import network_config
from gateway.slidge_fixes import push_to_roster

from .client import ChatInfo, EmailAccount
from .config import Config
from .contact import Contact
from .errors import AddressError, EmailError, as_xmpp_error
from .rpc import RpcServerGone
from .store import USER, AccountStore
from .translate import (
    SELF_CONTACT,
    ChatId,
    ContactId,
    DcEvent,
    DcMessage,
    MalformedEvent,
    MsgId,
    body_of,
    correction_needed,
    delivery,
    group_legacy_id,
    html_file_name,
    normalize_address,
    reactions_of,
    upload_file_name,
    view_type_of_upload,
)

if TYPE_CHECKING:
    from .group import MUC, Participant

DELIVERY_KINDS = frozenset({"IncomingMsg", "MsgsChanged"})
SECOND_DEVICE_WINDOW = 600.0
"""Seconds an ``add-device`` code stays valid."""
MAX_ATTACHMENT = 50 * 1024 * 1024
MAX_REMEMBERED_REACTIONS = 1000


def account_dir(bare_jid: str) -> Path:
    """Where a user's Delta Chat account and the gateway's memory of it live."""
    return Path(global_config.HOME_DIR) / "accounts" / quote(bare_jid.lower(), safe="")


class Session(BaseSession[Contact]):
    account: EmailAccount
    store: AccountStore

    def __init__(self, user: Any) -> None:
        super().__init__(user)
        self.cfg = network_config(Config)
        self.address = str(user.legacy_module_data.get("address") or "")
        self._deliver_lock = asyncio.Lock()
        self._reacted: dict[MsgId, list[str]] = {}
        self._opened = False
        self._pending_avatar: tuple[bytes | None] | None = None
        """The user's avatar (None: no avatar) until the core has taken it."""

    @property
    def opened(self) -> bool:
        """Whether the core runs and the account can be asked things."""
        return self._opened

    # --- slidge hooks ------------------------------------------------------------------

    async def login(self) -> str:
        await self._open()
        self.create_task(self._pump(), name=f"email-pump-{self.user_jid.bare}")
        return f"Connected as {self.address}"

    async def logout(self) -> None:
        self.cancel_all_tasks()
        await self._close()

    async def unregister(self) -> None:
        """The user unregistered: delete the Delta Chat account and its local data."""
        self.cancel_all_tasks()
        if self._opened:
            await self._close()
        account = EmailAccount(account_dir(self.user_jid.bare), name=self._name())
        await account.open()
        await account.remove()

    async def on_search(self, form_values: dict[str, str]) -> SearchResult | None:
        try:
            address = normalize_address(form_values.get("address") or "")
        except ValueError as e:
            raise XMPPError("bad-request", str(e)) from e
        contact = await self.contacts.by_legacy_id(address)
        return SearchResult(
            fields=[FormField("address"), FormField("jid", type="jid-single")],
            items=[{"address": address, "jid": contact.jid.bare}],
        )

    async def on_avatar(
        self,
        bytes_: bytes | None,
        hash_: str | None,
        type_: str | None,
        width: int | None,
        height: int | None,
    ) -> None:
        """The user's XMPP avatar (XEP-0084, when "sync avatar" is on): their Delta Chat
        profile image, which Delta Chat peers receive with the next messages.

        slidge calls this from a task of its own (at login, and when the avatar changes),
        where an error reaches nobody: while the core is down or restarting, the avatar
        is kept and set when the core is back (:meth:`_pump`)."""
        self._pending_avatar = (bytes_,)
        if self._opened:
            await self._set_avatar()

    async def _set_avatar(self) -> None:
        """Give the core the avatar :meth:`on_avatar` kept, if any; keep it if that fails."""
        if self._pending_avatar is None:
            return
        (bytes_,) = self._pending_avatar
        path = await asyncio.to_thread(self._write_outbox, bytes_) if bytes_ else None
        try:
            await self.account.set_self_avatar(path)
        except EmailError as e:
            self.log.warning("Avatar of %s not set yet (%s); setting it when the core is back",
                             self.user_jid.bare, e)  # fmt: skip
        else:
            if self._pending_avatar == (bytes_,):  # not changed meanwhile
                self._pending_avatar = None
        finally:
            if path is not None:
                await asyncio.to_thread(path.unlink, missing_ok=True)

    async def await_second_device(self) -> None:
        """Tell the user whether the ``add-device`` code was used in time."""
        if await self.account.backup_taken(SECOND_DEVICE_WINDOW):
            self.send_gateway_message(
                "📱 Your other Delta Chat device has your account now: what you send there "
                "shows here as yours."
            )
        else:
            self.send_gateway_message("The add-device code expired; send 'add-device' again.")

    async def set_group_image(self, chat_id: ChatId, data: bytes | None) -> None:
        path = await asyncio.to_thread(self._write_outbox, data) if data else None
        try:
            await self.account.set_chat_image(chat_id, path)
        finally:
            if path is not None:
                await asyncio.to_thread(path.unlink, missing_ok=True)

    async def on_create_group(self, name: str, contacts: list[Contact]) -> str:
        """A new Delta Chat group: encrypted if every member has a key, else plain."""
        try:
            members = [await self.account.contact_for(c.legacy_id) for c in contacts]
            if all(m is not None and m.is_key_contact for m in members):
                ids = [m.id for m in members if m is not None]
                chat_id = await self.account.create_group(name, ids, encrypted=True)
            else:
                ids = [await self.account.create_address_contact(c.legacy_id) for c in contacts]
                chat_id = await self.account.create_group(name, ids, encrypted=False)
        except EmailError as e:
            raise as_xmpp_error(e) from e
        return group_legacy_id(chat_id)

    # --- the account -------------------------------------------------------------------

    def _name(self) -> str:
        return f"dc.{self.user_jid.bare}"

    async def _open(self) -> None:
        directory = account_dir(self.user_jid.bare)
        self.account = EmailAccount(
            directory, name=self._name(), request_timeout=self.cfg.request_timeout
        )
        self.store = AccountStore(directory / "passerelle.sqlite")
        try:
            await self.account.open()
            if not await self.account.is_configured():
                raise EmailError(
                    f"The mail account {self.address or '?'} is not set up (its data is "
                    "missing or incomplete): register again with your address and password"
                )
            keep = "1" if self.cfg.keep_mail_on_server else "0"
            await self.account.start({"bcc_self": keep})
            self.address = await self.account.address() or self.address
        except BaseException:
            await self._close()
            raise
        self._opened = True

    async def _close(self) -> None:
        self._opened = False
        if not hasattr(self, "account"):
            return  # never opened
        try:
            await self.account.close()
        finally:
            self.store.close()

    async def _pump(self) -> None:
        """Deliver the backlog, then every event, in order; restart the core if it dies."""
        backoff = Backoff(initial=1.0, cap=60.0, healthy_after=60.0)
        failures = 0
        while True:
            started = time.monotonic()
            try:
                if not self._opened:
                    await self._open()
                    self.send_gateway_status(f"Connected as {self.address}", show="chat")
                    if failures:
                        self.send_gateway_message("Mail is flowing again.")
                    await self._set_avatar()
                await self._push_roster()
                await self._deliver_new()
                while True:
                    event = await self.account.next_event()
                    if event is not None:
                        await self._on_event(event)
            except (RpcServerGone, EmailError) as e:
                failures = backoff.failures_after(failures, time.monotonic() - started)
                delay = backoff.delay(failures, random.random())  # noqa: S311
                self.log.warning("Delta Chat core for %s failed: %s; restarting in %.0f s",
                                 self.user_jid.bare, e, delay)  # fmt: skip
                if failures == 1:
                    self.send_gateway_message(f"Mail is interrupted ({e}); reconnecting.")
                self.send_gateway_status("Reconnecting…", show="dnd")
                if self._opened:
                    await self._close()
                await asyncio.sleep(delay)

    async def _on_event(self, event: DcEvent) -> None:
        try:
            await self._handle(event)
        except (RpcServerGone, asyncio.CancelledError):
            raise
        except Exception:
            # A bad event must not stop the user's mail: log it and go on.
            self.log.exception("Could not handle %s", event)

    async def _handle(self, event: DcEvent) -> None:
        kind = event.kind
        self.log.debug("Delta Chat event %s", event)
        if kind in DELIVERY_KINDS:
            await self._deliver_new()
            if kind == "MsgsChanged" and event.msg_id:
                await self._maybe_edited(event.msg_id)
        elif kind == "ReactionsChanged" and event.msg_id and event.contact_id:
            await self._reactions(event.msg_id, event.contact_id)
        elif kind == "MsgDeleted" and event.msg_id:
            await self._deleted(event.msg_id)
        elif kind == "MsgRead" and event.msg_id and event.chat_id:
            await self._read(event.chat_id, event.msg_id)
        elif kind == "MsgFailed" and event.msg_id and event.chat_id:
            await self._failed(event.chat_id, event.msg_id)
        elif kind == "ChatModified" and event.chat_id:
            await self._chat_modified(event.chat_id)
        elif kind == "ContactsChanged" and event.contact_id:
            await self._contact_changed(event.contact_id)
        elif kind in ("SecurejoinInviterProgress", "SecurejoinJoinerProgress"):
            if event.progress == 1000 and event.contact_id:
                await self._verified(event.contact_id)
        elif kind == "Error":
            self.log.warning("Delta Chat core: %s", event.text)
        elif kind == "Warning":
            self.log.debug("Delta Chat core warning: %s", event.text)

    # --- new messages --------------------------------------------------------------------

    async def _deliver_new(self) -> None:
        async with self._deliver_lock:
            for msg_id in await self.account.next_messages():
                try:
                    msg = await self.account.message(msg_id)
                except MalformedEvent as e:
                    self.log.warning("Skipping message %s: %s", msg_id, e)
                    await self.account.set_watermark(msg_id)
                    continue
                verdict = delivery(msg)
                if verdict == "wait":
                    if msg.download_state == "Available":
                        await self.account.acall("download_full_message", int(msg_id))
                    return  # the rest after this one is downloaded (MsgsChanged)
                if verdict == "deliver":
                    try:
                        await self._deliver(msg)
                    except (RpcServerGone, asyncio.CancelledError):
                        raise
                    except Exception:
                        self.log.exception("Could not deliver message %s; skipping it", msg_id)
                await self.account.set_watermark(msg_id)

    async def _deliver(self, msg: DcMessage) -> None:
        chat = await self.account.chat(msg.chat_id)
        if chat.is_device or chat.is_self_talk or chat.kind not in ("Single", "Group"):
            self.log.debug("Not showing message %s of %s chat %s", msg.id, chat.kind, chat.id)
            return
        if msg.from_other_device and not msg.is_info:
            await self._deliver_own(chat, msg)
            return
        if chat.kind == "Group":
            muc = await self.muc(chat.id)
            if msg.is_info:  # "member added"…, by anyone (the user's other device too)
                await muc.refresh_members()
                muc.get_system_participant().send_text(body_of(msg), str(msg.id))
                return
            sender: Contact | Participant = await muc.get_participant_by_legacy_id(
                msg.sender_address.lower()
            )
        else:
            address = msg.sender_address.lower()
            if msg.is_info and chat.contact_ids:
                # "verified", timer changes…: from the core, shown in the partner's chat
                address = (await self.account.contact(chat.contact_ids[0])).address
            contact = await self.contacts.by_legacy_id(address)
            if chat.is_contact_request:
                self._notice_request(chat, contact)
            elif not contact.added_to_roster:
                await push_to_roster(contact)
            sender = contact
        body = body_of(msg)
        await self._send_as(sender, msg, body)
        self.store.remember(msg.id, msg.chat_id, msg.sender_address.lower(), body)

    async def _deliver_own(self, chat: ChatInfo, msg: DcMessage) -> None:
        """What the user sent from another device of the account: in a group, from the
        user's own occupant; in a 1:1 chat, a carbon (XEP-0280, through the message
        privilege) of a message to the contact."""
        sender, carbon = await self._sender_of(chat.id, USER)
        body = body_of(msg)
        await self._send_as(sender, msg, body, carbon=carbon)
        self.store.remember(msg.id, msg.chat_id, USER, body)

    async def _send_as(
        self, sender: Contact | Participant, msg: DcMessage, body: str, *, carbon: bool = False
    ) -> None:
        reply = None
        if msg.quoted_id is not None:
            reply = await self._reference(msg.quoted_id, msg.quoted_text)
        attachments = []
        if msg.has_file and msg.file:
            attachments.append(
                LegacyAttachment(
                    path=Path(msg.file),
                    name=msg.file_name or Path(msg.file).name,
                    content_type=msg.file_mime,
                    is_sticker=msg.view_type == "Sticker",
                )
            )
        if msg.has_html:
            # HTML mail, or a text the core cut short: the text above, the whole mail here.
            html = await self.account.message_html(msg.id)
            if html:
                attachments.append(
                    LegacyAttachment(
                        data=html.encode(), name=html_file_name(msg), content_type="text/html"
                    )
                )
        if attachments:
            await sender.send_files(
                attachments, str(msg.id), body or None, reply_to=reply, carbon=carbon
            )
        else:
            sender.send_text(body, str(msg.id), reply_to=reply, carbon=carbon)

    async def _reference(self, msg_id: MsgId, text: str | None) -> MessageReference:
        """A XEP-0461 reference to a quoted message: its author from our memory."""
        delivered = self.store.delivered(msg_id)
        author: Any = "user"
        if delivered is not None and delivered.sender != USER:
            chat = await self.account.chat(delivered.chat_id)
            if chat.kind == "Group":
                muc = await self.muc(chat.id)
                author = await muc.get_participant_by_legacy_id(delivered.sender)
            else:
                author = await self.contacts.by_legacy_id(delivered.sender)
        return MessageReference(str(msg_id), author, text)

    def _notice_request(self, chat: ChatInfo, contact: Contact) -> None:
        if self.store.noticed(chat.id):
            return
        address = contact.legacy_id
        self.send_gateway_message(
            f"📨 Contact request from {chat.name} <{address}> ({contact.jid.bare}). "
            f"Reply to them, or send 'accept {address}', to accept; "
            f"send 'block {address}' to block them."
        )

    # --- changes to delivered messages ---------------------------------------------------

    async def _maybe_edited(self, msg_id: MsgId) -> None:
        delivered = self.store.delivered(msg_id)
        if delivered is None:
            return
        try:
            msg = await self.account.message(msg_id)
        except Exception:  # gone or unreadable: nothing to correct
            return
        if not correction_needed(msg, delivered.body):
            return
        sender, carbon = await self._sender_of(delivered.chat_id, delivered.sender)
        body = body_of(msg)
        sender.correct(str(msg_id), body, carbon=carbon)
        self.store.remember(msg_id, delivered.chat_id, delivered.sender, body)

    async def _deleted(self, msg_id: MsgId) -> None:
        delivered = self.store.delivered(msg_id)
        if delivered is None:
            return  # ours (the user retracted it) or never shown
        sender, carbon = await self._sender_of(delivered.chat_id, delivered.sender)
        sender.retract(str(msg_id), carbon=carbon)
        self.store.forget(msg_id)

    def reacted(self, msg_id: MsgId, emojis: list[str]) -> None:
        """The user reacted from XMPP: the core's echo of it is not news for XMPP."""
        self._reacted[msg_id] = sorted(emojis)
        while len(self._reacted) > MAX_REMEMBERED_REACTIONS:
            del self._reacted[next(iter(self._reacted))]

    async def _reactions(self, msg_id: MsgId, contact_id: ContactId) -> None:
        if contact_id == SELF_CONTACT:
            await self._own_reactions(msg_id)
            return
        try:
            msg = await self.account.message(msg_id)
            contact = await self.account.contact(contact_id)
        except Exception:  # the message is gone
            return
        emojis = reactions_of(await self.account.reactions(msg_id), contact_id)
        sender, _ = await self._sender_of(msg.chat_id, contact.address)
        sender.react(str(msg_id), emojis)

    async def _own_reactions(self, msg_id: MsgId) -> None:
        """The user's reactions changed: from XMPP (nothing to do) or from their other
        device (a carbon in 1:1, their occupant's reaction in a group)."""
        try:
            msg = await self.account.message(msg_id)
        except Exception:  # the message is gone
            return
        emojis = reactions_of(await self.account.reactions(msg_id), SELF_CONTACT)
        if self._reacted.get(msg_id) == sorted(emojis):
            return
        self._reacted[msg_id] = sorted(emojis)
        sender, carbon = await self._sender_of(msg.chat_id, USER)
        sender.react(str(msg_id), emojis, carbon=carbon)

    async def _read(self, chat_id: ChatId, msg_id: MsgId) -> None:
        chat = await self.account.chat(chat_id)
        if chat.kind == "Group":
            muc = await self.muc(chat_id)
            for reader in await self.account.readers(msg_id):
                contact = await self.account.contact(reader)
                participant = await muc.get_participant_by_legacy_id(contact.address)
                participant.displayed(str(msg_id))
        elif chat.kind == "Single" and chat.contact_ids:
            contact = await self.account.contact(chat.contact_ids[0])
            (await self.contacts.by_legacy_id(contact.address)).displayed(str(msg_id))

    async def _failed(self, chat_id: ChatId, msg_id: MsgId) -> None:
        msg = await self.account.message(msg_id)
        self.send_gateway_message(
            f"A message could not be sent ({msg.error or 'no reason given'}): {msg.text[:200]}"
        )

    async def _chat_modified(self, chat_id: ChatId) -> None:
        chat = await self.account.chat(chat_id)
        if chat.kind != "Group":
            return
        muc = self.bookmarks.by_jid_only_if_exists(
            JID(f"{group_legacy_id(chat_id)}@{self.xmpp.boundjid.bare}")
        )
        if muc is None:
            muc = await self.muc(chat_id)
            await muc.add_to_bookmarks(auto_join=True)
        await muc.refresh_from(chat)

    async def _contact_changed(self, contact_id: ContactId) -> None:
        """A contact's name or profile image changed (a Delta Chat peer's avatar arrives
        this way): update the XMPP contact."""
        if contact_id == SELF_CONTACT:
            return
        info = await self.account.contact(contact_id)
        if not info.address:
            return
        try:
            contact = await self.contacts.by_legacy_id(info.address)
        except (AddressError, XMPPError) as e:
            self.log.debug("No XMPP contact for changed contact %s: %s", contact_id, e)
            return
        contact.refresh_from(info)

    async def _verified(self, contact_id: ContactId) -> None:
        contact_info = await self.account.contact(contact_id)
        contact = await self.contacts.by_legacy_id(contact_info.address)
        await push_to_roster(contact)
        self.send_gateway_message(
            f"🔒 {contact_info.display_name} <{contact_info.address}> is verified: your "
            f"messages with {contact.jid.bare} are end-to-end encrypted."
        )

    async def _sender_of(self, chat_id: ChatId, address: str) -> tuple[Contact | Participant, bool]:
        """Who said a delivered message in ``chat_id``, and whether it is a carbon: the
        user's own messages from another device (``address`` is :data:`USER`) are the
        user's occupant in a group and carbons in a 1:1 chat."""
        chat = await self.account.chat(chat_id)
        if chat.kind == "Group":
            muc = await self.muc(chat_id)
            if address == USER:
                return await muc.get_user_participant(), False
            participant: Participant = await muc.get_participant_by_legacy_id(address.lower())
            return participant, False
        if address == USER:
            if not chat.contact_ids:
                raise AddressError(f"chat {chat_id} has no partner")
            address = (await self.account.contact(chat.contact_ids[0])).address
            return await self.contacts.by_legacy_id(address), True
        contact: Contact = await self.contacts.by_legacy_id(address.lower())
        return contact, False

    async def _push_roster(self) -> None:
        """slidge bug 1: put every accepted 1:1 contact in the roster ourselves."""
        for chat_id in await self.account.chats():
            try:
                chat = await self.account.chat(chat_id)
                if chat.kind != "Single" or chat.is_contact_request or chat.is_device:
                    continue
                if chat.is_self_talk or not chat.contact_ids:
                    continue
                info = await self.account.contact(chat.contact_ids[0])
                contact = await self.contacts.by_legacy_id(info.address)
                if not contact.added_to_roster:
                    await push_to_roster(contact)
            except (AddressError, ValueError, XMPPError) as e:
                self.log.debug("Not in the roster: chat %s (%s)", chat_id, e)

    # --- XMPP → mail ---------------------------------------------------------------------

    async def muc(self, chat_id: ChatId) -> MUC:
        muc: MUC = await self.bookmarks.by_legacy_id(group_legacy_id(chat_id))
        return muc

    async def send_message(self, chat_id: ChatId, message: XMPPMessage) -> str | None:
        """Send what the user wrote to ``chat_id``: text, reply, correction or files."""
        chat = await self.account.chat(chat_id)
        if chat.is_contact_request:
            await self.account.accept_chat(chat_id)  # replying accepts, as in Delta Chat
        body = message.body or ""
        if message.replace:
            await self.account.edit(self._msg_id(message.replace), body)
            return None
        quote = self._msg_id(message.reply.msg_id) if message.reply else None
        if not message.attachments:
            return str(await self.account.send(chat_id, body, quote=quote))
        last: MsgId | None = None
        for i, attachment in enumerate(message.attachments):
            path, content_type = await self._download(attachment)
            name = upload_file_name(attachment.url, content_type or attachment.content_type)
            try:
                last = await self.account.send(
                    chat_id,
                    body if i == 0 else None,
                    quote=quote if i == 0 else None,
                    file=path,
                    file_name=name,
                    view_type=view_type_of_upload(name, content_type),
                )
            finally:
                await asyncio.to_thread(path.unlink, missing_ok=True)
        return str(last) if last is not None else None

    async def send_sticker(self, chat_id: ChatId, sticker: Sticker) -> str:
        """A XEP-0449 sticker from the user: a Delta Chat ``Sticker`` (an image that
        Delta Chat shows without a bubble)."""
        suffix = mimetypes.guess_extension(sticker.content_type or "", strict=False) or ".png"
        data = await asyncio.to_thread(sticker.path.read_bytes)
        path = await asyncio.to_thread(self._write_outbox, data)
        quote = self._msg_id(sticker.reply.msg_id) if sticker.reply else None
        try:
            msg_id = await self.account.send(
                chat_id, None, quote=quote, file=path, file_name=f"sticker{suffix}",
                view_type="Sticker",
            )  # fmt: skip
        finally:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        return str(msg_id)

    async def _download(self, attachment: XMPPAttachment) -> tuple[Path, str | None]:
        """Fetch an attachment the user uploaded (HTTP upload) into the account's outbox;
        returns the file and the Content-Type the upload service gave."""
        chunks: list[bytes] = []
        size = 0
        async with attachment.get() as response:
            if response.status != 200:
                raise XMPPError(
                    "item-not-found", f"Could not fetch {attachment.url}: HTTP {response.status}"
                )
            content_type = response.headers.get("Content-Type")
            async for chunk in response.content.iter_chunked(65536):
                size += len(chunk)
                if size > MAX_ATTACHMENT:
                    raise XMPPError("not-acceptable", "The file is too big for email")
                chunks.append(chunk)
        path = await asyncio.to_thread(self._write_outbox, b"".join(chunks))
        return path, content_type

    def _write_outbox(self, data: bytes) -> Path:
        outbox = self.account.directory / "outbox"
        outbox.mkdir(exist_ok=True)
        fd, name = tempfile.mkstemp(dir=outbox)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        return Path(name)

    @staticmethod
    def _msg_id(legacy_id: str) -> MsgId:
        try:
            return MsgId(int(legacy_id))
        except ValueError:
            raise XMPPError(
                "item-not-found", f"No email message has the id {legacy_id!r}"
            ) from None

    async def chat_for(self, address: str, *, create: bool = True) -> ChatId:
        try:
            chat = await self.account.one_to_one_chat(address, create=create)
        except EmailError as e:
            raise as_xmpp_error(e) from e
        if chat is None:
            raise XMPPError("item-not-found", f"There is no chat with {address} yet")
        return chat
