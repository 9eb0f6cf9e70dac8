"""The registry of networks Passerelle knows, and how to find each one's plugin.

A network is a package with the same rooms as every other (``config.py``, ``translate.py``,
``client.py``, ``gateway.py``, ``session.py``, ``contact.py``…). Its ``config.py`` declares
``Config``, light frozen settings (a subclass of :class:`gateway.runtime.NetworkSettings`)
whose ``model()`` is the pydantic model that validates ``[networks.NAME]``; its
``gateway.py`` is the module slidge loads in the network's own process. Adding a network
is adding a folder and one line here.
"""

from __future__ import annotations

import importlib.util

NETWORKS: dict[str, str] = {
    "irc": "legacy_plugins.irc",
    "matrix": "legacy_plugins.matrix",
    "email": "legacy_plugins.email",
    "echo": "examples.echo",
}
"""Network name (the ``[networks.NAME]`` section) → the plugin package."""


class NetworkUnavailable(Exception):
    """The configuration names a network this installation cannot run."""


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def plugin_package(name: str) -> str:
    try:
        package = NETWORKS[name]
    except KeyError:
        known = ", ".join(sorted(NETWORKS))
        raise NetworkUnavailable(f"unknown network {name!r}; the networks are: {known}") from None
    if not (_has_module(f"{package}.config") and _has_module(f"{package}.gateway")):
        raise NetworkUnavailable(
            f"the {name!r} network is not implemented in this version of Passerelle yet "
            "(see the status table in README.md); remove the section or set enabled = false"
        )
    return package


def slidge_module(name: str) -> str:
    """The module slidge imports in the network's process."""
    return f"{plugin_package(name)}.gateway"
