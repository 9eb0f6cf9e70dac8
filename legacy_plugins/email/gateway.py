"""The email network's slidge gateway: the module slidge loads in the network's process.

Registration logs in to IMAP and SMTP through Delta Chat's core before anything is
stored: the form takes the address and password, and optionally the servers, ports and
security for providers autoconfig doesn't know. A wrong password or an unreachable
server answers the form with ``not-authorized`` and the core's reason, and the half-made
account directory is deleted. On success the password lives only in the user's Delta
Chat account (in the user's own directory, as any mail program keeps it); slidge stores
the address alone. Unregistering deletes the account and its directory.
"""

from __future__ import annotations

import asyncio
import shutil
from typing import Any, ClassVar

from slidge import BaseGateway
from slidge.command import FormField
from slidge.command.base import Option
from slixmpp import JID
from slixmpp.exceptions import XMPPError

from gateway.runtime import network_config

from . import commands, contact, group  # noqa: F401  (slidge finds the classes by subclassing)
from .client import EmailAccount
from .config import Config, is_loopback
from .errors import EmailError, as_xmpp_error
from .session import Session, account_dir
from .translate import SECURITIES, FormError, LoginParams, login_params

_REGISTRATION_LOCKS: dict[str, asyncio.Lock] = {}
"""One registration at a time per user: its account directory is not shared."""
SECURITY_OPTIONS: list[Option] = [{"label": s, "value": s} for s in SECURITIES]


class Gateway(BaseGateway[Session]):
    COMPONENT_NAME = "Email (Passerelle)"
    COMPONENT_TYPE = "smtp"
    COMPONENT_AVATAR = None  # never fetched from the internet
    GROUPS = True
    REGISTRATION_INSTRUCTIONS = (
        "Log in to your mail account: your email address and password. Leave the servers "
        "empty to find them automatically. Passerelle runs a Delta Chat account on this "
        "mailbox: Delta Chat users get end-to-end encrypted chats, everyone else ordinary "
        "email."
    )
    REGISTRATION_FIELDS: ClassVar[list[FormField]] = [
        FormField(var="address", label="Email address", required=True),
        FormField(var="password", label="Password", required=True, private=True),
        FormField(var="name", label="Your name, as your correspondents see it (optional)"),
        FormField(var="imap_host", label="IMAP server (optional)"),
        FormField(var="imap_port", label="IMAP port (optional)"),
        FormField(
            var="imap_security",
            label="IMAP security",
            type="list-single",
            value="automatic",
            options=SECURITY_OPTIONS,
        ),
        FormField(var="smtp_host", label="SMTP server (optional)"),
        FormField(var="smtp_port", label="SMTP port (optional)"),
        FormField(
            var="smtp_security",
            label="SMTP security",
            type="list-single",
            value="automatic",
            options=SECURITY_OPTIONS,
        ),
    ]
    SEARCH_FIELDS: ClassVar[list[FormField]] = [
        FormField(var="address", label="Email address", required=True)
    ]
    SEARCH_TITLE = "Write to an email address"
    WELCOME_MESSAGE = (
        "Welcome to email through Passerelle. Every address is a contact: alice@example.org "
        "is alice\\40example.org@<this gateway>. Delta Chat groups are rooms. Send 'help' "
        "for the commands: 'invite' gives your Delta Chat invite link, 'join <link>' "
        "accepts someone else's, 'accept'/'block' answer contact requests. Mail already in "
        "your inbox before you registered is not shown here: only what arrives from now on "
        "(your mail program still has it)."
    )
    ROSTER_GROUP = "Email"

    async def validate(
        self, user_jid: JID, registration_form: dict[str, str | None]
    ) -> dict[str, Any]:
        cfg = network_config(Config)
        try:
            login = login_params(
                registration_form, allow_plaintext=cfg.allow_plaintext, is_local=is_loopback
            )
        except FormError as e:
            raise XMPPError(e.condition, str(e)) from e
        session = self.get_session_from_jid(user_jid)
        async with _REGISTRATION_LOCKS.setdefault(user_jid.bare, asyncio.Lock()):
            if session is not None and session.opened:
                await self._reconfigure(session, login, cfg)
            else:
                await self._configure_new(user_jid, login, cfg)
        data: dict[str, Any] = {"address": login.address, "name": login.display_name or ""}
        # slidge stores the form itself when the user registers again: leave no password.
        registration_form.clear()
        registration_form.update(data)
        return data

    @staticmethod
    async def _configure_new(user_jid: JID, login: LoginParams, cfg: Config) -> None:
        directory = account_dir(user_jid.bare)
        fresh = not directory.exists()
        account = EmailAccount(directory, name=f"register.{user_jid.bare}")
        try:
            await account.open()
            new = not await account.is_configured()
            await account.configure(login, timeout=cfg.configure_timeout, new=new)
        except EmailError as e:
            await account.close()
            if fresh:
                shutil.rmtree(directory, ignore_errors=True)
            raise as_xmpp_error(e) from e
        except BaseException:
            await account.close()
            if fresh:
                shutil.rmtree(directory, ignore_errors=True)
            raise
        await account.close()

    @staticmethod
    async def _reconfigure(session: Session, login: LoginParams, cfg: Config) -> None:
        try:
            await session.account.configure(login, timeout=cfg.configure_timeout, new=False)
        except EmailError as e:
            raise as_xmpp_error(e) from e

    async def unregister(self, session: Session) -> None:
        await session.unregister()
