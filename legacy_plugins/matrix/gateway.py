"""The Matrix network's slidge gateway: the module slidge loads in the network's process.

Registration logs in (password) or checks an access token before anything is stored; the
stored data is the device (homeserver, user ID, device ID, access token) and the sync
position, never the password. A failed login answers the form with an error saying why
(``not-authorized``, ``remote-server-not-found``, ``remote-server-timeout``,
``not-allowed``, ``resource-constraint``), and nothing is stored.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from slidge import BaseGateway
from slidge.command import FormField
from slixmpp import JID

from gateway.runtime import network_config

from . import commands, contact, group  # noqa: F401  (slidge finds the classes by subclassing)
from .client import login

# Not imported as `Config`: slidge takes a `config` or `Config` attribute of this module for
# its own plugin configuration object and would rewrite it from the command line.
from .config import Config as _MatrixConfig
from .errors import MatrixError, as_xmpp_error
from .inbox import Inbox
from .net import protect_logs
from .session import Session

# Slidge has configured logging before it imports this module.
protect_logs()
# nio's encryption logs a few lines per message at INFO: only at DEBUG here.
if not logging.getLogger().isEnabledFor(logging.DEBUG):
    logging.getLogger("nio").setLevel(logging.WARNING)


class Gateway(BaseGateway[Session]):
    COMPONENT_NAME = "Matrix (Passerelle)"
    COMPONENT_TYPE = "matrix"
    COMPONENT_AVATAR = None  # never fetched from the internet
    GROUPS = True
    REGISTRATION_INSTRUCTIONS = (
        "Log in to your Matrix account: your Matrix ID (@alice:example.org) and password, "
        "or an access token instead of the password. Leave the homeserver empty to find it "
        "from your Matrix ID. Your password is used once and not stored; Passerelle keeps "
        "a device (session) of your account, which unregistering logs out."
    )
    REGISTRATION_FIELDS: ClassVar[list[FormField]] = [
        FormField(var="user_id", label="Matrix ID (@alice:example.org)"),
        FormField(var="password", label="Password", private=True),
        FormField(var="homeserver", label="Homeserver URL (optional)"),
        FormField(var="token", label="Access token (instead of the password)", private=True),
    ]
    WELCOME_MESSAGE = (
        "Welcome to Matrix through Passerelle. Your direct chats are in your contact list "
        "(@alice:example.org is alice%example.org@<this gateway>), your rooms in your "
        "bookmarks. Encrypted chats work: send 'device' to see this device's key."
    )
    ROSTER_GROUP = "Matrix"

    def __init__(self) -> None:
        super().__init__()
        # A user's burst waits as text, not as a task per message (see .inbox).
        self.inbox = Inbox(self)
        self.inbox.install()

    async def validate(
        self, user_jid: JID, registration_form: dict[str, str | None]
    ) -> dict[str, Any]:
        form = {k: (v or "").strip() for k, v in registration_form.items()}
        try:
            creds, position = await login(
                network_config(_MatrixConfig),
                form.get("homeserver") or None,
                form.get("user_id") or None,
                password=registration_form.get("password") or None,
                access_token=form.get("token") or None,
            )
        except MatrixError as e:
            raise as_xmpp_error(e) from e
        data: dict[str, Any] = {**creds.to_stored(), "sync_token": position}
        # slidge stores the form itself when the user registers again: leave no password.
        registration_form.clear()
        registration_form.update(data)
        return data

    async def unregister(self, session: Session) -> None:
        await session.unregister()
