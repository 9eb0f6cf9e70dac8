"""What slidge 0.4.2 keeps for every occupant and contact it ever built, made to go away.

These are slidge fixes 20-29 (listed with the others in :mod:`gateway.slidge_fixes`, which
installs them). ``tests/unit/test_slidge_joins.py`` has, for each, a *detector* test that
fails when upstream changes the code under it, and tests of the fix. ``bench/irc.py``
measured each (``bench/README.md``). The join paths of the IRC network that slidge makes
quadratic are overridden in the plugin itself (``legacy_plugins/irc/occupants.py``,
``contact.py``), with their detectors in ``tests/unit/test_irc_joins.py``.

20. slidge gives every occupant, contact and room object a logger named after it
    (``logging.getLogger(f"{user}:{occupant JID}")``, ``…:contact:…``, ``…:muc:…``).
    The logging module keeps every logger it ever made for the life of the process, with
    a placeholder for every dotted prefix of its name (a JID has several), so every
    occupant each user ever saw stays in memory: ~0.6 KiB each, 8 MiB for 50 users in
    5 channels of 50. :func:`per_object_loggers` gives those three slidge modules a
    ``logging`` whose ``getLogger`` answers such a name with an adapter on the module's
    own logger that puts the name in front of each line: the same lines, at the same
    levels, and nothing kept once the object is gone. Other names are looked up as usual.
21. slixmpp's roster keeps the last presence the process sent from each bare JID to each
    full JID (an out filter, ``Roster._save_last_status``), to send it again on a probe
    or a new subscription: for a slidge component a roster node per room and contact
    with an item and a whole stanza per client, built or replaced for every presence an
    occupant or a contact sends (2 % of the CPU of 50 users joining 5 channels). slidge
    answers probes and subscriptions itself (it removes slixmpp's handlers); the only
    reader left is XEP-0115's caps update, for the component's own JID.
    :func:`own_last_status_only` keeps the filter for presences from the component's
    own JID (or from no JID) and lets the others through untouched.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from slixmpp.roster.multi import Roster as MultiRoster

PER_OBJECT_LOGGERS = ("slidge.group.participant", "slidge.contact.contact", "slidge.group.room")
"""The slidge modules that name a logger after each object (fix 20)."""


class ObjectLogger(logging.LoggerAdapter[logging.Logger]):
    """Fix 20: a per-object "logger": its name in front of each line, nothing kept."""

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            assert self.extra is not None
            name = str(self.extra["object"])
            if args:  # then the line is a format string: the "%" of a room's JID too
                name = name.replace("%", "%%")
            line = f"{name}: {msg}"  # one line as slidge's own logger wrote it
            self.logger.log(level, line, *args, **kwargs)


class PerObjectLogging:
    """Fix 20: what a slidge module sees as ``logging``: the real module, except that
    ``getLogger`` of a per-object name (one with a ``:``, which module names never
    have) gives an `ObjectLogger` on the module's own logger."""

    def __init__(self, module: str) -> None:
        self._module = module

    def __getattr__(self, name: str) -> Any:
        return getattr(logging, name)

    def getLogger(self, name: str | None = None) -> logging.Logger | ObjectLogger:
        if name is None or ":" not in name:
            return logging.getLogger(name)
        return ObjectLogger(logging.getLogger(self._module), {"object": name})


def per_object_loggers() -> None:
    """Fix 20: install `PerObjectLogging` in the slidge modules that need it (idempotent)."""
    for name in PER_OBJECT_LOGGERS:
        module: Any = importlib.import_module(name)
        if not isinstance(module.logging, PerObjectLogging):
            module.logging = PerObjectLogging(name)


_SLIXMPP: dict[str, Any] = {}
"""slixmpp's filter and its presence class, kept by `own_last_status_only` (fix 21)."""


def _save_own_last_status(self: MultiRoster, stanza: Any) -> Any:
    """Fix 21: slixmpp's roster filter, for presences from the component's own JID only."""
    if isinstance(stanza, _SLIXMPP["presence"]):
        sender = stanza.xml.get("from")  # as written: no JID parsed for each presence
        if sender and sender.partition("/")[0] != self.xmpp.boundjid.bare:
            return stanza
    return _SLIXMPP["filter"](self, stanza)


def own_last_status_only() -> None:
    """Fix 21: make slixmpp's roster record only the component's own presences (for
    rosters made after this call; idempotent)."""
    from slixmpp import Presence
    from slixmpp.roster.multi import Roster

    if Roster._save_last_status is not _save_own_last_status:
        _SLIXMPP.update(filter=Roster._save_last_status, presence=Presence)
        Roster._save_last_status = _save_own_last_status  # type: ignore[method-assign]


def apply() -> None:
    """Install fixes 20-29; :func:`gateway.slidge_fixes.apply` calls this."""
    per_object_loggers()
    own_last_status_only()
