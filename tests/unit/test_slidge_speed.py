"""Slidge fixes 11-19 (gateway/slidge_speed.py): a detector for each (the slow code is still
upstream: when one fails, check whether the fix is still needed), and each fix compared
with the code it replaces: same answers, same stanzas, same rows."""

import asyncio
import contextlib
import copy
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from slixmpp import Message
from slixmpp.xmlstream import ET, register_stanza_plugin
from slixmpp.xmlstream.stanzabase import ElementBase, StanzaBase

from gateway import slidge_speed
from gateway import slidge_speed_messages as speed_messages
from gateway import slidge_speed_presences as speed_presences
from gateway import slidge_speed_stanzas as speed_stanzas
from gateway import slidge_speed_store as speed_store
from tests.unit.slidge_db import slidge_store


def _message(xml: ET.Element | None = None, stream: Any = None) -> Message:
    """slixmpp's Message, whose __init__ has no annotations."""
    return Message(xml=xml, stream=stream)  # type: ignore[no-untyped-call]


def test_what_other_code_imports_from_slidge_speed_is_the_fixes_own() -> None:
    """The fixes live by role in four modules; `gateway.slidge_speed` installs them and
    offers the names other code uses (`gateway.slidge_fixes`), each the module's own."""
    modules = (speed_messages, speed_presences, speed_stanzas, speed_store)
    for name in slidge_speed.__all__:
        if name != "apply":
            owners = [m for m in modules if getattr(m, name, None) is getattr(slidge_speed, name)]
            assert len(owners) == 1, name


# --- fix 11: `name in stanza` -----------------------------------------------------------


def _register_message_plugins() -> None:
    """The Message plugins slidge's XEP plugins register at start-up."""
    from slixmpp.plugins.xep_0045 import stanza as muc
    from slixmpp.plugins.xep_0066 import stanza as oob
    from slixmpp.plugins.xep_0085 import stanza as chat_states
    from slixmpp.plugins.xep_0184 import stanza as receipts
    from slixmpp.plugins.xep_0203 import stanza as delay
    from slixmpp.plugins.xep_0308 import stanza as correction
    from slixmpp.plugins.xep_0333 import stanza as markers
    from slixmpp.plugins.xep_0334 import stanza as hints
    from slixmpp.plugins.xep_0359 import stanza as stanza_id
    from slixmpp.plugins.xep_0372 import stanza as references
    from slixmpp.plugins.xep_0421 import stanza as occupant_id
    from slixmpp.plugins.xep_0424 import stanza as retraction
    from slixmpp.plugins.xep_0428 import stanza as fallback
    from slixmpp.plugins.xep_0444 import stanza as reactions
    from slixmpp.plugins.xep_0461 import stanza as reply

    for module in (muc, stanza_id, retraction, fallback, reply):
        module.register_plugins()
    for plugin in (
        correction.Replace,
        delay.Delay,
        references.Reference,
        oob.OOB,
        hints.Store,
        hints.NoStore,
        hints.NoPermanentStore,
        reactions.Reactions,
        markers.Markable,
        markers.Displayed,
        chat_states.Active,
        occupant_id.OccupantId,
        receipts.Request,
    ):
        register_stanza_plugin(Message, plugin)


def _echo() -> Message:
    """What slidge echoes of a groupchat message the user sent, archived too."""
    msg = _message()
    msg["type"] = "groupchat"
    msg["from"] = "#chan%irc@irc.example.org/romeo"
    msg["to"] = "romeo@example.org/gajim"
    msg["body"] = "juliet: hi"
    msg["stanza_id"]["id"] = "abc"
    msg["stanza_id"]["by"] = "#chan%irc@irc.example.org"
    msg["occupant-id"]["id"] = "occ"
    msg["muc"]["role"] = "participant"
    msg["muc"]["affiliation"] = "member"
    msg["muc"]["jid"] = "romeo@example.org"
    msg.enable("markable")
    return msg


def _stanzas() -> list[Message]:
    _register_message_plugins()
    mention = _echo()
    mention["reference"]["type"] = "mention"
    mention["reference"]["uri"] = "xmpp:#chan%irc@irc.example.org/juliet"
    mention["reference"]["begin"] = "0"
    mention["reference"]["end"] = "6"
    delayed = _echo()
    delayed["delay"]["stamp"] = "2026-01-02T03:04:05Z"
    corrected = _echo()
    corrected["replace"]["id"] = "old"
    attached = _echo()
    attached["oob"]["url"] = "https://example.org/a.png"
    french = _echo()
    french["lang"] = "fr"
    french["body|en"] = "hi"
    reaction = _message()
    reaction["reactions"]["id"] = "abc"
    retraction = _message()
    retraction["retract"]["id"] = "abc"
    state = _message()
    state["chat_state"] = "active"
    hinted = _echo()
    hinted.enable("store")
    hinted.enable("no-permanent-store")
    answer = _echo()
    answer["reply"]["id"] = "abc"
    answer["fallback"]["for"] = "urn:xmpp:reply:0"
    parsed = _message(
        xml=ET.fromstring(
            "<message xmlns='jabber:client' type='groupchat' xml:lang='de'>"
            "<body>x</body><body xml:lang='fr'>y</body>"
            "<replace xmlns='urn:xmpp:message-correct:0' id='q'/>"
            "<displayed xmlns='urn:xmpp:chat-markers:0' id='z' xml:lang='it'/>"
            "<unknown xmlns='urn:example'/></message>"
        )
    )
    return [
        _message(),
        _echo(),
        mention,
        delayed,
        corrected,
        attached,
        french,
        reaction,
        retraction,
        state,
        hinted,
        answer,
        parsed,
    ]


def _names(stanza: ElementBase) -> list[str]:
    return sorted(
        {*stanza.plugin_attrib_map, *stanza.interfaces}
        | {"lang", "substanzas", "body|fr", "body|*", "id|en", "no-such-plugin", ""}
    )


@pytest.fixture
def slixmpp_contains() -> Iterator[Callable[[Any, str], bool]]:
    """slixmpp's own ``__contains__``, with fix 11 installed for the test."""
    original = ElementBase.__dict__["__contains__"]
    speed_stanzas.fast_contains()
    try:
        yield original
    finally:
        ElementBase.__contains__ = original  # type: ignore[method-assign]


