"""Slidge speed fixes for stanzas as slixmpp handles them: a plugin name looked up
without building the stanza's values, a stanza path matched once, outgoing filters run
without tasks for what is not a presence, XML escaping with ``str.replace``. Part of
:mod:`gateway.slidge_speed`, which installs them and says what they have in common.

11. slixmpp's ``ElementBase.__contains__`` (``"replace" in msg``) builds ``msg.values``, a
    dictionary of every interface of the stanza and, recursively, of every plugin it
    holds, to look one name up in it. slidge asks a dozen such questions of every message
    (is it a retraction, a reaction, an attachment, archivable...): ~40 % of the CPU of
    an IRC line reaching XMPP. For a plugin name :func:`fast_contains` answers from the
    loaded plugins directly, with the same result; interface names still go the old way.

14. slixmpp matches every incoming stanza against each of its ~100 stanza-path handlers,
    and a handler that does not match tries twice: with its path split once at start-up,
    then with the raw path split again, which gives the same list (paths are split
    without namespaces) and so the same answer: ~10 % of a line to IRC.
    :func:`match_once` keeps the first try, and refuses a path whose first step names
    another stanza (``iq/...`` for a message: most of them) with ``ElementBase.match``'s
    own first test, from the step split once per path instead of once per stanza, for
    another ~10 % of a line to IRC; and a path whose second step is a plugin the stanza
    has not loaded (``message/replace`` for a plain message), with the test that
    ``ElementBase.match`` ends on, when nothing before it can answer otherwise.

15. slixmpp's send queue runs each async outgoing filter of every stanza as a task and
    waits for it with a 1 s ``asyncio.wait`` (a task, futures, a timer and two loop turns
    a stanza). slidge's three async filters (entity caps, vCard avatar hash, and XEP-0319's
    idle stamp, which slidge loads too and which the first version of this fix missed, so
    that every stanza still went the old way) only touch presences and hand anything else
    back as it is. :func:`send_without_tasks` puts any
    other stanza in the queue already filtered: the sync filters run at once, in their
    order, the async ones are skipped, and the queue sends it as it is. Presences, and
    every stanza when some other async filter is registered, go the old way. Which
    filters are sync, and whether the async ones are all known, is worked out once per
    list of filters, not for every stanza (5.4 → 1.8 µs a stanza sent).

18. slixmpp serializes every stanza (what it sends, and fix 8's archive rows) with an
    ``escape`` that looks each character of each attribute and text up in a dictionary
    and joins them again: ~5 % of the CPU of a message either way, 6 µs for a 50-character
    body. :func:`fast_escape` puts in its place one that gives the same string with
    ``str.replace`` (0.6 µs; a room message serialized in 9 µs instead of 23); the CDATA
    mode, which Passerelle does not use, goes the old way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from inspect import iscoroutinefunction
from typing import Any

log = logging.getLogger(__name__)


# --- fix 11: `name in stanza` without building stanza.values ---------------------------


def _contains(self: Any, name: str) -> bool:
    """Fix 11: ``ElementBase.__contains__``, answered from the loaded plugins for a plugin
    name. slixmpp's answer is ``self.values.get(name) is not None`` (a loaded plugin
    whose ``lang`` is empty is a key there; one with a language is ``name|lang``), or
    else whether ``get_plugin(name, check=True)`` finds it; this computes exactly that."""
    if "|" in name or name in self.interfaces or name in {"lang", "substanzas"}:
        assert _SLIXMPP_CONTAINS is not None  # installed by fast_contains
        return _SLIXMPP_CONTAINS(self, name)
    plugins = self.plugins
    for (attrib, _lang), plugin in plugins.items():
        if attrib == name and not plugin["lang"]:
            return True
    plugin_class = self.plugin_attrib_map.get(name)
    if plugin_class is None:
        return False
    if plugin_class.is_extension:
        return (name, None) in plugins
    return (name, self.get_lang()) in plugins


_SLIXMPP_CONTAINS: Callable[[Any, str], bool] | None = None


def _install(cls: type, name: str, new: Callable[..., Any]) -> Any:
    """Put `new` in place of ``cls.name``; what was there, or None if `new` already is."""
    old = cls.__dict__[name]
    if old is new:
        return None
    setattr(cls, name, new)
    return old


def fast_contains() -> None:
    """Fix 11: install :func:`_contains` (idempotent)."""
    global _SLIXMPP_CONTAINS  # noqa: PLW0603 - slixmpp's original, kept once
    from slixmpp.xmlstream.stanzabase import ElementBase

    _SLIXMPP_CONTAINS = _install(ElementBase, "__contains__", _contains) or _SLIXMPP_CONTAINS


# --- fix 14: a stanza path matched once -----------------------------------------------


def _match(self: Any, stanza: Any) -> bool:
    """Fix 14: ``StanzaPath.match`` without its second, identical, try; and a path whose
    first step cannot be this stanza refused before the call, with the test that
    ``ElementBase.match`` makes first (same name, namespaced name, loaded plugin, or
    part of the plugin attribute), from the first step split once per path. Then a path
    whose second step names a plugin the stanza has not loaded, refused with the test
    ``ElementBase.match`` ends on when the first step has no attribute test, the stanza
    no substanzas and the second step is no sub-interface of it."""
    try:
        tag = self._passerelle_first
        second = self._passerelle_second
    except AttributeError:
        criteria = self._criteria
        tag = self._passerelle_first = criteria[0].split("@")[0] if criteria else None
        second = self._passerelle_second = (
            (criteria[1], criteria[1].split("@")[0].split("}")[-1])
            if len(criteria) > 1 and "@" not in criteria[0]
            else None
        )
    if tag is not None and type(stanza).match is _ELEMENT_MATCH:
        if (
            tag != stanza.name
            and tag not in stanza.loaded_plugins
            and tag not in stanza.plugin_attrib
            and (tag[:1] != "{" or tag != f"{{{stanza.namespace}}}{stanza.name}")
        ):
            return False
        if (
            second is not None
            and not stanza.iterables
            and second[0] not in stanza.sub_interfaces
            and all(attrib != second[1] for attrib, _lang in stanza.plugins)
        ):
            return False
    return stanza.match(self._criteria)  # type: ignore[no-any-return]


_ELEMENT_MATCH: Any = None


def match_once() -> None:
    """Fix 14: install :func:`_match` (idempotent)."""
    global _ELEMENT_MATCH  # noqa: PLW0603 - slixmpp's, to know a stanza class kept it
    from slixmpp.xmlstream.matcher.stanzapath import StanzaPath
    from slixmpp.xmlstream.stanzabase import ElementBase

    _ELEMENT_MATCH = ElementBase.match
    StanzaPath.match = _match  # type: ignore[method-assign]


# --- fix 15: stanzas other than presences filtered without tasks -----------------------

PRESENCE_ONLY_FILTERS = (
    ("slidge.core.dispatcher.caps", "CapsMixin._filter_add_caps"),
    ("slixmpp.plugins.xep_0153.vcard_avatar", "XEP_0153._update_presence"),
    ("slixmpp.plugins.xep_0319.idle", "XEP_0319._stamp_idle_presence"),
)
"""Fix 15: async outgoing filters that return any stanza but a presence untouched."""


def _presence_only(handler: Any) -> bool:
    func = getattr(handler, "__func__", handler)
    return (func.__module__, func.__qualname__) in PRESENCE_ONLY_FILTERS


def _sync_out_filters(stream: Any, out: list[Any]) -> list[Any] | None:
    """Fix 15: the sync filters among `out` (in order) when every async one only touches
    presences, else None; worked out once per list of filters, not per stanza."""
    key = tuple(out)
    cached = stream.__dict__.get("_passerelle_out_filters")
    if cached is not None and cached[0] == key:
        return cached[1]  # type: ignore[no-any-return]
    asynchronous = [iscoroutinefunction(f) for f in key]
    sync: list[Any] | None = [f for f, a in zip(key, asynchronous, strict=True) if not a]
    if not all(_presence_only(f) for f, a in zip(key, asynchronous, strict=True) if a):
        sync = None
    stream._passerelle_out_filters = (key, sync)
    return sync


def _send(self: Any, data: Any, use_filters: bool = True) -> None:
    """Fix 15: ``XMLStream.send``, with the filters of a stanza that is not a presence
    run here when every async filter is one that only touches presences."""
    assert _SLIXMPP_SEND is not None  # installed by send_without_tasks
    stanza_base, presence = _STANZA_CLASSES
    if not use_filters or not isinstance(data, stanza_base) or isinstance(data, presence):
        return _SLIXMPP_SEND(self, data, use_filters)
    filters = self._XMLStream__filters
    if filters["out_sync"] or filters["out_sce"]:
        return _SLIXMPP_SEND(self, data, use_filters)
    sync = _sync_out_filters(self, filters["out"])
    if sync is None:
        return _SLIXMPP_SEND(self, data, use_filters)
    try:
        for handler in sync:
            if isinstance(data, stanza_base):
                data = handler(data)
                if data is None:
                    return None  # dropped by a filter, as the queue would
    except Exception:
        log.exception("Exception raised in send queue:")  # the queue's words; dropped
        return None
    return _SLIXMPP_SEND(self, data, False)


_SLIXMPP_SEND: Callable[..., None] | None = None
_STANZA_CLASSES: tuple[type, type] = (type(None), type(None))
"""slixmpp's ``StanzaBase`` and ``Presence``, set when fix 15 is installed."""


