"""Per-message work of slidge 0.4.2 and slixmpp 1.17 made cheaper, without changing results.

These are slidge fixes 11-19 and 30-39 (listed with the others in :mod:`gateway.slidge_fixes`, which
installs them): each replaces a piece of per-message work that costs far more than what
it computes, and keeps what it computes — the same answers, the same rows, the same
stanzas. ``tests/unit/test_slidge_speed.py`` has, for each, a *detector* test that fails
when upstream changes the code under it, and tests that compare the fix with the code it
replaces. ``bench/irc.py`` measured each (``bench/README.md``).

11. slixmpp's ``ElementBase.__contains__`` (``"replace" in msg``) builds ``msg.values``, a
    dictionary of every interface of the stanza and, recursively, of every plugin it
    holds, to look one name up in it. slidge asks a dozen such questions of every message
    (is it a retraction, a reaction, an attachment, archivable...): ~40 % of the CPU of
    an IRC line reaching XMPP. For a plugin name :func:`fast_contains` answers from the
    loaded plugins directly, with the same result; interface names still go the old way.
12. ``IdMapStore._set`` (the map from legacy message ids to XMPP ids) runs a query, a
    flush and, from its caller, a commit for every message the user sends (twice in a
    group: the message id and the stanza id): ~40 % of the CPU of a line to IRC.
    :class:`IdMapBatcher` queues the rows and writes them once per tick in one transaction,
    with slidge's rule (a legacy id set again replaces its rows), new rows in one Core
    ``executemany``; every read of the map
    flushes first, so nobody sees it without the queued rows, and a clean exit flushes.
    A SIGKILL loses at most the last tick's rows: corrections of those messages then go
    out as new lines.
13. slidge commits a session for every message the user sends even when, as with fix 12,
    nothing was written in it: SQLAlchemy then begins and ends an empty transaction
    (~10 % of a line to IRC). :class:`LazyCommitSession` skips a commit when no
    transaction was begun and nothing is pending, which is all that commit did. And the
    room archive (``mam``) has no index on its legacy ids, which slidge and fix 8 look
    up for every message that has one: every tick read the whole room's archive.
    :func:`store_speedups` adds the index ``ix_passerelle_mam_room_legacy_id``.
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
16. slidge's archive copy of a room message (``MessageArchive.add``: a copy of the
    stanza, the MUC item set through its plugin, then ``HistoryMessage`` reads the
    stanza id and delay and deletes delay, markable and chat state through theirs) costs
    ~0.2 ms a message, ~25 % of an IRC line to XMPP and ~20 % of a line to IRC (its
    echo is archived too). :func:`archive_copy` makes the same XML from the message's
    XML (a C deep copy, three attributes, a namespace rename); messages with anything it
    does not handle the same way (a language, a delay, a chat state, no body...) take
    slidge's way. Fix 8 stores the :class:`ArchiveCopy` it returns.
17. slidge sends a room message to each of the user's resources as a copy of the one
    sent to the previous resource, the first one a copy of the message itself, which
    nothing uses after (the archive has its own copy, the caller gets the last one
    sent): ~10 % of an IRC line to XMPP for a user with one client.
    :func:`send_messages_uncopied` lets that first "copy" be the message itself; the
    others are copies as before.
18. slixmpp serializes every stanza (what it sends, and fix 8's archive rows) with an
    ``escape`` that looks each character of each attribute and text up in a dictionary
    and joins them again: ~5 % of the CPU of a message either way, 6 µs for a 50-character
    body. :func:`fast_escape` puts in its place one that gives the same string with
    ``str.replace`` (0.6 µs; a room message serialized in 9 µs instead of 23); the CDATA
    mode, which Passerelle does not use, goes the old way.
30. slidge's echo of a message the user sent to a room (``LegacyMUC.echo``) sets its
    stanza id and occupant id through stanza plugins (each built and looked up on the
    message) and sends each of the user's resources a copy, the first a copy of the
    message itself, which nothing changes after: ~5 % of the CPU of a line to IRC
    (35 µs of slidge's echo, against 6 µs for this one).
    :func:`echo_directly` adds the two elements to the message's XML, as the plugins
    would, and sends the message itself to the first resource (copies to the others, as
    slidge does); a message that already holds either element goes slidge's way.
31. slidge builds each message an occupant says (``MessageMaker._make_message``) through
    stanza plugins: the body, the chat state, the ``markable`` hint and the stanza id
    (each plugin built and looked up, the chat state's removal of any other state
    first): ~38 µs of the ~400 µs an IRC line costs on its way to XMPP.
    :func:`participant_messages_from_xml` builds a plain one (a body, slidge's default
    hints, no reply, thread, link preview or carbon) as XML, then loads the plugins of
    its children as parsing it would (a copy of the message, which every further
    resource gets, is made that way): ~25 µs, the same stanza. Anything else goes
    slidge's way.
"""