def test_bug11_contains_builds_the_whole_values_dict_is_still_there(
    slixmpp_contains: Callable[[Any, str], bool],
) -> None:
    assert slixmpp_contains is not speed_stanzas._contains
    assert "self.values" in inspect.getsource(slixmpp_contains)


def test_fix11_is_installed_once(slixmpp_contains: Callable[[Any, str], bool]) -> None:
    assert ElementBase.__contains__ is speed_stanzas._contains
    speed_stanzas.fast_contains()
    assert speed_stanzas._SLIXMPP_CONTAINS is slixmpp_contains  # not itself, wrapped


def test_fix11_answers_as_slixmpp_does(slixmpp_contains: Callable[[Any, str], bool]) -> None:
    checked = 0
    for stanza in _stanzas():
        parts = [stanza, *(plugin for plugin in list(stanza.plugins.values()))]
        for part in parts:
            for name in _names(part):
                before = str(stanza)
                fast = speed_stanzas._contains(part, name)
                assert str(stanza) == before, f"{name!r} in {before} changed the stanza"
                slow = slixmpp_contains(copy.deepcopy(part), name)
                assert fast == slow, f"{name!r} in {before}: {fast}, slixmpp says {slow}"
                checked += 1
    assert checked > 500
    assert "replace" in _stanzas()[4]  # the operator itself goes through the fix
    assert "replace" not in _stanzas()[1]


# --- fix 12: the id map, once per tick --------------------------------------------------


def test_bug12_id_map_writes_every_message_is_still_there() -> None:
    from slidge.core.dispatcher.message.message import MessageContentMixin
    from slidge.db.store import IdMapStore

    assert IdMapStore.__dict__["_set"].__func__ is not speed_store._set
    assert "session.add(msg)" in inspect.getsource(IdMapStore._set)
    handler = inspect.getsource(MessageContentMixin.on_legacy_message)
    assert "set_origin" in handler and "orm.commit()" in handler


@pytest.fixture(autouse=True)
def home_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from slidge.core import config

    monkeypatch.setattr(config, "HOME_DIR", tmp_path, raising=False)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Any]:
    with slidge_store(tmp_path / "batched.sqlite", ["juliet"]) as store:
        yield store


@pytest.fixture
def batched() -> Iterator[None]:
    from slidge.db.store import IdMapStore

    saved = {name: IdMapStore.__dict__[name] for name in ("_set", *speed_store.IDMAP_READS)}
    speed_store.batch_id_map_writes()
    try:
        yield
    finally:
        speed_store.IDMAP.flush()
        for name, attribute in saved.items():
            setattr(IdMapStore, name, attribute)


def _pk(store: Any, model: str, legacy_id: str) -> int:
    from slidge.db import models

    with store.session() as orm:
        pk: int = orm.query(getattr(models, model)).filter_by(legacy_id=legacy_id).one().id
        return pk


def _table(store: Any) -> list[tuple[str, int, str, str]]:
    """Every row of every id map table, in insertion order per key."""
    from slidge.db.models import (
        DirectMessages,
        DirectThreads,
        GroupMessages,
        GroupMessagesOrigin,
        GroupThreads,
    )

    rows = []
    with store.session() as orm:
        for type_ in (DirectMessages, DirectThreads, GroupMessages, GroupMessagesOrigin):
            for row in orm.query(type_).order_by(type_.id):
                rows.append((type_.__tablename__, row.foreign_key, row.legacy_id, row.xmpp_id))
        rows += [
            ("group_thread", r.foreign_key, r.legacy_id, r.xmpp_id) for r in orm.query(GroupThreads)
        ]
    return sorted(rows, key=lambda r: (r[0], r[1], r[2]))  # stable: insertion order kept


OPERATIONS: list[tuple[str, str, str, list[str]]] = [
    ("set_msg", "#a", "L1", ["x1"]),
    ("set_origin", "#a", "L1", ["o1"]),
    ("set_msg", "#b", "L1", ["y1"]),
    ("set_msg", "#a", "L2", ["x2", "x2bis"]),  # an attachment message: several ids
    ("set_msg", "#a", "L1", ["x1-again"]),  # the same legacy id again: replaces
    ("set_thread", "#a", "T", ["t1"]),
    ("direct", "juliet", "L1", ["d1"]),
    ("set_msg", "#a", "L2", ["x2-new"]),
    ("direct", "juliet", "L1", ["d2", "d3"]),
]


def _apply(store: Any, operations: list[tuple[str, str, str, list[str]]]) -> None:
    """Operations as slidge's callers make them: each in its own session, committed."""
    id_map = store.id_map
    for what, owner, legacy_id, ids in operations:
        with store.session() as orm:
            if what == "direct":
                id_map.set_msg(orm, _pk(store, "Contact", owner), legacy_id, ids, False)
            elif what == "set_origin":
                id_map.set_origin(orm, _pk(store, "Room", owner), legacy_id, ids[0])
            elif what == "set_thread":
                id_map.set_thread(orm, _pk(store, "Room", owner), legacy_id, ids[0], True)
            else:
                id_map.set_msg(orm, _pk(store, "Room", owner), legacy_id, ids, True)
            orm.commit()


async def test_fix12_rows_wait_for_the_tick_and_reads_see_them(store: Any, batched: None) -> None:
    _apply(store, OPERATIONS[:2])
    assert len(speed_store.IDMAP) == 2
    assert _table(store) == []  # not written yet
    room = _pk(store, "Room", "#a")
    with store.session() as orm:  # a read flushes first
        assert store.id_map.get_legacy(orm, room, "o1", True, origin=True) == "L1"
    assert len(_table(store)) == 2
    _apply(store, OPERATIONS[2:3])
    await asyncio.sleep(speed_store.IDMAP_TICK * 4)  # the tick writes it
    assert len(speed_store.IDMAP) == 0
    assert len(_table(store)) == 3
    with store.session() as orm:
        _apply(store, [("set_msg", "#a", "L9", ["x9"])])
        assert store.id_map.was_sent_by_user(orm, room, "L9", True)
        assert store.id_map.get_xmpp(orm, room, "L9", True) == ["x9"]


