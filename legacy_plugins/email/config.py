"""The ``[networks.email]`` section: the common network keys and the email network's own.

``Config`` is what the plugin reads at run time (a frozen dataclass, no pydantic in the
network's process); :func:`_model` is its pydantic twin, built only to validate the file.
A unit test keeps the two in step (``tests/unit/test_config_settings.py``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Annotated

from gateway.runtime import NetworkSettings

if TYPE_CHECKING:
    from gateway.config import NetworkConfig


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine (where a plain-text connection stays local)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True, kw_only=True)
class Config(NetworkSettings):
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
    configure_timeout: float = 90.0
    """Seconds (at most 600) a registration may spend logging in to IMAP and SMTP
    (autoconfig included)."""
    request_timeout: float = 60.0
    """Seconds (at most 600) any other request to the Delta Chat core may take."""

    @classmethod
    def model(cls) -> type[NetworkConfig]:
        return _model()


@cache
def _model() -> type[NetworkConfig]:
    from pydantic import Field

    from gateway.config import NetworkConfig

    class EmailConfig(NetworkConfig):
        allow_plaintext: bool = False
        keep_mail_on_server: bool = True
        configure_timeout: Annotated[float, Field(gt=0, le=600)] = 90.0
        request_timeout: Annotated[float, Field(gt=0, le=600)] = 60.0

    return EmailConfig
