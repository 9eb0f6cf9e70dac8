"""The Matrix network's slidge gateway: the module slidge loads in the network's process.

Registration logs in (password) or checks an access token before anything is stored; the
stored data is the device (homeserver, user ID, device ID, access token) and the sync
position, never the password. A failed login answers the form with an error saying why
(``not-authorized``, ``remote-server-not-found``, ``remote-server-timeout``,
``not-allowed``, ``resource-constraint``), and nothing is stored.

A registered user who registers again (XEP-0077, with her password or a token) moves to
the new device: her session stops, the gateway's previous device is logged out (not a
device of another app whose token she gave: that would log the app out) and its
encryption store deleted, and the session logs in again on the new device. In a chat
(the *register* chat command asks the fields one by one) ``-`` leaves a field empty.
"""

from __future__ import annotations

import logging
import shutil
from typing import Any, ClassVar

from slidge import BaseGateway
from slidge.command import FormField
from slixmpp import JID

from gateway.runtime import network_config

from . import commands, contact, group  # noqa: F401  (slidge finds the classes by subclassing)
from .client import OWN_DEVICE, Credentials, MatrixClient

# Not imported as `Config`: slidge takes a `config` or `Config` attribute of this module for
# its own plugin configuration object and would rewrite it from the command line.
from .config import Config as _MatrixConfig
from .errors import LoginRefused, MatrixError, as_xmpp_error
from .inbox import Inbox
from .login import login
from .net import protect_logs
from .session import Session

# Slidge has configured logging before it imports this module.
protect_logs()
# nio's encryption logs a few lines per message at INFO: only at DEBUG here.
if not logging.getLogger().isEnabledFor(logging.DEBUG):
    logging.getLogger("nio").setLevel(logging.WARNING)

log = logging.getLogger(__name__)

EMPTY_ANSWER = "-"
"""What leaves a field empty when the chat command asks for it (a chat message cannot
be empty, and clients do not send one that is only a space)."""


class Gateway(BaseGateway[Session]):
    COMPONENT_NAME = "Matrix (Passerelle)"
    COMPONENT_TYPE = "matrix"
    COMPONENT_AVATAR = None  # never fetched from the internet
    GROUPS = True
    REGISTRATION_INSTRUCTIONS = (
        "Log in to your Matrix account: your Matrix ID (@alice:example.org) and password, "
        "or an access token instead of the password. Leave the homeserver empty to find it "
        "from your Matrix ID. Your password is used once and not stored; Passerelle keeps "
        "a device (session) of your account, which unregistering logs out. "
        f"(Asked in a chat? Answer '{EMPTY_ANSWER}' to leave a field empty.)"
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
        # Only the form's fields: registering again, slidge passes the whole submitted
        # form, FORM_TYPE (a list) included.
        form = {f.var: _answer(registration_form.get(f.var)) for f in self.REGISTRATION_FIELDS}
        password = registration_form.get("password")
        if not isinstance(password, str) or not _answer(password):
            password = None  # empty or '-'; a password is otherwise taken as typed
        try:
            creds, position = await login(
                network_config(_MatrixConfig),
                form.get("homeserver") or None,
                form.get("user_id") or None,
                password=password,
                access_token=form.get("token") or None,
            )
        except MatrixError as e:
            raise as_xmpp_error(e) from e
        data: dict[str, Any] = {
            **creds.to_stored(),
            "sync_token": position,
            OWN_DEVICE: password is not None,
        }
        session = self.get_session_from_jid(user_jid)  # None unless she is registered
        if session is not None:
            stored = session.user.legacy_module_data
            if all(stored.get(k) == data[k] for k in ("homeserver", "user_id")):
                # The same account: the new device goes on from where her session was
                # (a sync position is the account's), so nothing sent meanwhile is lost.
                del data["sync_token"]
            await self._move_to_device(session, data)
            # The new session stores its own position from now on: not this one over it.
            data = {k: v for k, v in data.items() if k != "sync_token"}
        # slidge stores the form itself when the user registers again: leave no password.
        registration_form.clear()
        registration_form.update(data)
        return data

    async def _move_to_device(self, session: Session, data: dict[str, Any]) -> None:
        """She registered again: her session stops, the gateway's previous device is
        logged out (unless it is the new one) and the session starts on the new one."""
        old = dict(session.user.legacy_module_data)
        await session.logout()  # stops syncing; the position so far is stored
        session.logged = False  # slidge takes her contacts and rooms offline
        if any(old.get(k) != data[k] for k in ("homeserver", "user_id", "device_id")):
            if old.get(OWN_DEVICE) is not False:  # unknown (older registrations): as before
                await _log_out(old, session.user_jid)
            # The encryption keys were the previous device's: the new one makes its own.
            shutil.rmtree(session._e2ee_dir(), ignore_errors=True)
        session.legacy_module_data_update(data)
        session.create_task(self.login_wrap(session), name="matrix login on a new device")

    async def unregister(self, session: Session) -> None:
        await session.unregister()


def _answer(value: object) -> str:
    """A form field's value, stripped; ``-`` (a chat answer for "none") is empty."""
    text = value.strip() if isinstance(value, str) else ""
    return "" if text == EMPTY_ANSWER else text


async def _log_out(stored: dict[str, Any], user: JID) -> None:
    """End the Matrix session of the device in `stored` (a previous registration)."""
    try:
        creds = Credentials.from_stored(stored)
    except LoginRefused:
        return  # nothing usable was stored: nothing to log out
    try:
        async with MatrixClient(creds, network_config(_MatrixConfig)) as matrix:
            await matrix.logout()
    except MatrixError as e:
        log.warning("Could not log the previous Matrix device of %s out: %s", user, e)
    else:
        log.info("Logged the previous Matrix device of %s out", user)