@pytest.mark.parametrize("split", [0, 3, 5, len(OPERATIONS)])
async def test_fix12_same_rows_as_slidge(tmp_path: Path, split: int) -> None:
    """The same calls against slidge's own `_set` and against the batched one, flushed
    after `split` calls and at the end: the same rows (ids apart), in the same order."""
    from slidge.db.store import IdMapStore

    with contextlib.ExitStack() as stack:
        expected_store = stack.enter_context(slidge_store(tmp_path / "slidge.sqlite", ["juliet"]))
        store = stack.enter_context(slidge_store(tmp_path / "batched.sqlite", ["juliet"]))
        _apply(expected_store, OPERATIONS)
        saved = {name: IdMapStore.__dict__[name] for name in ("_set", *speed_store.IDMAP_READS)}
        speed_store.batch_id_map_writes()
        try:
            _apply(store, OPERATIONS[:split])
            speed_store.IDMAP.flush()
            _apply(store, OPERATIONS[split:])
            speed_store.IDMAP.flush()
        finally:
            for name, attribute in saved.items():
                setattr(IdMapStore, name, attribute)
        assert _table(store) == _table(expected_store)


async def test_fix12_a_full_batch_is_written_at_once(store: Any, batched: None) -> None:
    ops = [("set_msg", "#a", f"L{i}", [f"x{i}"]) for i in range(speed_store.IDMAP_BATCH)]
    _apply(store, ops)
    assert len(speed_store.IDMAP) == 0
    assert len(_table(store)) == speed_store.IDMAP_BATCH


async def test_fix12_rows_of_a_deleted_room_are_dropped_not_fatal(
    store: Any, batched: None
) -> None:
    from slidge.db.models import Room

    _apply(store, [("set_msg", "#a", "L1", ["x1"]), ("set_msg", "#b", "L2", ["y2"])])
    with store.session() as orm:
        orm.delete(orm.query(Room).filter_by(legacy_id="#b").one())
        orm.commit()
    speed_store.IDMAP.flush()
    assert [row[2:] for row in _table(store)] == [("L1", "x1")]


def test_fix12_without_an_event_loop_rows_are_written_at_once(store: Any, batched: None) -> None:
    _apply(store, OPERATIONS[:1])
    assert len(_table(store)) == 1


def test_fix12_is_installed_once(batched: None) -> None:
    from slidge.db.store import IdMapStore

    speed_store.batch_id_map_writes()
    assert IdMapStore.__dict__["_set"].__func__ is speed_store._set
    for name in speed_store.IDMAP_READS:
        read = IdMapStore.__dict__[name].__func__
        assert read.passerelle_fix
        assert not hasattr(read.__wrapped__, "passerelle_fix")


# --- fix 13: no empty commits, the archive's legacy id index ----------------------------


def test_bug13_empty_commit_and_unindexed_legacy_ids_are_still_there() -> None:
    import sqlalchemy as sa
    from slidge.core.dispatcher.message.message import MessageContentMixin
    from slidge.db.models import ArchivedMessage

    handler = inspect.getsource(MessageContentMixin.on_legacy_message)
    assert "with self.xmpp.store.session() as orm:" in handler and "orm.commit()" in handler
    table = ArchivedMessage.__table__
    assert isinstance(table, sa.Table)
    indexed = [[c.name for c in index.columns] for index in table.indexes]
    assert not any("legacy_id" in columns for columns in indexed)


@pytest.fixture
def sped_up() -> Iterator[None]:
    from slidge.db.store import SlidgeStore

    init = SlidgeStore.__dict__["__init__"]
    speed_store.speed_up_store()
    try:
        yield
    finally:
        SlidgeStore.__init__ = init  # type: ignore[method-assign]


def _transactions(store: Any) -> list[object]:
    import sqlalchemy as sa

    begun: list[object] = []
    sa.event.listen(store.session, "after_transaction_create", lambda *args: begun.append(args))
    return begun


def test_fix13_an_empty_commit_begins_nothing(tmp_path: Path, sped_up: None) -> None:
    from slidge.db.models import Room

    with slidge_store(tmp_path / "x.sqlite", ["juliet"]) as store:
        begun = _transactions(store)
        with store.session() as orm:
            orm.commit()  # what slidge does after fix 12 queued the id map rows
        assert begun == []
        with store.session() as orm:  # a read, then a commit: committed as before
            room = orm.query(Room).filter_by(legacy_id="#a").one()
            room.name = "renamed"
            user = room.user_account_id
            orm.commit()
        with store.session() as orm:  # something added: committed
            orm.add(Room(user_account_id=user, legacy_id="#c", jid_localpart="#c"))
            orm.commit()
        with store.session() as orm:
            rooms = {r.legacy_id: r.name for r in orm.query(Room)}
        assert rooms == {"#a": "renamed", "#b": "#b", "#c": None}
        assert len(begun) >= 3


def test_fix13_the_archive_looks_legacy_ids_up_by_index(tmp_path: Path, sped_up: None) -> None:
    import sqlalchemy as sa
    from slidge.db.models import ArchivedMessage

    with slidge_store(tmp_path / "x.sqlite", ["juliet"]) as store, store.session() as orm:
        query = sa.select(ArchivedMessage).where(
            ArchivedMessage.room_id.in_([1, 2]), ArchivedMessage.legacy_id.in_(["a", "b"])
        )
        sql = str(query.compile(orm.get_bind(), compile_kwargs={"literal_binds": True}))
        plan = " ".join(row[-1] for row in orm.execute(sa.text("EXPLAIN QUERY PLAN " + sql)))
        assert speed_store.MAM_LEGACY_INDEX in plan
        assert issubclass(store.session.class_, speed_store.LAZY_COMMIT_SESSION)
        speed_store.store_speedups(store)  # again: nothing added twice
        assert store.session.class_.__mro__.count(speed_store.LAZY_COMMIT_SESSION) == 1


# --- fix 14: a stanza path matched once -------------------------------------------------


def test_bug14_stanza_paths_are_matched_twice_is_still_there() -> None:
    from slixmpp.xmlstream.matcher.stanzapath import StanzaPath

    source = inspect.getsource(StanzaPath.__dict__["match"])
    assert "stanza.match(self._criteria) or stanza.match(self._raw_criteria)" in source
    assert "propagate_ns=False" in inspect.getsource(StanzaPath.__init__)