from __future__ import annotations

import asyncio
import atexit
import copy
import functools
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from inspect import iscoroutinefunction
from typing import Any, Generic, TypeVar
from xml.etree import ElementTree as ET  # slixmpp's ET (``slixmpp.xmlstream.ET``)

T = TypeVar("T")

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


# --- fix 12: the id map written once per tick ------------------------------------------

IDMAP_TICK = 0.05
"""Seconds an id map row may wait before it is committed (fix 12)."""
IDMAP_BATCH = 400
"""Rows that make the id map commit at once, without waiting for the tick (fix 12)."""
IDMAP_READS = ("_get", "_get_legacy", "was_sent_by_user")
"""``IdMapStore`` methods that read the map (every public read goes through one)."""


@dataclass(frozen=True, slots=True)
class _IdRows:
    bind: Any  # the engine of the session slidge passed
    type_: Any  # GroupMessages, GroupMessagesOrigin, DirectMessages, …Threads
    foreign_key: int
    legacy_id: str
    xmpp_ids: tuple[str, ...]


class TickBatcher(Generic[T]):
    """Rows queued in order and written in one transaction per tick (`tick` seconds after
    the first, or at once when `batch` wait), by :meth:`_write`; when that fails, one by
    one, so one bad row costs only itself. Fixes 8 and 12."""

    def __init__(self, tick: float, batch: int) -> None:
        self.tick = tick
        self.batch = batch
        self._rows: list[T] = []
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, row: T) -> None:
        self._rows.append(row)
        if len(self._rows) >= self.batch:
            self.flush()
            return
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop (a script, a test): write now
                self.flush()
                return
            self._timer = loop.call_later(self.tick, self.flush)

    def flush(self) -> None:
        """Write every queued row now (in one transaction if all goes well)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        rows, self._rows = self._rows, []
        if not rows:
            return
        from sqlalchemy.exc import SQLAlchemyError

        try:
            self._write(rows)
        except SQLAlchemyError:
            log.warning("Writing %d %s at once failed; one by one", len(rows), self.what)
            for row in rows:
                try:
                    self._write([row])
                except SQLAlchemyError as e:
                    log.error("Could not write %s: %s", self.describe(row), e)

    what = "rows"
    """What the rows are, for the log."""

    def describe(self, row: T) -> str:
        """One row, for the log."""
        return repr(row)

    def _write(self, rows: list[T]) -> None:
        raise NotImplementedError


class IdMapBatcher(TickBatcher[_IdRows]):
    """Fix 12: id map rows queued in order and written in one transaction per tick."""

    what = "message id mappings"

    def __init__(self, tick: float = IDMAP_TICK, batch: int = IDMAP_BATCH) -> None:
        super().__init__(tick, batch)

    def describe(self, row: _IdRows) -> str:
        return f"the ids of message {row.legacy_id}"

    @staticmethod
    def _write(sets: list[_IdRows]) -> None:
        """slidge's ``IdMapStore._set`` for many calls: the last call for a (table, key,
        legacy id) wins, its rows replace whatever the table had for it; rows of a room
        or contact deleted meanwhile are dropped."""
        import sqlalchemy as sa
        from slidge.db.models import Contact, Room
        from sqlalchemy.orm import Session

        last: dict[tuple[Any, int, str], _IdRows] = {}
        for one in sets:
            key = (one.type_, one.foreign_key, one.legacy_id)
            last.pop(key, None)  # re-inserted: its rows come in the order of its last call
            last[key] = one
        by_bind: dict[Any, list[_IdRows]] = {}
        for one in last.values():
            by_bind.setdefault(one.bind, []).append(one)
        for bind, todo in by_bind.items():
            with Session(bind) as orm:
                owners: dict[Any, set[int]] = {}
                for one in todo:
                    owners.setdefault(_owner(one.type_, Room, Contact), set()).add(one.foreign_key)
                alive: dict[Any, set[int]] = {
                    owner: set(orm.scalars(sa.select(owner.id).where(owner.id.in_(keys))))
                    for owner, keys in owners.items()
                }
                by_type: dict[Any, list[_IdRows]] = {}
                for one in todo:
                    if one.foreign_key in alive[_owner(one.type_, Room, Contact)]:
                        by_type.setdefault(one.type_, []).append(one)
                for type_, rows in by_type.items():
                    keys: dict[int, list[str]] = {}
                    for one in rows:
                        keys.setdefault(one.foreign_key, []).append(one.legacy_id)
                    orm.execute(
                        sa.delete(type_).where(
                            sa.or_(
                                *(
                                    sa.and_(type_.foreign_key == fk, type_.legacy_id.in_(ids))
                                    for fk, ids in keys.items()
                                )
                            )
                        )
                    )
                    new = [
                        {"foreign_key": one.foreign_key, "legacy_id": one.legacy_id, "xmpp_id": x}
                        for one in rows
                        for x in one.xmpp_ids
                    ]
                    if new:  # Core's executemany: the ORM's bulk INSERT adds nothing here
                        orm.execute(sa.insert(type_.__table__), new)
                orm.commit()


@functools.cache
def _owner(type_: Any, room: Any, contact: Any) -> Any:
    """The table a map's ``foreign_key`` points to (asked twice a row: worked out once
    per table, 1.4 % of a line to IRC otherwise)."""
    (fk,) = type_.__table__.c.foreign_key.foreign_keys
    return room if fk.column.table is room.__table__ else contact


IDMAP = IdMapBatcher()
"""The process's id map queue (fix 12)."""


