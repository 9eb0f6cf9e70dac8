"""The Matrix gateway's commands, as ad-hoc commands (XEP-0050) and chat commands.

* ``device``: the user's Matrix device that Passerelle runs — its ID and its ed25519 key
  (the "session key" Matrix clients show), to compare when verifying it from another
  client — and whether end-to-end encryption works. ``device @bob:example.org`` lists
  bob's devices and their keys, as Passerelle knows them, to compare with bob's.
* ``verify``: interactive verification with emoji (:mod:`.verification`):
  ``verify @bob:example.org DEVICEID`` starts one, ``verify yes`` / ``verify no`` answers
  whether the emoji match, ``verify list`` lists those in progress. Without arguments
  (the ad-hoc command), a form asks the same.
* ``recovery`` (the ad-hoc command *Matrix recovery key*): a form asks for the user's
  recovery key (Element's "Security Key", or its passphrase), in a hidden field; the
  keys of their server-side key backup are restored (:mod:`.backup`) and the gateway's
  device is signed with their self-signing key (:mod:`.crosssign`). The key is not
  kept; typed after ``recovery`` in a chat message it is refused (a chat line stays in
  the user's history and archive).
* ``logout``: the session stops until ``re-login`` (slidge's command, ad-hoc *Re-login*):
  the device stays logged in and the sync position stored, so what arrives meanwhile is
  delivered at the re-login. Unregistering is what logs the device out.
"""

from __future__ import annotations

from slidge.command import Command, CommandAccess, FormField
from slidge.command.base import FormSession, FormValues
from slixmpp import JID
from slixmpp.exceptions import XMPPError

from .crypto import fingerprint
from .errors import MatrixError, as_xmpp_error
from .ids import UserId, is_user_id
from .secrets import SecretStorageError
from .session import Session
from .verification import VerificationError

__all__ = ["Device", "Logout", "Recovery", "Verify"]


class Device(Command[Session]):
    NAME = "🔑 Matrix device and encryption keys"
    HELP = (
        "Your Matrix device on this gateway: its ID and key, to verify it from another "
        "Matrix client. 'device @bob:example.org' lists bob's devices and their keys."
    )
    CHAT_COMMAND = "device"
    NODE = "matrix/device"
    ACCESS = CommandAccess.USER_LOGGED

    async def run(self, session: Session | None, ifrom: JID, *args: str) -> str:
        if not isinstance(session, Session) or not hasattr(session, "matrix"):
            raise XMPPError("service-unavailable", "Your Matrix account is not connected")
        if args:
            return await self._devices_of(session, args[0])
        device = session.matrix.creds.device_id
        if session.e2ee is None:
            return (
                f"Your Matrix device here is {device}. End-to-end encryption does not work "
                f"on it: {session.e2ee_problem}."
            )
        return (
            f"Your Matrix device here is {device}, with the key\n"
            f"{fingerprint(session.e2ee.ed25519)}\n"
            "To verify it, start a verification with emoji from your other Matrix client "
            f"(Element: Settings → Sessions → {device} → Verify), or send "
            "'verify @you:example.org DEVICEID' here; or compare this key with what that "
            "client shows. Room keys still go to every device of the people in your "
            "encrypted chats, verified or not."
        )

    @staticmethod
    async def _devices_of(session: Session, user: str) -> str:
        if not is_user_id(user):
            raise XMPPError("bad-request", f"{user!r} is not a Matrix ID (@bob:example.org)")
        if session.e2ee is None:
            raise XMPPError("feature-not-implemented", session.e2ee_problem)
        try:
            devices = await session.e2ee.devices(UserId(user))
        except MatrixError as e:
            raise as_xmpp_error(e) from e
        if not devices:
            return f"{user} has no device with encryption keys."
        lines = [f"Devices of {user}:"]
        for d in devices:
            name = f" ({d.name})" if d.name else ""
            lines.append(f"{d.device_id}{name}, {d.trust}: {fingerprint(d.ed25519)}")
        return "\n".join(lines)


class Logout(Command[Session]):
    NAME = "🔌 Log out of Matrix until re-login"
    HELP = (
        "Stop your Matrix session here until you send 're-login': your device stays, and "
        "what arrives meanwhile is delivered then. ('unregister' logs the device out.)"
    )
    CHAT_COMMAND = "logout"
    NODE = "matrix/logout"
    ACCESS = CommandAccess.USER_LOGGED

    async def run(self, session: Session | None, ifrom: JID, *args: str) -> str:
        if not isinstance(session, Session):
            raise XMPPError("service-unavailable", "Your Matrix account is not connected")
        await session.logout()  # stops syncing; the position so far is stored
        session.logged = False  # slidge takes her contacts and rooms offline
        session.send_gateway_status("Logged out: send 're-login' to connect again", show="xa")
        return (
            "Logged out of Matrix. Your device stays logged in; send 're-login' (or use the "
            "ad-hoc command Re-login) to connect again: what arrives meanwhile comes then."
        )