PATHS = [
    "message/muc/invite",
    "sage",  # part of 'message' (ElementBase.match tests `in plugin_attrib`)
    "{jabber:client}message/body",
    "{jabber:component:accept}message@type=groupchat",
    "stanza_id",  # a plugin a message has loaded, as a first step
    "message@type=groupchat/body",
    "message/pubsub_event/items",
    "iq@type=get/disco_info",
    "iq/{http://jabber.org/protocol/disco#info}query",
    "{jabber:client}presence/muc_join",
    "presence@type=unavailable",
    "message/replace",
    "message/reactions",
    "message/stanza_id",
    # second steps: a sub-interface, plugins loaded or not, namespaced, with attributes
    "message/body",
    "message/subject",
    "message/chat_state",
    "message/oob",
    "message/markable",
    "message/{urn:xmpp:sid:0}stanza_id",
    "message/muc@role=participant",
    "message/reference@type=mention",
    "message@type=groupchat/replace",
    "{jabber:client}message/delay",
    "presence/muc",
    "iq/disco_info",
    "iq/disco_items",
]


def test_fix14_one_try_answers_as_two_do(monkeypatch: pytest.MonkeyPatch) -> None:
    from slixmpp import Iq, Presence
    from slixmpp.plugins.xep_0030 import DiscoInfo
    from slixmpp.xmlstream.matcher.stanzapath import StanzaPath
    from slixmpp.xmlstream.stanzabase import fix_ns

    register_stanza_plugin(Iq, DiscoInfo)
    monkeypatch.setattr(speed_stanzas, "_ELEMENT_MATCH", ElementBase.match)  # as match_once
    slixmpp_match = StanzaPath.__dict__["match"]
    iq = Iq()  # type: ignore[no-untyped-call]  # slixmpp: unannotated __init__
    iq["type"] = "get"
    iq.enable("disco_info")
    presence = Presence()
    presence["type"] = "unavailable"
    stanzas = [*_stanzas(), iq, presence]
    matched = 0
    for path in PATHS:
        matcher = StanzaPath(path)
        for namespace in ("jabber:client", "jabber:component:accept", ""):  # the raw path,
            # split as each stanza would split it: the same list as the one kept
            assert fix_ns(path, split=True, propagate_ns=False, default_ns=namespace) == (
                matcher._criteria
            )
        for stanza in stanzas:
            before = str(stanza)
            once = speed_stanzas._match(matcher, stanza)
            assert str(stanza) == before
            assert once == slixmpp_match(matcher, copy.deepcopy(stanza)), (path, before)
            matched += once
    assert matched >= 5  # the table has matches, not only misses
    # and the second-step refusal is used: a path it refuses that slixmpp refuses too
    plain = _message()
    plain["body"] = "hi"
    assert not speed_stanzas._match(StanzaPath("message/replace"), plain)
    assert speed_stanzas._match(StanzaPath("message/body"), plain)


# --- fix 15: stanzas other than presences filtered without tasks ------------------------


def test_bug15_async_filters_run_as_tasks_and_only_touch_presences_is_still_there() -> None:
    from slidge.core.dispatcher.caps import CapsMixin
    from slixmpp.plugins.xep_0153.vcard_avatar import XEP_0153
    from slixmpp.plugins.xep_0319.idle import XEP_0319
    from slixmpp.xmlstream.xmlstream import XMLStream

    run_filters = inspect.getsource(XMLStream.run_filters)
    assert "asyncio.create_task(filter(data))" in run_filters and "timeout=1" in run_filters
    for handler in (CapsMixin._filter_add_caps, XEP_0153._update_presence):
        body = inspect.getsource(handler)
        first = body.split('"""')[-1] if '"""' in body.split(":", 1)[1][:40] else body
        assert "if not isinstance(stanza, Presence):\n            return stanza" in first
        assert (handler.__module__, handler.__qualname__) in speed_stanzas.PRESENCE_ONLY_FILTERS
    # XEP-0319's (slidge loads it): the presence branch, then the stanza handed back as is.
    idle = inspect.getsource(XEP_0319._stamp_idle_presence)
    assert idle.count("return") == 1 and idle.rstrip().endswith("return stanza")
    assert "        if isinstance(stanza, Presence):\n" in idle
    assert (XEP_0319.__module__, "XEP_0319._stamp_idle_presence") in (
        speed_stanzas.PRESENCE_ONLY_FILTERS
    )


def test_fix15_knows_every_async_out_filter_of_the_plugins_slidge_loads() -> None:
    """Fix 15 helps only if every async outgoing filter is presence-only: one unknown
    filter sends every stanza the old way (as XEP-0319's did, unnoticed)."""
    import pkgutil
    import re
    from importlib import import_module

    from slidge.core import gateway
    from slidge.core.dispatcher.caps import CapsMixin
    from slixmpp.plugins.base import BasePlugin

    found = set()
    for name in gateway.SLIXMPP_PLUGINS:
        try:
            package = import_module(f"slixmpp.plugins.{name}")
        except ImportError:
            continue  # one of slidge's own (slidge.slixfix, pubsub component)
        modules = [package]
        for info in pkgutil.iter_modules(getattr(package, "__path__", [])):
            modules.append(import_module(f"{package.__name__}.{info.name}"))
        for module in modules:
            for value in vars(module).values():
                if not (isinstance(value, type) and issubclass(value, BasePlugin)):
                    continue
                source = inspect.getsource(value)
                for attr in re.findall(r"add_filter\(['\"]out['\"], self\.(\w+)\)", source):
                    if inspect.iscoroutinefunction(getattr(value, attr)):
                        found.add((value.__module__, f"{value.__name__}.{attr}"))
    # slidge takes entity caps' filter out (CapsMixin puts its own, known, in its place)
    assert 'del_filter("out", xmpp.plugin["xep_0115"]._filter_add_caps)' in inspect.getsource(
        CapsMixin.__init__
    )
    found.discard(("slixmpp.plugins.xep_0115.caps", "XEP_0115._filter_add_caps"))
    assert ("slixmpp.plugins.xep_0319.idle", "XEP_0319._stamp_idle_presence") in found
    assert found <= set(speed_stanzas.PRESENCE_ONLY_FILTERS), found