def _set(session: Any, foreign_key: int, legacy_id: str, xmpp_ids: list[str], type_: Any) -> None:
    """Fix 12: slidge's ``IdMapStore._set``, queueing the rows instead of writing them."""
    IDMAP.add(_IdRows(session.get_bind(), type_, foreign_key, legacy_id, tuple(xmpp_ids)))


def flushing_first(batcher: TickBatcher[Any], read: Callable[..., Any]) -> Callable[..., Any]:
    """`read`, after `batcher` wrote what it holds: nobody reads without the queued rows."""

    @functools.wraps(read)
    def flushed_first(*args: Any, **kwargs: Any) -> Any:
        batcher.flush()
        return read(*args, **kwargs)

    flushed_first.passerelle_fix = True  # type: ignore[attr-defined]
    return flushed_first


def batch_id_map_writes() -> None:
    """Fix 12: queue id map rows; flush before every read of the map and at exit."""
    from slidge.db.store import IdMapStore

    if IdMapStore.__dict__["_set"].__func__ is _set:
        return
    IdMapStore._set = staticmethod(_set)  # type: ignore[method-assign]
    for name in IDMAP_READS:
        read = IdMapStore.__dict__[name]
        setattr(IdMapStore, name, staticmethod(flushing_first(IDMAP, read.__func__)))
    atexit.register(IDMAP.flush)


# --- fix 13: no empty commits, an index for the archive's legacy ids --------------------

MAM_LEGACY_INDEX = "ix_passerelle_mam_room_legacy_id"
"""Fix 13: the index on the room archive's (room, legacy id)."""


