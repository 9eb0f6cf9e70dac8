"""The IRC network's slidge gateway: the module slidge loads in the network's process.

slidge 0.4.2 answers a MUC nick change with "Slidge does not let you change your
nickname in groups". IRC has nick changes, so this gateway puts a small handler in front
of slidge's presence handler: a nick change from a joined client becomes an IRC NICK, and
the server's answer renames the user in every room (status 303), or explains the refusal.
Every other presence goes on to slidge unchanged (the hook is slidge fix 50, in
gateway.slidge_fixes).

With `auto_register = true`, a join presence from a JID the gateway allows but that is
not registered registers it first (the nick it asks for becomes its IRC nick), then
goes on to slidge's join handler — Biboumi's behaviour. slidge 0.4.2 has no hook for
this (an unregistered JID gets `registration-required`), so the gateway wraps slidge's
`groupchat_join` handler the same way.
"""

import asyncio
import logging
from typing import Any, ClassVar

from slidge import BaseGateway
from slidge.command import FormField
from slidge.core import config as slidge_config
from slidge.db import GatewayUser
from slixmpp import JID, Presence
from slixmpp.exceptions import XMPPError

from gateway.runtime import network_config
from gateway.slidge_fixes import SlidgeHandler, handle_before_slidge

from . import contact, group  # noqa: F401  (slidge finds the classes by subclassing)
from .config import Config
from .mentions import STASH
from .session import Session
from .translate import irc_username, nick_problem

log = logging.getLogger(__name__)


class Gateway(BaseGateway[Session]):
    COMPONENT_NAME = "IRC (Passerelle)"
    COMPONENT_TYPE = "irc"
    COMPONENT_AVATAR = None  # never fetched from the internet
    GROUPS = True
    REGISTRATION_INSTRUCTIONS = (
        "Choose your IRC nick. Then join channels as #channel%server@ this gateway."
    )
    REGISTRATION_FIELDS: ClassVar[list[FormField]] = [
        FormField(var="nick", label="IRC nick", required=True),
        FormField(var="realname", label="Real name (optional)", required=False),
    ]
    WELCOME_MESSAGE = (
        "Welcome to IRC through Passerelle. Join a channel as a group chat: "
        "#channel%server@ this gateway; talk to someone privately at nick%server@…; "
        "the server itself is server@… (its messages, and raw IRC commands you send it)."
    )
    ROSTER_GROUP = "IRC"

    def __init__(self) -> None:
        super().__init__()
        self._registering = asyncio.Lock()
        # Synchronous, so it runs before slidge's (scheduled) handler of the same stanza.
        self.add_event_handler("groupchat_message", STASH.remember)
        installed = handle_before_slidge(
            self,
            {"presence": self._presence_before_slidge, "groupchat_join": self._join_before_slidge},
        )
        if not installed:  # a slidge without them: leave presences alone
            log.warning("MUC nick changes and auto_register need slidge 0.4's dispatcher")

    async def _presence_before_slidge(self, presence: Presence, slidge: SlidgeHandler) -> None:
        if not await self._nick_change(presence):
            await slidge(presence)

    async def _join_before_slidge(self, presence: Presence, slidge: SlidgeHandler) -> None:
        try:
            await self._auto_register(presence)
        except Exception:  # slidge exits on an unhandled error; the join then
            log.exception("auto_register failed for %s", presence.get_from())  # fails
        await slidge(presence)

    async def _auto_register(self, presence: Presence) -> None:
        """Register an allowed, unregistered JID that joins a room (`auto_register`)."""
        jid = presence.get_from()
        if not network_config(Config).auto_register or not self.jid_validator.match(jid.bare):
            return
        async with self._registering:  # a client joins its bookmarked rooms all at once
            if self.get_session_from_jid(jid) is not None:
                return
            nick = presence.get_to().resource
            if nick_problem(nick) is not None:
                nick = irc_username(jid.user)
                nick = nick if nick_problem(nick) is None else f"xmpp{nick}"
            with self.store.session() as orm:
                orm.add(GatewayUser(jid=jid.bare, legacy_module_data={"nick": nick}))
                orm.commit()
            log.info("Registered %s as %r: it joined a room (auto_register)", jid.bare, nick)
            session = self.get_session_from_jid(jid)
            assert session is not None
            for admin in slidge_config.ADMINS:
                self.send_message(
                    mto=admin,
                    mbody=f"{jid.bare} has registered (auto_register, by joining a room)",
                    mtype="chat",
                    mfrom=self.boundjid.bare,
                )
            session.send_gateway_message(self.WELCOME_MESSAGE)
            await self.login_wrap(session)

    async def _nick_change(self, presence: Presence) -> bool:
        """Handle `presence` if it is a MUC nick change by a joined client."""
        to, sender = presence.get_to(), presence.get_from()
        if "muc_join" in presence or presence["type"] not in ("available", *_SHOWS):
            return False
        session: Any = self.get_session_from_jid(sender)
        if session is None or not to.resource or to.bare == self.boundjid.bare:
            return False
        muc = session.bookmarks.by_jid_only_if_exists(JID(to.bare))
        if muc is None or sender.resource not in muc.get_user_resources():
            return False
        if to.resource == muc.user_nick:
            return False
        problem = nick_problem(to.resource)
        try:
            if problem is not None:
                raise XMPPError("not-acceptable", f"Invalid IRC nick {to.resource!r}: {problem}.")
            client = await session.client_for(muc.address.server)
            session.send(client, "NICK", to.resource)
        except XMPPError as e:
            await session.tell_about(muc.address.server, f"Cannot change nick: {e.text}")
        return True

    async def validate(self, user_jid: JID, registration_form: dict[str, str | None]) -> None:
        nick = (registration_form.get("nick") or "").strip()
        problem = nick_problem(nick)
        if problem is not None:
            raise XMPPError("not-acceptable", f"Invalid IRC nick {nick!r}: {problem}.")
        realname = (registration_form.get("realname") or "").strip()
        if len(realname) > 100 or not realname.isprintable():
            raise XMPPError(
                "not-acceptable", "The real name must be up to 100 printable characters."
            )
        registration_form["nick"] = nick
        registration_form["realname"] = realname or None


_SHOWS = ("away", "chat", "dnd", "xa")