async def _presence_only(stanza: Any) -> Any:  # an async filter like slidge's caps filter
    from slixmpp import Presence

    if not isinstance(stanza, Presence):
        return stanza
    await asyncio.sleep(0)
    stanza["status"] = "from the async filter"
    return stanza


def _mark(stanza: Any) -> Any:  # a sync filter that changes every stanza
    stanza["id"] = f"{stanza['id']}+sync"
    return stanza


def _drop_some(stanza: Any) -> Any:  # a sync filter that drops one
    if stanza["id"].startswith("drop"):
        return None
    if stanza["id"].startswith("boom"):
        raise ValueError("a broken filter")
    return stanza


async def _sent_by(fixed: bool, unknown_async: bool = False) -> list[str]:
    """What an XMLStream writes for a few stanzas through these filters, with fix 15 or
    without it."""
    from slixmpp import Iq, Presence
    from slixmpp.xmlstream.xmlstream import XMLStream

    original = XMLStream.__dict__["send"]
    if fixed:
        speed_stanzas.send_without_tasks()
    try:
        stream = XMLStream()
        stream._always_send_everything = True
        written: list[str] = []
        # (send_raw takes str or bytes; XMLStream.send passes str)
        stream.send_raw = written.append  # type: ignore[method-assign,assignment]
        stream.add_filter("out", _presence_only)
        stream.add_filter("out", _mark)
        stream.add_filter("out", _drop_some)
        if unknown_async:
            stream.add_filter("out", speed_stanzas._fake_async_filter)  # type: ignore[attr-defined]
        sender = asyncio.create_task(stream.run_filters())
        try:
            for i, kind in enumerate(["m", "p", "i", "m", "m", "m", "p"]):
                kinds: dict[str, Callable[..., StanzaBase]] = {"m": Message, "p": Presence, "i": Iq}
                stanza = kinds[kind](stream=stream)
                stanza["id"] = {4: "drop", 5: "boom"}.get(i, "") + str(i)
                if kind == "m":
                    stanza["body"] = f"line {i}"
                stream.send(stanza)
            async with asyncio.timeout(5):
                await stream.waiting_queue.join()
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        return written
    finally:
        XMLStream.send = original  # type: ignore[method-assign]


async def test_fix15_sends_the_same_stanzas_in_the_same_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    known = (*speed_stanzas.PRESENCE_ONLY_FILTERS, (__name__, "_presence_only"))
    monkeypatch.setattr(speed_stanzas, "PRESENCE_ONLY_FILTERS", known)
    expected = await _sent_by(fixed=False)
    assert len(expected) == 5  # one dropped, one broke its filter
    assert "from the async filter" in expected[1] and "+sync" in expected[0]
    assert await _sent_by(fixed=True) == expected


async def test_fix15_an_unknown_async_filter_keeps_the_queue_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []

    async def unknown(stanza: Any) -> Any:
        calls.append(stanza["id"])
        return stanza

    monkeypatch.setattr(speed_stanzas, "_fake_async_filter", unknown, raising=False)
    known = (*speed_stanzas.PRESENCE_ONLY_FILTERS, (__name__, "_presence_only"))
    monkeypatch.setattr(speed_stanzas, "PRESENCE_ONLY_FILTERS", known)
    expected = await _sent_by(fixed=False, unknown_async=True)
    calls.clear()
    assert await _sent_by(fixed=True, unknown_async=True) == expected
    assert len(calls) == 5  # it saw every stanza the other filters let through


# --- fix 16: a room message's archive copy made from its XML ---------------------------


def test_bug16_the_archive_copy_goes_through_stanza_objects_is_still_there() -> None:
    from slidge.group.archive import MessageArchive
    from slidge.util.archive_msg import HistoryMessage

    add = inspect.getsource(MessageArchive.add)
    assert "new_msg = copy(msg)" in add and 'new_msg["muc"]["role"]' in add
    init = inspect.getsource(HistoryMessage.__init__)
    # What fix 16 does by hand: if slidge's copy changes, so must archive_copy.
    for line in (
        'self.id = stanza["stanza_id"]["id"] or uuid.uuid4().hex',
        'del stanza["delay"]',
        'del stanza["markable"]',
        'del stanza["hint"]',
        'del stanza["chat_state"]',
        'if not stanza["body"]:',
        "set_client_namespace(stanza)",
    ):
        assert line in init
    assert init.count("del stanza[") == 5


def _component_stream() -> Any:
    from slixmpp.xmlstream import XMLStream

    stream = XMLStream()
    stream.default_ns = "jabber:component:accept"
    return stream


def _participant(kind: str) -> Any:
    from types import SimpleNamespace

    from slixmpp import JID

    muc = SimpleNamespace(is_anonymous=kind == "anonymous", jid=JID("#chan%irc@irc.example.org"))
    return SimpleNamespace(
        muc=muc,
        role="moderator" if kind == "contact" else None,
        affiliation="owner" if kind == "contact" else None,
        contact=SimpleNamespace(jid=JID("juliet%irc@irc.example.org/x"))
        if kind == "contact"
        else None,
        is_user=kind == "user",
        user_jid=JID("romeo@example.org/gajim"),
        is_system=kind == "system",
        nickname="n",
    )


