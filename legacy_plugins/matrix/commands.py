"""The Matrix gateway's commands, as ad-hoc commands (XEP-0050) and chat commands.

* ``device``: the user's Matrix device that Passerelle runs — its ID and its ed25519 key
  (the "session key" Matrix clients show), to compare when verifying it from another
  client — and whether end-to-end encryption works. ``device @bob:example.org`` lists
  bob's devices and their keys, as Passerelle knows them, to compare with bob's.
"""

from __future__ import annotations

from slidge.command import Command, CommandAccess
from slixmpp import JID
from slixmpp.exceptions import XMPPError

from .crypto import fingerprint
from .errors import MatrixError, as_xmpp_error
from .ids import UserId, is_user_id
from .session import Session

__all__ = ["Device"]


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
            "To verify it, compare this key with what your other Matrix client shows for "
            f"the session {device} (Element: Settings → Sessions). Passerelle itself "
            "verifies nobody: it sends room keys to every device of the people in your "
            "encrypted chats and keeps the first key it sees for each device."
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
