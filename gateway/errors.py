"""The small error tree of the core.

::

    PasserelleError
     +-- ConfigError          the admin's configuration is wrong (we say which key and how to fix)
     +-- LocalProtocolError   we were about to send something invalid (a bug or hostile input)
     +-- RemoteError          the other side (XMPP server, legacy network) refused or failed

Plugins raise these (or slixmpp's ``XMPPError``); one boundary turns them into XMPP errors.
"""


class PasserelleError(Exception):
    """Base of every error Passerelle raises on purpose."""


class ConfigError(PasserelleError):
    """The configuration file or environment is invalid; the message says how to fix it."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class LocalProtocolError(PasserelleError):
    """We were about to send something the protocol forbids."""


class RemoteError(PasserelleError):
    """A remote server refused or failed; the message names it and what it said."""