def _archive_corpus() -> list[Message]:
    """The test corpus above, each as built here and as the component's stream parses or
    builds it (jabber:component:accept), plus an empty body, a message without stanza-id
    and one with a chat state."""
    stanzas = _stanzas()
    stream = _component_stream()
    for stanza in list(stanzas):
        text = str(stanza).replace('xmlns="jabber:client"', 'xmlns="jabber:component:accept"', 1)
        stanzas.append(_message(xml=ET.fromstring(text), stream=stream))
    empty = _echo()
    empty["body"] = ""
    bare = _message(stream=stream)
    bare["type"] = "groupchat"
    bare["body"] = "no id"
    chat = _message(stream=stream)
    chat["body"] = "x"
    chat["chat_state"] = "active"
    # What the gateway archives: an IRC line (chat state, markable) and the echo of the
    # user's message (her client's language); and two chat states.
    line = ET.fromstring(
        '<message xmlns="jabber:component:accept" type="groupchat" from="#a%irc@x/n" id="1">'
        '<body>i2x 1</body><active xmlns="http://jabber.org/protocol/chatstates" />'
        '<markable xmlns="urn:xmpp:chat-markers:0" />'
        '<stanza-id xmlns="urn:xmpp:sid:0" id="s" by="#a%irc@x" />'
        '<occupant-id xmlns="urn:xmpp:occupant-id:0" id="o" /></message>'
    )
    echo = ET.fromstring(
        '<message xmlns="jabber:component:accept" type="groupchat" from="#a%irc@x/me" '
        'id="2" xml:lang="en"><body>x2i 1</body>'
        '<stanza-id xmlns="urn:xmpp:sid:0" id="t" by="#a%irc@x" />'
        '<occupant-id xmlns="urn:xmpp:occupant-id:0" id="slidge-user" /></message>'
    )
    states = copy.deepcopy(line)
    states.append(ET.Element("{http://jabber.org/protocol/chatstates}paused"))
    other = copy.deepcopy(echo)
    other[0].set("{http://www.w3.org/XML/1998/namespace}lang", "fr")
    irc = [_message(xml=x, stream=stream) for x in (line, echo, states, other)]
    return [*stanzas, empty, bare, chat, *irc]


@pytest.mark.parametrize("kind", ["none", "anonymous", "contact", "user", "system"])
def test_fix16_archive_copy_is_slidges(kind: str) -> None:
    from gateway import slidge_fixes_archive

    participant = None if kind == "none" else _participant(kind)
    fast_ones = 0
    for msg in _archive_corpus():
        before = str(msg)
        item = None
        if participant is not None and not participant.muc.is_anonymous:
            jid = (
                participant.contact.jid.bare
                if participant.contact
                else participant.user_jid.bare
                if participant.is_user
                else str(participant.muc.jid)
            )
            item = (participant.role or "participant", participant.affiliation or "member", jid)
        fast = speed_messages.archive_copy(msg, item)
        slow = speed_messages.ArchiveCopy.of(
            slidge_fixes_archive._history_message(None, copy.copy(msg), participant)
        )
        assert str(msg) == before  # the message sent live is not touched
        if fast is None:
            continue
        fast_ones += 1
        assert fast.serialize() == slow.serialize(), str(msg)
        assert fast.author == slow.author
        if msg["stanza_id"]["id"]:
            assert fast.id == slow.id
        assert abs((fast.when - slow.when).total_seconds()) < 5
    # The IRC shapes (a line with its chat state, an echo in the client's language, a
    # mention, correction, attachment, hints, reply) take it, in both namespaces, and a
    # message without stanza-id; two bodies, a body in another language, a delay, two
    # chat states, no body or an empty one do not.
    assert fast_ones == 16


# --- fix 17: a room message sent as itself to the user's first resource ----------------


def test_bug17_each_resource_gets_a_copy_of_the_previous_one_is_still_there() -> None:
    from slidge.group import participant

    source = inspect.getsource(participant.LegacyParticipant._send)
    loop = source.index("for user_full_jid in self.muc.user_full_jids():")
    # The archive is written before the loop; in the loop the first copy is of the
    # message itself, which nothing uses after (the last copy is returned).
    assert source.index("self.muc.archive.add(stanza") < loop
    assert source[loop:].split("\n")[1].strip() == "stanza = copy(stanza)"
    assert source.rstrip().endswith("return stanza")
    assert source.count("copy(") == 1
    assert "from copy import copy" in inspect.getsource(participant)


def test_fix17_the_message_itself_once_then_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speed_messages, "_SENDABLE", [])
    _register_message_plugins()
    message, other = _echo(), _echo()
    speed_messages._SENDABLE.append(message)
    assert speed_messages._copy_unless_sendable(other) is not other  # not the one being sent
    first = speed_messages._copy_unless_sendable(message)
    assert first is message
    second = speed_messages._copy_unless_sendable(first)
    assert second is not message and str(second) == str(message)
    assert speed_messages._SENDABLE == []


async def test_fix17_sends_what_slidge_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    """slidge's own ``_send`` loop, run with and without the fix, for one, two and no
    resources: the same stanzas to the same JIDs; the message itself goes to the first."""
    from types import SimpleNamespace

    from slidge.group import participant
    from slixmpp import JID

    _register_message_plugins()
    speed_messages.send_messages_uncopied()
    original = speed_messages._SLIDGE_PARTICIPANT_SEND
    assert original is not None

    def run(fixed: bool, resources: list[str]) -> tuple[list[tuple[str, str]], Any, Any]:
        sent: list[tuple[str, str]] = []
        objects: list[Any] = []
        message = _echo()
        del message["to"]
        muc = SimpleNamespace(user_full_jids=lambda: [JID(r) for r in resources])
        fake = SimpleNamespace(
            muc=muc, occupant_id="occ", is_user=False, _presence_sent=True, is_system=False
        )
        fake._LegacyParticipant__add_nick_element = lambda stanza: None
        fake._LegacyParticipant__send_presence_if_needed = lambda *a: None

        def send(stanza: Any) -> None:
            sent.append((str(stanza["to"]), stanza["body"]))
            objects.append(stanza)

        monkeypatch.setattr(type(message), "send", send)
        if fixed:
            result = speed_messages._participant_send(fake, message)
        else:
            monkeypatch.setattr(participant, "copy", copy.copy)
            result = original(fake, message)
            monkeypatch.setattr(participant, "copy", speed_messages._copy_unless_sendable)
        assert speed_messages._SENDABLE == []
        return sent, (objects[0] is message if objects else None), result is message

    for resources in (["romeo@example.org/a"], ["romeo@example.org/a", "romeo@example.org/b"], []):
        before, first_was_message, _ = run(False, resources)
        after, first_is_message, returned_message = run(True, resources)
        assert after == before
        assert [to for to, _ in after] == resources
        if resources:
            assert first_was_message is False and first_is_message is True
            assert returned_message is (len(resources) == 1)


# --- fix 18: XML escaping ---------------------------------------------------------------


