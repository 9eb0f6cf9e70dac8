"""The email gateway's commands, as ad-hoc commands (XEP-0050) and chat commands.

* ``invite``: the user's own Delta Chat invite link (and its QR code as an image). A
  Delta Chat user who opens it starts a SecureJoin: both sides then have each other's
  key, verified, and the chat is end-to-end encrypted — the only way to reach a
  Delta Chat user with default settings, who drops unencrypted mail.
* ``join <link>``: the other direction, accepting a peer's ``https://i.delta.chat/…``
  or ``OPENPGP4FPR:…`` link; the verified contact then appears in the roster.
* ``add-device``: a code for Delta Chat's "Add as second device", so the user can use
  the same account (same keys) in a Delta Chat app too; what they send there shows on
  XMPP as theirs (see :mod:`.session`).
* ``accept <address>`` / ``block <address>``: answer a contact request (the first mail
  of an unknown sender).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from slidge.command import Command, CommandAccess, FormField
from slidge.command.base import FormSession, FormValues
from slixmpp import JID
from slixmpp.exceptions import XMPPError

from .client import EmailAccount
from .errors import EmailError, as_xmpp_error
from .session import SECOND_DEVICE_WINDOW, Session
from .translate import invite_link, normalize_address


def _session(session: Any) -> Session:
    if not isinstance(session, Session) or not session.opened:
        raise XMPPError("service-unavailable", "Your mail account is not connected right now")
    return session


async def _code_with_qr(
    session: Any, make: Callable[[EmailAccount], Awaitable[str]]
) -> tuple[Session, str]:
    """A code from the user's account (``make``), also sent to them as a QR image."""
    s = _session(session)
    try:
        code = await make(s.account)
    except EmailError as e:
        raise as_xmpp_error(e) from e
    s.create_task(s.send_qr(code))
    return s, code


class Invite(Command[Session]):
    NAME = "🔗 My Delta Chat invite link"
    HELP = (
        "Your invite link: a Delta Chat user who opens it gets an end-to-end encrypted, "
        "verified chat with you."
    )
    CHAT_COMMAND = "invite"
    NODE = "email/invite"
    ACCESS = CommandAccess.USER_LOGGED

    async def run(self, session: Session | None, ifrom: JID, *args: str) -> str:
        _, link = await _code_with_qr(session, lambda account: account.invite_link())
        return f"Your Delta Chat invite link (also as a QR code): {link}"


class Join(Command[Session]):
    NAME = "🤝 Accept a Delta Chat invite link"
    HELP = "Open someone's Delta Chat invite link: you get a verified, encrypted chat."
    CHAT_COMMAND = "join"
    NODE = "email/join"
    ACCESS = CommandAccess.USER_LOGGED

    async def run(
        self, session: Session | None, ifrom: JID, *args: str
    ) -> str | FormSession[Session]:
        s = _session(session)
        if args:
            return await self.join(s, " ".join(args))
        return FormSession[Session](
            title="Accept a Delta Chat invite link",
            instructions="Paste the link (https://i.delta.chat/… or OPENPGP4FPR:…)",
            fields=[FormField(var="link", label="Invite link", required=True)],
            handler=self.finish,
        )

    @classmethod
    async def finish(cls, form_values: FormValues, session: Any, ifrom: JID) -> str:
        return await cls.join(_session(session), str(form_values.get("link") or ""))

    @staticmethod
    async def join(session: Session, text: str) -> str:
        try:
            link = invite_link(text)
        except ValueError as e:
            raise XMPPError("bad-request", str(e)) from e
        try:
            checked = await session.account.check_link(link)
            kind = str(checked.get("kind", ""))
            if kind not in ("askVerifyContact", "askVerifyGroup", "askJoinBroadcast"):
                raise XMPPError("bad-request", f"This link cannot be joined ({kind})")
            await session.account.secure_join(link)
        except EmailError as e:
            raise as_xmpp_error(e) from e
        what = checked.get("grpname") or checked.get("name") or "the inviter"
        return (
            f"Joining {what}: the key exchange takes a few seconds; a message will say "
            "when it is done."
        )


class AddDevice(Command[Session]):
    NAME = "📱 Use this account in a Delta Chat app too"
    HELP = (
        "A code to scan with Delta Chat's 'Add as second device': the app gets this mail "
        "account with its keys and chats, and what you send there shows here as yours."
    )
    CHAT_COMMAND = "add-device"
    NODE = "email/add-device"
    ACCESS = CommandAccess.USER_LOGGED

    async def run(self, session: Session | None, ifrom: JID, *args: str) -> str:
        s, code = await _code_with_qr(session, lambda account: account.offer_backup())
        s.create_task(s.await_second_device())
        minutes = round(SECOND_DEVICE_WINDOW / 60)
        return (
            f"In Delta Chat, choose 'Add as second device' and scan this code (also sent as "
            f"a QR image) within {minutes} minutes. It opens your account, keys included, to "
            f"whoever scans it: keep it to yourself.\n{code}"
        )


class _Answer(Command[Session]):
    ACCESS = CommandAccess.USER_LOGGED

    async def run(
        self, session: Session | None, ifrom: JID, *args: str
    ) -> str | FormSession[Session]:
        s = _session(session)
        if args:
            return await self.answer(s, args[0])
        return FormSession[Session](
            title=self.NAME,
            instructions="The email address of the contact request",
            fields=[FormField(var="address", label="Email address", required=True)],
            handler=self.finish,
        )

    async def finish(self, form_values: FormValues, session: Any, ifrom: JID) -> str:
        return await self.answer(_session(session), str(form_values.get("address") or ""))

    async def answer(self, session: Session, address: str) -> str:
        try:
            addr = normalize_address(address)
        except ValueError as e:
            raise XMPPError("bad-request", str(e)) from e
        chat = await session.chat_for(addr, create=False)
        try:
            return await self.apply(session, addr, chat)
        except EmailError as e:
            raise as_xmpp_error(e) from e

    async def apply(self, session: Session, address: str, chat: Any) -> str:
        raise NotImplementedError


class Accept(_Answer):
    NAME = "✅ Accept a contact request"
    HELP = "Accept the contact request of an email address: it joins your contacts"
    CHAT_COMMAND = "accept"
    NODE = "email/accept"

    async def apply(self, session: Session, address: str, chat: Any) -> str:
        from gateway.slidge_fixes import push_to_roster

        await session.account.accept_chat(chat)
        contact = await session.contacts.by_legacy_id(address)
        await push_to_roster(contact)
        return f"{address} is now one of your contacts ({contact.jid.bare})"


class Block(_Answer):
    NAME = "⛔ Block an email address"
    HELP = "Block an email address: its mail is no longer shown"
    CHAT_COMMAND = "block"
    NODE = "email/block"

    async def apply(self, session: Session, address: str, chat: Any) -> str:
        await session.account.block_chat(chat)
        return f"{address} is blocked"
