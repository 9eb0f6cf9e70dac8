"""The echo network's slidge gateway: the module slidge loads in the network's process."""

from typing import ClassVar

from slidge import BaseGateway
from slidge.command import FormField
from slixmpp import JID
from slixmpp.exceptions import XMPPError

from . import contact  # noqa: F401  (slidge finds the classes by subclassing)
from .session import Session


class Gateway(BaseGateway[Session]):
    COMPONENT_NAME = "Echo (Passerelle demo network)"
    COMPONENT_TYPE = "echo"
    COMPONENT_AVATAR = None  # never fetched from the internet
    REGISTRATION_INSTRUCTIONS = "Choose the nickname the echo network will know you by."
    REGISTRATION_FIELDS: ClassVar[list[FormField]] = [
        FormField(var="nickname", label="Nickname", required=True)
    ]
    WELCOME_MESSAGE = (
        "Welcome to the echo network. Your contact 'echo' repeats what you say; "
        "correct a message and it corrects its answer."
    )
    ROSTER_GROUP = "Echo"

    async def validate(self, user_jid: JID, registration_form: dict[str, str | None]) -> None:
        nickname = (registration_form.get("nickname") or "").strip()
        if not nickname.isprintable() or len(nickname) > 64:
            raise XMPPError("not-acceptable", "The nickname must be 1 to 64 printable characters.")