def _tostring_module() -> Any:
    import sys

    import slixmpp.xmlstream.tostring  # noqa: F401 - the module, which the package shadows

    return sys.modules["slixmpp.xmlstream.tostring"]


def test_bug18_escape_looks_up_every_character_is_still_there() -> None:
    escape = _tostring_module().escape
    source = inspect.getsource(speed_stanzas._SLIXMPP_ESCAPE or escape)
    assert '"".join(escapes.get(c, c) for c in text)' in source


@pytest.fixture
def slixmpp_escape() -> Iterator[Callable[[str, bool], str]]:
    """slixmpp's own ``escape``, with fix 18 installed for the test."""
    module = _tostring_module()
    original = speed_stanzas._SLIXMPP_ESCAPE or module.escape
    before = module.escape
    speed_stanzas.fast_escape()
    try:
        yield original
    finally:
        module.escape = before


@pytest.mark.parametrize(
    "text",
    ["", "plain", "a & b", "&amp;", "<x a='1' b=\"2\">", "]]>", "é€😀\x00\t\n", "&&<<>>''\"\""],
)
@pytest.mark.parametrize("use_cdata", [False, True])
def test_fix18_escapes_as_slixmpp_does(
    slixmpp_escape: Callable[[str, bool], str], text: str, use_cdata: bool
) -> None:
    assert _tostring_module().escape is speed_stanzas._escape
    assert speed_stanzas._escape(text, use_cdata) == slixmpp_escape(text, use_cdata)


@given(st.text(alphabet=st.sampled_from("ab&<>'\"; é😀\n]") | st.characters()))
def test_fix18_escapes_any_text_as_slixmpp_does(text: str) -> None:
    module = _tostring_module()
    original = speed_stanzas._SLIXMPP_ESCAPE or module.escape
    assert speed_stanzas._escape(text) == original(text, False)


def test_fix18_stanzas_serialize_as_before(slixmpp_escape: Callable[[str, bool], str]) -> None:
    from slixmpp.xmlstream import tostring

    module = _tostring_module()
    for stanza in _stanzas():
        stanza["body"] = '<b>it\'s</b> "quoted" & done'
        fast = tostring(stanza.xml, top_level=True)
        module.escape = slixmpp_escape
        try:
            assert tostring(stanza.xml, top_level=True) == fast
        finally:
            module.escape = speed_stanzas._escape


# --- fix 30: the echo of what the user sends to a room ----------------------------------


def test_bug30_the_echo_goes_through_plugins_and_copies_is_still_there() -> None:
    from slidge.group.room import LegacyMUC

    source = inspect.getsource(speed_messages._SLIDGE_ECHO or LegacyMUC.echo)
    assert 'msg["stanza_id"]["id"] = str(uuid.uuid4())' in source
    assert 'msg["occupant-id"]["id"] = user_part.stored.occupant_id' in source
    loop = source.index("for user_full_jid in self.user_full_jids():")
    assert source.index("self.archive.add(msg, user_part)") < loop
    assert "msg = copy(msg)" in source[loop:]
    assert source.rstrip().endswith('return msg["stanza_id"]["id"]  # type:ignore[no-any-return]')


_SENT_BY_USER = (
    "<message xmlns='jabber:component:accept' type='groupchat' id='m1'"
    " from='romeo@example.org/gajim' to='#chan%irc@irc.example.org'>"
    "<body>juliet: it&apos;s &lt;here&gt;</body>"
    "<origin-id xmlns='urn:xmpp:sid:0' id='o1'/>{extra}</message>"
)


async def _echoed(
    fixed: bool, resources: list[str], legacy_id: str | None, extra: str = ""
) -> tuple[list[str], list[str], str, list[str]]:
    """slidge's echo or fix 30's, on a room stand-in: what was archived, what was sent
    (as sent, and again at the end: a message sent must not change after), the id."""
    from types import SimpleNamespace

    from slidge.group.room import LegacyMUC
    from slixmpp import JID

    _register_message_plugins()
    speed_messages.echo_directly()
    echo = speed_messages._muc_echo if fixed else speed_messages._SLIDGE_ECHO
    assert echo is not None
    archived: list[str] = []
    sent: list[tuple[Any, str]] = []
    part = SimpleNamespace(stored=SimpleNamespace(occupant_id="occ-1"))

    async def get_user_participant() -> Any:
        return part

    def add(msg: Any, participant: Any) -> None:
        assert participant is part
        archived.append(str(msg))

    room = SimpleNamespace(
        jid=JID("#chan%irc@irc.example.org"),
        user_muc_jid=JID("#chan%irc@irc.example.org/romeo"),
        get_user_participant=get_user_participant,
        archive=SimpleNamespace(add=add),
        user_full_jids=lambda: [JID(r) for r in resources],
        log=SimpleNamespace(debug=lambda *a: None),
    )
    message = _message(xml=ET.fromstring(_SENT_BY_USER.format(extra=extra)))
    original_send = Message.send
    Message.send = lambda self: sent.append((self, str(self)))  # type: ignore[method-assign]
    try:
        stanza_id = await echo(room, message, legacy_id)
    finally:
        Message.send = original_send  # type: ignore[method-assign]
    assert LegacyMUC.echo is speed_messages._muc_echo
    return archived, [s for _, s in sent], stanza_id, [str(m) for m, _ in sent]


@pytest.mark.parametrize(
    "resources", [["romeo@example.org/a"], ["romeo@example.org/a", "romeo@example.org/b"], []]
)
@pytest.mark.parametrize("extra", ["", "<stanza-id xmlns='urn:xmpp:sid:0' id='x' by='y'/>"])
async def test_fix30_echoes_what_slidge_echoes(resources: list[str], extra: str) -> None:
    before = await _echoed(False, resources, "irc-1", extra)
    after = await _echoed(True, resources, "irc-1", extra)
    assert after == before
    archived, sent, stanza_id, at_the_end = after
    assert stanza_id == "irc-1" and len(archived) == 1 and sent == at_the_end
    assert len(sent) == len(resources)
    if not extra:
        assert (
            '<stanza-id xmlns="urn:xmpp:sid:0" id="irc-1" by="#chan%irc@irc.example.org" />'
            in archived[0]
        )
        assert '<occupant-id xmlns="urn:xmpp:occupant-id:0" id="occ-1" />' in archived[0]


