"""Pure mapping between the echo network's events and what the XMPP side shows.

Every plugin keeps this module free of I/O: no ``await``, no socket, no clock.
"""

from dataclasses import dataclass
from typing import NewType

EchoMsgId = NewType("EchoMsgId", str)
"""A message id on the echo network."""

ECHO_CONTACT = "echo"
"""The legacy id of the one contact the network has."""

MAX_LENGTH = 10_000
"""The echo network refuses longer messages, as real networks do."""


@dataclass(frozen=True, slots=True)
class EchoEvent:
    """A message the echo contact sends: new (``corrects`` is None) or a correction."""

    msg_id: EchoMsgId
    text: str
    corrects: EchoMsgId | None = None


def reply_id(user_msg_id: EchoMsgId) -> EchoMsgId:
    """The id of the echo's answer to a user message: derived, so corrections need no table."""
    return EchoMsgId(f"re-{user_msg_id}")


def answer(user_msg_id: EchoMsgId, text: str, corrects: EchoMsgId | None) -> EchoEvent:
    """What the echo contact says back to ``text`` (which corrects ``corrects`` if set)."""
    if corrects is None:
        return EchoEvent(reply_id(user_msg_id), text)
    return EchoEvent(reply_id(user_msg_id), text, corrects=reply_id(corrects))