def _lazy_commit_session() -> type[Any]:
    from sqlalchemy.orm import Session

    class LazyCommitSession(Session):
        """Fix 13: a commit with no transaction begun and nothing pending does nothing
        (SQLAlchemy would begin a transaction, flush nothing and end it)."""

        def commit(self) -> None:
            if (
                self._transaction is None
                and not self._new
                and not self._deleted
                and not self.identity_map._modified
            ):
                return
            super().commit()

    return LazyCommitSession


def store_speedups(store: Any) -> None:
    """Fix 13 for a ``SlidgeStore``: its sessions skip empty commits, and the archive has
    the legacy id index (created if missing)."""
    import sqlalchemy as sa
    from slidge.db.models import ArchivedMessage

    maker = store.session
    if not issubclass(maker.class_, LAZY_COMMIT_SESSION):
        maker.class_ = type(maker.class_.__name__, (LAZY_COMMIT_SESSION, maker.class_), {})
    # Plain DDL: an sa.Index on the model's columns would join slidge's metadata.
    table = ArchivedMessage.__tablename__
    with maker.kw["bind"].begin() as conn:
        conn.execute(
            sa.text(
                f"CREATE INDEX IF NOT EXISTS {MAM_LEGACY_INDEX} ON {table} (room_id, legacy_id)"
            )
        )


LAZY_COMMIT_SESSION: type[Any] = object
"""The session class of fix 13 (made when installed, so that importing this module does
not import SQLAlchemy)."""


