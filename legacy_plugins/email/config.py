"""The ``[networks.email]`` section: the common network keys and the email network's own."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import Field

from gateway.config import NetworkConfig


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine (where a plain-text connection stays local)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Config(NetworkConfig):
    """Configuration of the email network (Delta Chat core, one account per user)."""

    allow_plaintext: bool = False
    """Let users choose ``plain`` (no TLS) for IMAP/SMTP servers that are not on loopback.
    Their password would cross the network in clear text: leave this off outside labs.
    Servers on 127.0.0.1/localhost may always be plain."""
    keep_mail_on_server: bool = True
    """Delta Chat deletes the mail it has read from a single-device account's server. On
    (``bcc_self = 1``), the account counts as multi-device: mail stays on the server and
    what the user sends is copied to their own mailbox, so another mail program still
    sees the conversation."""
    configure_timeout: Annotated[float, Field(gt=0, le=600)] = 90.0
    """Seconds a registration may spend logging in to IMAP and SMTP (autoconfig included)."""
    request_timeout: Annotated[float, Field(gt=0, le=600)] = 60.0
    """Seconds any other request to the Delta Chat core may take."""