def send_without_tasks() -> None:
    """Fix 15: install :func:`_send` (idempotent)."""
    global _SLIXMPP_SEND, _STANZA_CLASSES  # noqa: PLW0603 - slixmpp's, kept once
    from slixmpp import Presence
    from slixmpp.xmlstream import StanzaBase
    from slixmpp.xmlstream.xmlstream import XMLStream

    _STANZA_CLASSES = (StanzaBase, Presence)
    _SLIXMPP_SEND = _install(XMLStream, "send", _send) or _SLIXMPP_SEND


# --- fix 18: XML escaping without a dictionary lookup per character --------------------


def _escape(text: str, use_cdata: bool = False) -> str:
    """Fix 18: slixmpp's ``tostring.escape``: ``&``, ``<``, ``>``, ``'`` and ``"`` as
    entities (``&`` first, so that no entity is escaped twice), CDATA mode its way."""
    if use_cdata:
        assert _SLIXMPP_ESCAPE is not None  # installed by fast_escape
        return _SLIXMPP_ESCAPE(text, use_cdata)
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    if "'" in text:
        text = text.replace("'", "&apos;")
    if '"' in text:
        text = text.replace('"', "&quot;")
    return text


_SLIXMPP_ESCAPE: Callable[[str, bool], str] | None = None


def fast_escape() -> None:
    """Fix 18: install :func:`_escape` where ``tostring`` looks it up (idempotent)."""
    global _SLIXMPP_ESCAPE  # noqa: PLW0603 - slixmpp's original, kept once
    import sys

    import slixmpp.xmlstream.tostring  # noqa: F401 - the module, which the package shadows

    module: Any = sys.modules["slixmpp.xmlstream.tostring"]
    if module.escape is not _escape:
        _SLIXMPP_ESCAPE = module.escape
        module.escape = _escape
