"""A Matrix error as an XMPP error reads as its sentence (`errors.as_xmpp_error`).

slidge's *register* command (ad-hoc and chat) answers any registration error with
``internal-server-error`` and ``str()`` of the error: for a plain ``XMPPError`` that is
the tuple of its arguments, ``('not-authorized', 'login to …')``."""

from __future__ import annotations

from slixmpp.exceptions import XMPPError

from legacy_plugins.matrix.errors import LoginRefused, RateLimited, RequestFailed, as_xmpp_error


def test_the_xmpp_error_reads_as_its_text() -> None:
    said = "login to https://hs as @a:hs: Invalid username or password"
    error = as_xmpp_error(LoginRefused(said))
    assert (error.condition, error.text, str(error)) == ("not-authorized", said, said)
    # What slidge's register command makes of it keeps the sentence.
    assert XMPPError("internal-server-error", str(error)).text == said
    limited = as_xmpp_error(RateLimited("login: slow down (rate limited; try again in 9 s)", 9))
    assert str(limited).endswith("try again in 9 s)")
    assert str(as_xmpp_error(RequestFailed("", None, 500))) == "service-unavailable"
    # A plain XMPPError is what needed it.
    assert str(XMPPError("not-authorized", said)) != said
