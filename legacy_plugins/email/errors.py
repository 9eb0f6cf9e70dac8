"""The email plugin's errors, and the one place they become XMPP errors.

::

    EmailError (gateway.errors.RemoteError)
     +-- RpcError           the Delta Chat core refused a request (its text says why)
     +-- RpcServerGone      deltachat-rpc-server exited or is missing
     +-- LoginFailed        the mail server refused the address or password (not-authorized)
     +-- AddressError       not an email address / not a contact JID (bad-request)

`rpc.py` and `client.py` raise them; the slidge classes let them through
:func:`as_xmpp_error`, so the user reads the core's reason, not a traceback.
"""

from __future__ import annotations

from slixmpp.exceptions import XMPPError

from gateway.errors import RemoteError


class EmailError(RemoteError):
    """Something went wrong with the user's mail account; the text says what."""


class LoginFailed(EmailError):
    """Configuring the account failed: wrong password, unknown server, no connection."""


class AddressError(EmailError, ValueError):
    """Not a usable email address, or a JID that names none."""


def as_xmpp_error(exc: EmailError) -> XMPPError:
    """The XMPP error the user sees for ``exc``."""
    from .rpc import RpcServerGone

    if isinstance(exc, LoginFailed):
        return XMPPError("not-authorized", str(exc))
    if isinstance(exc, AddressError):
        return XMPPError("bad-request", str(exc))
    if isinstance(exc, RpcServerGone):
        return XMPPError("service-unavailable", f"{exc}; the gateway restarts it at next login")
    return XMPPError("undefined-condition", str(exc))