async def test_fix30_a_new_stanza_id_when_there_is_no_legacy_id() -> None:
    archived, sent, stanza_id, _ = await _echoed(True, ["romeo@example.org/a"], None)
    before, sent_before, other_id, _ = await _echoed(False, ["romeo@example.org/a"], None)
    assert len(stanza_id) == 36 and stanza_id != other_id
    assert archived[0].replace(stanza_id, "ID") == before[0].replace(other_id, "ID")
    assert sent[0].replace(stanza_id, "ID") == sent_before[0].replace(other_id, "ID")


# --- fix 31: an occupant's plain message built as XML ---------------------------------


def test_bug31_messages_are_built_through_plugins_is_still_there() -> None:
    from slidge.core.mixins.message_maker import MessageMaker

    make = inspect.getsource(speed_messages._SLIDGE_MAKE_MESSAGE or MessageMaker._make_message)
    # What fix 31 does by hand: if slidge's way changes, so must _participant_message.
    for line in (
        'msg["body"] = strip_illegal_chars(body, "\ufffd")',
        'state = "active"',
        'msg["chat_state"] = state',
        "msg.enable(hint)",
        "self._set_msg_id(msg, legacy_msg_id)",
        "self._add_delay(msg, when)",
    ):
        assert line in make
    ids = inspect.getsource(MessageMaker._set_msg_id)
    assert 'msg["stanza_id"]["id"] = str(uuid.uuid4())' in ids
    assert 'msg["stanza_id"]["by"] = self.muc.jid' in ids


def _occupant(default_lang: str | None) -> Any:
    """An occupant stand-in with slidge's ``MessageMaker`` methods and a component stream."""
    import functools
    import types
    from types import SimpleNamespace

    from slidge.core.mixins.message_maker import MessageMaker
    from slixmpp import JID
    from slixmpp.basexmpp import BaseXMPP

    stream = _component_stream()
    stream.default_lang = default_lang
    occupant = SimpleNamespace(
        jid=JID("#chan%irc@irc.example.org/juliet"),
        muc=SimpleNamespace(jid=JID("#chan%irc@irc.example.org")),
        mtype="groupchat",
        USE_STANZA_ID=True,
        STRIP_SHORT_DELAY=False,
        is_participant=True,
        _can_send_carbon=False,
        xmpp=SimpleNamespace(
            Message=functools.partial(BaseXMPP.Message, stream),
            boundjid=JID("irc.example.org"),
            store=SimpleNamespace(  # no thread is known: its id as it is
                session=contextlib.nullcontext,
                id_map=SimpleNamespace(get_thread=lambda *_: None),
            ),
        ),
        _recipient_pk=lambda: 1,
    )
    for name in ("_set_msg_id", "_add_delay", "_add_reply_to", "_legacy_to_xmpp"):
        setattr(occupant, name, types.MethodType(getattr(MessageMaker, name), occupant))
    return occupant


def _message_calls() -> list[dict[str, Any]]:
    """How slidge's ``send_text`` calls ``_make_message`` for an occupant, and others."""
    from datetime import UTC, datetime

    plain = {
        "mbody": "juliet: it's <here> & there",
        "legacy_msg_id": None,
        "when": None,
        "reply_to": None,
        "hints": {"markable"},
        "carbon": False,
        "thread": None,
        "link_previews": None,
    }
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    return [
        plain,
        {**plain, "legacy_msg_id": "irc-1"},
        {**plain, "when": when, "legacy_msg_id": "irc-2"},
        {**plain, "hints": ()},
        {**plain, "mbody": "bell \x07 and \x1b escape"},
        {**plain, "mbody": "multi\nline\ttab"},
        {**plain, "thread": ""},
        # slidge's way (counted below): none of these is built as XML
        {**plain, "mbody": ""},
        {**plain, "legacy_msg_id": ""},
        {**plain, "hints": {"markable", "store"}},
        {**plain, "hints": {"no-store"}},
        {**plain, "state": "composing"},
        {**plain, "mbody": None, "state": "composing"},
        {**plain, "thread": "t1"},
        {**plain, "carbon": True, "mbody": "x"},
        {"mtype": "normal"},
        {},
    ]


@pytest.mark.parametrize("default_lang", [None, "en"])
def test_fix31_builds_what_slidge_builds(
    default_lang: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uuid

    from slidge.core.mixins.message_maker import MessageMaker
    from slidge.group.participant import LegacyParticipant

    _register_message_plugins()
    speed_messages.participant_messages_from_xml()
    assert LegacyParticipant._make_message is speed_messages._participant_message
    slidge = MessageMaker.__dict__["_make_message"]
    fixed_id = uuid.UUID("12345678-1234-5678-1234-567812345678")
    monkeypatch.setattr(uuid, "uuid4", lambda: fixed_id)
    built_as_xml = 0
    original = speed_messages._SLIDGE_MAKE_MESSAGE
    for call in _message_calls():
        occupant = _occupant(default_lang)
        slow = slidge(occupant, **call)
        went_slidges_way: list[bool] = []

        def spy(*args: Any, _seen: list[bool] = went_slidges_way, **kwargs: Any) -> Any:
            _seen.append(True)
            return slidge(*args, **kwargs)

        monkeypatch.setattr(speed_messages, "_SLIDGE_MAKE_MESSAGE", spy)
        fast = speed_messages._participant_message(occupant, **call)
        monkeypatch.setattr(speed_messages, "_SLIDGE_MAKE_MESSAGE", original)
        built_as_xml += not went_slidges_way
        assert str(fast) == str(slow), call
        assert fast.plugins.keys() == slow.plugins.keys(), call
        assert fast.loaded_plugins == slow.loaded_plugins, call
        assert [type(p) for p in fast.iterables] == [type(p) for p in slow.iterables]
        assert fast["stanza_id"]["id"] == slow["stanza_id"]["id"]
        assert fast["chat_state"] == slow["chat_state"]
        assert ("markable" in fast) == ("markable" in slow)
        assert str(copy.copy(fast)) == str(copy.copy(slow))
    assert built_as_xml == 7