class Verify(Command[Session]):
    NAME = "🔐 Verify a Matrix device"
    HELP = (
        "Verify a Matrix device with emoji: 'verify @bob:example.org DEVICEID' (bob's or "
        "your own other device; 'device @bob:example.org' lists them), then 'verify yes' "
        "or 'verify no' when the emoji are shown. Another device may also start it."
    )
    CHAT_COMMAND = "verify"
    NODE = "matrix/verify"
    ACCESS = CommandAccess.USER_LOGGED

    async def run(
        self, session: Session | None, ifrom: JID, *args: str
    ) -> str | FormSession[Session]:
        if not isinstance(session, Session) or not hasattr(session, "matrix"):
            raise XMPPError("service-unavailable", "Your Matrix account is not connected")
        if session.verifications is None:
            raise XMPPError(
                "feature-not-implemented",
                f"Devices cannot be verified here: {session.e2ee_problem}",
            )
        if args:
            return await _verify(session, args)
        return FormSession(
            title="Verify a Matrix device",
            instructions=session.verifications.pending(),
            fields=[
                FormField(
                    "action",
                    "What to do",
                    type="list-single",
                    value="start",
                    options=[
                        {"label": "Start verifying the device below", "value": "start"},
                        {"label": "The emoji match", "value": "yes"},
                        {"label": "The emoji do not match / cancel", "value": "no"},
                    ],
                ),
                FormField("user", "Matrix ID (to start)"),
                FormField("device", "Device ID (to start; to answer when several wait)"),
            ],
            handler=self._submitted,
        )

    @staticmethod
    async def _submitted(values: FormValues, session: Session | None, _ifrom: JID) -> str:
        assert isinstance(session, Session)
        action = str(values.get("action") or "start")
        user, device = str(values.get("user") or ""), str(values.get("device") or "")
        args = (user, device) if action == "start" else (action, device)
        return await _verify(session, args)


async def _verify(session: Session, args: tuple[str, ...]) -> str:
    if session.verifications is None:
        raise XMPPError("feature-not-implemented", session.e2ee_problem)
    try:
        return await session.verifications.command(args)
    except VerificationError as e:
        raise XMPPError("bad-request", str(e)) from e
    except MatrixError as e:
        raise as_xmpp_error(e) from e


class Recovery(Command[Session]):
    NAME = "🗝️ Matrix recovery key"
    HELP = (
        "Give your Matrix recovery key (Element's Security Key) in this command's form to "
        "read encrypted messages from your server-side key backup, and to back up what you "
        "send. The key is not kept. Never type it into a chat message."
    )
    CHAT_COMMAND = "recovery"
    NODE = "matrix/recovery"
    ACCESS = CommandAccess.USER_LOGGED

    async def run(self, session: Session | None, ifrom: JID, *args: str) -> FormSession[Session]:
        if not isinstance(session, Session) or not hasattr(session, "matrix"):
            raise XMPPError("service-unavailable", "Your Matrix account is not connected")
        if args:
            raise XMPPError(
                "not-acceptable",
                "Not taken: a recovery key typed into a chat message stays in your chat "
                "history and your server's archive. Use the ad-hoc command 'Matrix recovery "
                "key' (its field is hidden). If that was your real key, consider it exposed "
                "and make a new one in Element (Settings → Encryption → Reset recovery key).",
            )
        if session.e2ee is None:
            raise XMPPError(
                "feature-not-implemented",
                f"End-to-end encryption does not work here: {session.e2ee_problem}",
            )
        return FormSession(
            title="Matrix recovery key",
            instructions=(
                "Your recovery key (Element: the Security Key you saved when you set up "
                "recovery, 48 characters in groups of four), or its passphrase. Passerelle "
                "uses it once, to restore the keys of your key backup and to sign its "
                "device with your cross-signing key, and does not keep it. If this reached "
                "you as a chat message, answer 'abort' and use the ad-hoc command instead: "
                "a key typed into a chat stays in your history."
            ),
            fields=[
                FormField(
                    "recovery_key", "Recovery key or passphrase", type="text-private", required=True
                )
            ],
            handler=self._submitted,
        )

    @staticmethod
    async def _submitted(values: FormValues, session: Session | None, _ifrom: JID) -> str:
        assert isinstance(session, Session)
        try:
            return await session.use_recovery_key(str(values.get("recovery_key") or ""))
        except SecretStorageError as e:
            raise XMPPError("not-acceptable", str(e)) from e
        except MatrixError as e:
            raise as_xmpp_error(e) from e
