"""Contacts on the echo network: the XMPP user talks to them as puppets of the component."""

from typing import TYPE_CHECKING

from slidge.contact import LegacyContact
from slidge.util.types import XMPPMessage
from slixmpp.exceptions import XMPPError

from .client import EchoNetworkError
from .translate import ECHO_CONTACT, EchoMsgId

if TYPE_CHECKING:
    from .session import Session


class Contact(LegacyContact):
    session: "Session"

    async def update_info(self) -> None:
        if self.legacy_id != ECHO_CONTACT:
            raise XMPPError("item-not-found", f"There is nobody called {self.legacy_id!r} here.")
        self.name = "Echo"
        self.is_friend = True

    async def on_message(self, message: XMPPMessage) -> str:
        if message.attachments:
            raise XMPPError("feature-not-implemented", "The echo network carries text only.")
        corrects = EchoMsgId(message.replace) if message.replace else None
        try:
            return self.session.client.send(message.body or "", corrects)
        except EchoNetworkError as e:
            raise XMPPError("not-acceptable", f"The echo network refused the message: {e}") from e

    async def on_sticker(self, sticker: object) -> str:
        raise NotImplementedError