def _init_then_speedups(init: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(init)
    def store_init(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        store_speedups(self)

    store_init.passerelle_fix = True  # type: ignore[attr-defined]
    return store_init


def speed_up_store() -> None:
    """Fix 13: every ``SlidgeStore`` made from now on gets :func:`store_speedups`."""
    global LAZY_COMMIT_SESSION  # noqa: PLW0603 - made once, on first use
    from slidge.db.store import SlidgeStore

    if LAZY_COMMIT_SESSION is object:
        LAZY_COMMIT_SESSION = _lazy_commit_session()
    if not getattr(SlidgeStore.__init__, "passerelle_fix", False):
        SlidgeStore.__init__ = _init_then_speedups(SlidgeStore.__init__)  # type: ignore[method-assign]


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


# --- fix 16: a room message's archive copy made from its XML ---------------------------

_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
_DELAY = "{urn:xmpp:delay}delay"
_MARKABLE = "{urn:xmpp:chat-markers:0}markable"
_STANZA_ID = "{urn:xmpp:sid:0}stanza-id"
_MUC_USER = "http://jabber.org/protocol/muc#user"
_CHAT_STATES = "{http://jabber.org/protocol/chatstates}"
_COMPONENT_NS = "{jabber:component:accept}"
_CLIENT_NS = "{jabber:client}"


@dataclass(frozen=True, slots=True)
class ArchiveCopy:
    """What the archive keeps of a room message (fix 8 writes it): the values of slidge's
    ``HistoryMessage`` (its id, its time and its stanza's XML, in the client namespace),
    and the sender's JID."""

    id: str
    when: Any  # datetime
    xml: Any  # ET.Element
    stream: Any  # the stanza's XML stream, for its namespaces
    author: Any  # JID

    @classmethod
    def of(cls, message: Any) -> ArchiveCopy:
        """From slidge's ``HistoryMessage``."""
        stanza = message.stanza
        return cls(message.id, message.when, stanza.xml, stanza.stream, stanza.get_from())

    def serialize(self) -> str:
        """The stanza as slixmpp's ``str(stanza)`` writes it (what slidge stores)."""
        stream = self.stream
        return _tostring()(
            self.xml,
            xmlns=stream.default_ns if stream is not None else "",
            stream=stream,
            top_level=stream is None,
        )


_MUC_X, _MUC_ITEM = f"{{{_MUC_USER}}}x", f"{{{_MUC_USER}}}item"


@functools.cache
def _tostring() -> Callable[..., str]:
    """slixmpp's ``tostring``, imported on first use (per message, an import statement
    costs more than this call; importing slixmpp with this module would load it before
    :mod:`gateway.lazy_imports` is installed)."""
    from slixmpp.xmlstream.tostring import tostring

    return tostring


def _archive_shape(msg: Any) -> dict[str, int] | None:
    """Fix 16: where the body, stanza-id, markable, chat state and MUC ``<x/>`` of `msg`
    are (each at most once; one body, with text and the message's language), or None if
    `msg` has what :func:`archive_copy` leaves to slidge's way."""
    xml = msg.xml
    body_tag = f"{{{msg.namespace}}}body"
    watched = {body_tag: "body", _STANZA_ID: "stanza_id", _MARKABLE: "markable", _MUC_X: "muc"}
    shape: dict[str, int] = {}
    for index, child in enumerate(xml):
        tag = child.tag
        if not isinstance(tag, str) or tag == _DELAY:
            return None
        name = "chat_state" if tag.startswith(_CHAT_STATES) else watched.get(tag)
        if name is not None:
            if name in shape:
                return None
            shape[name] = index
    body = xml[shape["body"]] if "body" in shape else None
    if body is None or not body.text or body.get(_XML_LANG) is not None:
        return None
    if "muc" in shape and len(xml[shape["muc"]].findall(_MUC_ITEM)) > 1:
        return None
    return shape


def archive_copy(msg: Any, item: tuple[str, str, str] | None) -> ArchiveCopy | None:
    """Fix 16: the archive's copy of a room message, as slidge's ``MessageArchive.add``
    makes it, from the XML: a copy of the message with a MUC ``<x><item/></x>`` (`item` is
    its role, affiliation and JID; None in an anonymous room), without ``markable`` and
    chat state, with a ``stanza-id`` (added empty, with a new id, if missing), in the
    client namespace. slidge builds it through stanza objects (a copy, three plugin
    lookups, four deletions): ~25 % of the CPU of an IRC line to XMPP. None when the
    message has anything this does not handle the same way (no body or an empty one, a
    body in another language, several bodies or chat states, a delay, several MUC items):
    the caller takes slidge's way then."""
    shape = _archive_shape(msg)
    if shape is None:
        return None
    new = copy.deepcopy(msg.xml)
    if item is not None:
        role, affiliation, jid = item
        x = new[shape["muc"]] if "muc" in shape else ET.SubElement(new, _MUC_X)
        attributes = x.find(_MUC_ITEM)
        if attributes is None:
            attributes = ET.SubElement(x, _MUC_ITEM)
        attributes.set("role", role)  # in slidge's order; an existing one keeps its place
        attributes.set("affiliation", affiliation)
        attributes.set("jid", jid)
    for index in sorted((shape.get("markable", -1), shape.get("chat_state", -1)), reverse=True):
        if index >= 0:
            del new[index]
    for element in new.iter():
        tag = element.tag
        if isinstance(tag, str) and tag.startswith(_COMPONENT_NS):
            element.tag = _CLIENT_NS + tag[len(_COMPONENT_NS) :]
    id_ = None
    if "stanza_id" in shape:
        id_ = msg.xml[shape["stanza_id"]].get("id")
    else:
        ET.SubElement(new, _STANZA_ID)
    return ArchiveCopy(
        id_ or uuid.uuid4().hex, datetime.now(tz=UTC), new, msg.stream, msg.get_from()
    )


# --- fix 17: a room message sent as itself to the user's first resource --------------

_SENDABLE: list[Any] = []
"""Fix 17: the messages a participant's ``_send`` is sending, each of which its loop may
send as itself once instead of copying it first."""
_SLIDGE_PARTICIPANT_SEND: Callable[..., Any] | None = None
_MESSAGE: type[Any] = type(None)
"""slixmpp's ``Message``, set when fix 17 is installed."""


def _copy_unless_sendable(stanza: Any) -> Any:
    """Fix 17: ``copy`` as ``slidge.group.participant`` calls it (once per resource of
    the user, on the stanza sent to the previous one): the message being sent itself the
    first time, a copy after."""
    if _SENDABLE and _SENDABLE[-1] is stanza:
        _SENDABLE.pop()
        return stanza
    return copy.copy(stanza)


def _participant_send(self: Any, stanza: Any, *args: Any, **kwargs: Any) -> Any:
    """Fix 17: slidge's ``LegacyParticipant._send``, with a room message sent as itself to
    the user's first resource (and copied for each further one, as slidge does)."""
    assert _SLIDGE_PARTICIPANT_SEND is not None  # installed by send_messages_uncopied
    full_jid = args[0] if args else kwargs.get("full_jid")
    archive_only = args[1] if len(args) > 1 else kwargs.get("archive_only", False)
    if full_jid is not None or archive_only or not isinstance(stanza, _MESSAGE):
        return _SLIDGE_PARTICIPANT_SEND(self, stanza, *args, **kwargs)
    _SENDABLE.append(stanza)
    try:
        return _SLIDGE_PARTICIPANT_SEND(self, stanza, *args, **kwargs)
    finally:
        if _SENDABLE and _SENDABLE[-1] is stanza:
            _SENDABLE.pop()  # not sent: no resource of the user is in the room


def send_messages_uncopied() -> None:
    """Fix 17: install :func:`_participant_send` (idempotent)."""
    global _SLIDGE_PARTICIPANT_SEND, _MESSAGE  # noqa: PLW0603 - slidge's original, kept once
    from slidge.group import participant
    from slixmpp import Message

    _MESSAGE = Message
    participant.copy = _copy_unless_sendable  # type: ignore[assignment,attr-defined]
    cls = participant.LegacyParticipant
    _SLIDGE_PARTICIPANT_SEND = _install(cls, "_send", _participant_send) or (
        _SLIDGE_PARTICIPANT_SEND
    )


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


# --- fix 30: the echo of what the user sends to a room, without plugins and a copy -----

_OCCUPANT_ID = "{urn:xmpp:occupant-id:0}occupant-id"
_SLIDGE_ECHO: Callable[..., Any] | None = None


def _plugin_free(msg: Any, names: tuple[str, ...], tags: tuple[str, ...]) -> bool:
    """Whether `msg` has none of these plugins loaded and none of these elements."""
    if any(attrib in names for attrib, _lang in msg.plugins):
        return False
    return all(msg.xml.find(tag) is None for tag in tags)


async def _muc_echo(self: Any, msg: Any, legacy_msg_id: str | None = None) -> str:
    """Fix 30: slidge's ``LegacyMUC.echo``: the same stanza id and occupant id elements,
    the same archive row, the same stanzas to the user's resources."""
    assert _SLIDGE_ECHO is not None  # installed by echo_directly
    if not (legacy_msg_id is None or isinstance(legacy_msg_id, str)) or not _plugin_free(
        msg, ("stanza_id", "occupant-id"), (_STANZA_ID, _OCCUPANT_ID)
    ):
        result: str = await _SLIDGE_ECHO(self, msg, legacy_msg_id)
        return result
    msg.set_from(self.user_muc_jid)
    stanza_id = legacy_msg_id or str(uuid.uuid4())
    ET.SubElement(msg.xml, _STANZA_ID, {"id": stanza_id, "by": str(self.jid)})
    user_part = await self.get_user_participant()
    occupant_id = user_part.stored.occupant_id
    ET.SubElement(msg.xml, _OCCUPANT_ID, {"id": occupant_id} if occupant_id else {})
    self.archive.add(msg, user_part)
    first = True
    for user_full_jid in self.user_full_jids():
        self.log.debug("Echoing to %s", user_full_jid)
        if not first:
            msg = copy.copy(msg)
        first = False
        msg.set_to(user_full_jid)
        msg.send()
    return stanza_id


def echo_directly() -> None:
    """Fix 30: install :func:`_muc_echo` (idempotent)."""
    global _SLIDGE_ECHO  # noqa: PLW0603 - slidge's original, kept once
    from slidge.group.room import LegacyMUC

    _SLIDGE_ECHO = _install(LegacyMUC, "echo", _muc_echo) or _SLIDGE_ECHO


# --- fix 31: an occupant's plain message built as XML -------------------------------

_ACTIVE = f"{_CHAT_STATES}active"
_MARKABLE_HINT = frozenset({"markable"})
_PLAIN_MESSAGE_ARGUMENTS = frozenset(
    {
        "mbody",
        "hints",
        "legacy_msg_id",
        "when",
        "state",
        "reply_to",
        "carbon",
        "link_previews",
        "thread",
    }
)
"""What slidge's ``send_text`` passes; anything else (``mtype``, ``mto``...) goes its way."""
_SLIDGE_MAKE_MESSAGE: Callable[..., Any] | None = None
_STRIP_ILLEGAL_CHARS: Callable[[str, str], str] | None = None
"""slidge's ``strip_illegal_chars``, set when fix 31 is installed."""


def _participant_message(self: Any, *args: Any, **kwargs: Any) -> Any:
    """Fix 31: slidge's ``MessageMaker._make_message`` for an occupant: a message with a
    body, no chat state asked, slidge's default hints of a room message (``markable``)
    or none, and nothing else, built as XML; the same XML, and the same plugins loaded,
    as slidge's way. (Everything it uses is bound once: three imports here cost ~1 µs
    a message.)"""
    assert _SLIDGE_MAKE_MESSAGE is not None  # installed by participant_messages_from_xml
    assert _STRIP_ILLEGAL_CHARS is not None
    body = kwargs.get("mbody")
    hints = kwargs.get("hints", ())
    legacy_msg_id = kwargs.get("legacy_msg_id")
    if (
        args
        or not (legacy_msg_id is None or (isinstance(legacy_msg_id, str) and legacy_msg_id))
        or not kwargs.keys() <= _PLAIN_MESSAGE_ARGUMENTS
        or not isinstance(body, str)
        or not body
        or any(kwargs.get(name) for name in ("state", "reply_to", "carbon", "link_previews"))
        or kwargs.get("thread")
        or not self.USE_STANZA_ID
        or (hints and frozenset(hints) != _MARKABLE_HINT)
    ):
        return _SLIDGE_MAKE_MESSAGE(self, *args, **kwargs)
    msg = self.xmpp.Message(sfrom=self.jid, stype=self.mtype, sto=None)
    xml = msg.xml
    ET.SubElement(xml, f"{{{msg.namespace}}}body").text = _STRIP_ILLEGAL_CHARS(body, "\ufffd")
    children = [ET.SubElement(xml, _ACTIVE)]  # slidge's state of a message with a body
    if hints:
        children.append(ET.SubElement(xml, _MARKABLE))
    if legacy_msg_id is not None:
        msg.set_id(legacy_msg_id)
    stanza_id = legacy_msg_id if legacy_msg_id is not None else str(uuid.uuid4())
    children.append(ET.SubElement(xml, _STANZA_ID, {"id": stanza_id, "by": str(self.muc.jid)}))
    tags = msg.plugin_tag_map
    for child in children:  # as ElementBase.__init__ does for a parsed message
        msg.init_plugin(tags[child.tag].plugin_attrib, existing_xml=child, reuse=False)
    self._add_delay(msg, kwargs.get("when"))
    return msg


def participant_messages_from_xml() -> None:
    """Fix 31: install :func:`_participant_message` for occupants (idempotent)."""
    global _SLIDGE_MAKE_MESSAGE, _STRIP_ILLEGAL_CHARS  # noqa: PLW0603 - slidge's, kept once
    from slidge.core.mixins.message_maker import MessageMaker
    from slidge.group.participant import LegacyParticipant
    from slidge.util import strip_illegal_chars

    _STRIP_ILLEGAL_CHARS = strip_illegal_chars
    _SLIDGE_MAKE_MESSAGE = MessageMaker.__dict__["_make_message"]
    if LegacyParticipant.__dict__.get("_make_message") is not _participant_message:
        LegacyParticipant._make_message = _participant_message  # type: ignore[method-assign]


def apply() -> None:
    """Install fixes 11-19 and 30-39 (called by :func:`gateway.slidge_fixes.apply`)."""
    fast_contains()
    batch_id_map_writes()
    speed_up_store()
    match_once()
    send_without_tasks()
    send_messages_uncopied()
    fast_escape()
    echo_directly()
    participant_messages_from_xml()
