"""The Matrix plugin's errors, and the one place they become XMPP errors.

::

    MatrixError (gateway.errors.RemoteError)
     +-- HomeserverNotAllowed   the admin's policy forbids this homeserver (not-allowed)
     +-- HomeserverUnreachable  no connection: DNS, refused, TLS (remote-server-not-found)
     +-- HomeserverTimeout      the homeserver did not answer in time (remote-server-timeout)
     +-- LoginRefused           wrong password or token, deactivated account (not-authorized)
     +-- RateLimited            429 / M_LIMIT_EXCEEDED even after waiting (resource-constraint)
     +-- RequestFailed          any other error answer, with its errcode
     +-- NotSupported           something the gateway cannot do yet (feature-not-implemented)
     +-- Undecryptable          an encrypted event this device has no key for (never an XMPP error)

`client.py`, `sync.py` and `login.py` raise them; `contact.py`, `group.py` and
`gateway.py` let them through `as_xmpp_error`, so each message names the homeserver and
says what to do next. Its XMPP error's ``str()`` is its text: slidge's *register* command
(ad-hoc and chat) would otherwise show the tuple of its arguments (and without slidge
fix 51 it answers every registration error with ``internal-server-error`` and that text).
"""

from __future__ import annotations

from slixmpp.exceptions import XMPPError
from slixmpp.types import ErrorConditions

from gateway.errors import RemoteError

__all__ = [
    "HomeserverNotAllowed",
    "HomeserverTimeout",
    "HomeserverUnreachable",
    "LoginRefused",
    "MatrixError",
    "NotSupported",
    "RateLimited",
    "RequestFailed",
    "Undecryptable",
    "as_xmpp_error",
]


class MatrixError(RemoteError):
    """Something went wrong talking to a Matrix homeserver; the text says what."""


class HomeserverNotAllowed(MatrixError):
    """This gateway's configuration does not let users reach that homeserver."""


class HomeserverUnreachable(MatrixError):
    """The homeserver could not be reached at all."""


class HomeserverTimeout(MatrixError):
    """The homeserver did not answer in time."""


class LoginRefused(MatrixError):
    """The homeserver refused the credentials."""


class RateLimited(MatrixError):
    """The homeserver keeps saying "too many requests"."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RequestFailed(MatrixError):
    """The homeserver answered a request with an error."""

    def __init__(self, message: str, errcode: str | None = None, status: int | None = None):
        super().__init__(message)
        self.errcode = errcode
        self.status = status


class NotSupported(MatrixError):
    """The gateway does not support this (yet)."""


class Undecryptable(MatrixError):
    """An end-to-end encrypted event this device cannot decrypt; the text says why."""


class _Said(XMPPError):
    """An XMPP error whose ``str()`` is its text (see the module's docstring)."""

    def __str__(self) -> str:
        return str(self.text or self.condition)


_CONDITIONS: tuple[tuple[type[MatrixError], ErrorConditions], ...] = (
    (HomeserverNotAllowed, "not-allowed"),
    (HomeserverUnreachable, "remote-server-not-found"),
    (HomeserverTimeout, "remote-server-timeout"),
    (LoginRefused, "not-authorized"),
    (RateLimited, "resource-constraint"),
    (NotSupported, "feature-not-implemented"),
)
_BY_STATUS: dict[int, ErrorConditions] = {
    403: "forbidden",
    404: "item-not-found",
    413: "not-acceptable",
}


def as_xmpp_error(exc: MatrixError) -> XMPPError:
    """The XMPP error a user sees for ``exc``, with its text."""
    for kind, condition in _CONDITIONS:
        if isinstance(exc, kind):
            return _Said(condition, str(exc))
    if isinstance(exc, RequestFailed) and exc.status in _BY_STATUS:
        return _Said(_BY_STATUS[exc.status], str(exc))
    return _Said("service-unavailable", str(exc))
