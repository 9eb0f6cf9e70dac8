"""Errors raised by the local server wrappers.

LocalServerError
├── ServerStartError    the server did not come up (bad config, early exit, no port)
└── ServerCommandError  a helper command failed (e.g. prosodyctl register)
"""


class LocalServerError(RuntimeError):
    """Something went wrong with a server started by `gateway.localservers`."""


class ServerStartError(LocalServerError):
    """A local server could not be started; the message ends with its log."""


class ServerCommandError(LocalServerError):
    """A command run against a local server (such as prosodyctl) failed."""
