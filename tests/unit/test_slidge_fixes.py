"""Detectors: each asserts a slidge 0.4.2 bug that gateway/slidge_fixes.py works around is
still there. When one fails, upstream fixed the bug: delete the workaround and the test."""

import asyncio
import inspect
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import slidge.main
from slidge.command.chat_command import ChatCommandProvider
from slidge.command.register import Register
from slidge.contact.roster import LegacyRoster
from slidge.core.dispatcher.registration import RegistrationMixin
from slidge.core.gateway import BaseGateway
from slixmpp import JID
from slixmpp.exceptions import XMPPError

from gateway import slidge_fixes, slidge_speed
from gateway import slidge_fixes_archive as fixes_archive
from gateway import slidge_fixes_loop as fixes_loop
from gateway import slidge_fixes_registration as fixes_registration
from gateway.redact import RedactSecrets
from tests.unit.slidge_db import slidge_store


def test_bug1_roster_fill_never_pushes_is_still_there() -> None:
    assert hasattr(BaseGateway, "TEST_MODE"), "fixed upstream? remove push_to_roster"
    assert 'hasattr(self.session.xmpp, "TEST_MODE")' in inspect.getsource(LegacyRoster._fill)


def test_bug2_user_modify_without_filter_is_still_there() -> None:
    original = RegistrationMixin.__dict__["_user_modify"]
    assert original is not fixes_registration._user_modify
    assert "orm.query(GatewayUser).one_or_none()" in inspect.getsource(original)


def test_bug4_sigterm_raises_into_running_code_is_still_there() -> None:
    assert "raise SigTermInterrupt" in inspect.getsource(slidge.main.handle_sigterm)


def test_bug9_a_failed_task_stops_the_gateway_is_still_there() -> None:
    handler = BaseGateway.__dict__["_BaseGateway__exception_handler"]
    handler = getattr(handler, "__wrapped__", handler)
    source = inspect.getsource(handler)
    assert "self.has_crashed = True" in source and "loop.stop()" in source


def _failed_context(exc: BaseException) -> dict[str, Any]:
    """What asyncio hands the loop's exception handler for a task nobody awaited."""

    async def fetch_user_avatar() -> None:
        raise exc

    loop = asyncio.new_event_loop()
    try:
        task = loop.create_task(fetch_user_avatar())
        loop.run_until_complete(asyncio.wait([task]))
        task.exception()  # retrieved: no "never retrieved" report when it is collected
    finally:
        loop.close()
    return {"message": "Task exception was never retrieved", "exception": exc, "future": task}


def test_fix9_an_error_for_nobody_is_logged_and_the_gateway_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from slixmpp.exceptions import XMPPError

    original = BaseGateway.__dict__["_BaseGateway__exception_handler"]
    handler = fixes_loop._answerless_errors_are_logged(getattr(original, "__wrapped__", original))
    loop = asyncio.new_event_loop()
    stops: list[bool] = []
    loop.stop = lambda: stops.append(True)  # type: ignore[method-assign]
    gateway = type("Gateway", (), {"has_crashed": False})()
    try:
        gone = XMPPError("service-unavailable", "the core exited")
        handler(gateway, loop, _failed_context(gone))
        assert (gateway.has_crashed, stops) == (False, [])
        assert "fetch_user_avatar failed: service-unavailable (the core exited)" in caplog.text

        handler(gateway, loop, _failed_context(RuntimeError("a bug")))
        assert (gateway.has_crashed, stops) == (True, [True])  # anything else: as before
    finally:
        loop.close()


def test_fixes_are_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    from slidge.core.session import BaseSession
    from slidge.db.store import MAMStore
    from slidge.group.archive import MessageArchive

    # Fix 10 (tested in test_slidge_fix_preferences.py): undone after this test.
    monkeypatch.setattr(RegistrationMixin, "_user_validate", RegistrationMixin._user_validate)
    monkeypatch.setattr(BaseSession, "__init__", BaseSession.__init__)
    # Fixes 11-19 (tested in test_slidge_speed.py): only whether apply() installs them.
    speed: list[bool] = []
    monkeypatch.setattr(slidge_speed, "apply", lambda: speed.append(True))

    original_modify = RegistrationMixin._user_modify
    original_register = Register.__dict__["register"]
    original_input = ChatCommandProvider.__dict__["input"]
    original_handler = BaseGateway.__dict__["_BaseGateway__exception_handler"]
    original_sigterm = slidge.main.handle_sigterm
    main_module: Any = slidge.main
    original_engine = main_module.get_engine
    original_add = MessageArchive.__dict__["add"]
    original_reads = {name: MAMStore.__dict__[name] for name in slidge_fixes.MAM_READS}
    try:
        slidge_fixes.apply()
        assert RegistrationMixin._user_modify is fixes_registration._user_modify
        assert slidge.main.handle_sigterm is fixes_loop._stop_loop_on_sigterm
        assert main_module.get_engine.__name__ == "wal_get_engine"
        assert MessageArchive.add is fixes_archive._archive_add
        assert all(getattr(MAMStore, name).passerelle_fix for name in slidge_fixes.MAM_READS)
        assert speed == [True]
        assert BaseGateway.__dict__["_BaseGateway__exception_handler"].passerelle_fix
        assert Register.__dict__["register"].passerelle_fix
        assert ChatCommandProvider.__dict__["input"].passerelle_fix
        slidge_fixes.apply()  # idempotent: nothing wrapped twice
        assert Register.__dict__["register"].__wrapped__ is original_register
        assert ChatCommandProvider.__dict__["input"].__wrapped__ is original_input
        handle_form = ChatCommandProvider.__dict__["_ChatCommandProvider__handle_form"]
        assert handle_form.__wrapped__ is HANDLE_FORM
        wrapped = MAMStore.get_messages.__wrapped__  # type: ignore[attr-defined]  # functools.wraps
        assert not hasattr(wrapped, "passerelle_fix")
        handler = BaseGateway.__dict__["_BaseGateway__exception_handler"]
        assert not hasattr(handler.__wrapped__, "passerelle_fix")
    finally:
        setattr(BaseGateway, "_BaseGateway__exception_handler", original_handler)  # noqa: B010
        RegistrationMixin._user_modify = original_modify  # type: ignore[method-assign]
        Register.register = original_register  # type: ignore[method-assign]
        ChatCommandProvider.input = original_input  # type: ignore[method-assign]
        setattr(ChatCommandProvider, "_ChatCommandProvider__handle_form", HANDLE_FORM)  # noqa: B010
        slidge.main.handle_sigterm = original_sigterm
        main_module.get_engine = original_engine
        MessageArchive.add = original_add  # type: ignore[method-assign]
        for name, attribute in original_reads.items():
            setattr(MAMStore, name, attribute)


def _registration(failure: Exception) -> Any:
    """A stand-in for slidge's register command whose plugin's validate fails so."""

    async def user_prevalidate(_ifrom: JID, _form: dict[str, Any]) -> None:
        raise failure

    return SimpleNamespace(xmpp=SimpleNamespace(user_prevalidate=user_prevalidate))


async def _error_of(register: Any, failure: Exception) -> XMPPError:
    with pytest.raises(XMPPError) as caught:
        await register(_registration(failure), {"password": "x"}, None, JID("a@b.c"))
    return caught.value


async def test_bug51_register_command_hides_the_plugins_error_is_still_there() -> None:
    said = XMPPError("not-authorized", "login to https://hs: Invalid password")
    error = await _error_of(Register.__dict__["register"], said)
    assert error.condition == "internal-server-error", "fixed upstream? remove fix 51"


@pytest.mark.parametrize(
    ("failure", "condition", "text"),
    [
        (XMPPError("not-authorized", "Invalid password"), "not-authorized", "Invalid password"),
        (XMPPError("resource-constraint", "try again in 3 s"), "resource-constraint", None),
        (ValueError("no such nick"), "bad-request", "no such nick"),  # slidge's own way
        (RuntimeError("boom"), "internal-server-error", "boom"),  # slidge's own way
    ],
)
async def test_fix51_the_plugins_error_reaches_the_user_as_it_is(
    failure: Exception, condition: str, text: str | None
) -> None:
    fixed = fixes_registration._errors_keep_their_condition(Register.__dict__["register"])
    error = await _error_of(fixed, failure)
    assert error.condition == condition
    if isinstance(failure, XMPPError):
        assert error is failure
    else:
        assert error.text == text


HANDLE_FORM = ChatCommandProvider.__dict__["_ChatCommandProvider__handle_form"]
ALICE = JID("alice@example.org/phone")


async def _questions(handle_form: Any, chat_input: Any) -> list[tuple[str, str]]:
    """Run slidge's chat form (``handle_form``) for a nick and a password with a stand-in
    provider whose ``input`` is ``chat_input``; returns each question asked with the log
    line of its answer (``RECV: <message from=alice…><body>x</body></message>``)."""
    from slidge.command.base import Form, FormField

    asked: list[tuple[str, str]] = []

    async def answer(_self: object, jid: JID, text: str, **_kwargs: object) -> str:
        wire = f'RECV: <message from="{jid}" to="gw.example.org"><body>x</body></message>'
        asked.append((text, RedactSecrets.redact(wire)))
        return "x"

    async def handler(*_args: object) -> str:
        return "done"

    async def handle_result(*_args: object, **_kwargs: object) -> None:
        return None

    answering = chat_input(answer)
    provider: Any = object.__new__(ChatCommandProvider)
    provider.xmpp = SimpleNamespace(input=lambda *a, **k: answering(provider, *a, **k))
    provider._handle_result = handle_result
    msg = SimpleNamespace(get_from=lambda: ALICE, reply=lambda _text: SimpleNamespace(send=list))
    fields = [FormField("nick", "Nick"), FormField("password", "Password", private=True)]
    await handle_form(provider, Form("Log in", "", fields, handler), msg, None)
    return asked


async def test_bug52_chat_forms_ask_a_password_as_any_other_field_is_still_there() -> None:
    asked = await _questions(HANDLE_FORM, lambda answer: answer)
    kept = f'RECV: <message from="{ALICE}" to="gw.example.org"><body>x</body></message>'
    # The wording fix 52 recognises, and an answer the log shows: fixed upstream? remove it.
    assert asked == [("Nick? (or 'abort')", kept), ("Password? (or 'abort')", kept)]


async def test_fix52_the_answer_to_a_private_question_is_redacted_in_the_log() -> None:
    asked = await _questions(
        fixes_registration._private_prompts_known(HANDLE_FORM),
        fixes_registration._private_answers_hidden,
    )
    assert [(q, "<body>x</body>" in line) for q, line in asked] == [
        ("Nick? (or 'abort')", True),
        ("Password? (or 'abort')", False),
    ]
    assert "<body>[redacted]</body>" in asked[1][1]
    # Once answered, her messages are logged as they are again.
    wire = f'<message from="{ALICE}"><body>hello</body></message>'
    assert RedactSecrets.redact(wire) == wire


def test_fix7_slidge_opens_sqlite_without_wal_is_still_true() -> None:
    import slidge.db.meta

    assert "journal_mode" not in inspect.getsource(slidge.db.meta)


def test_fix7_sqlite_connections_use_wal(tmp_path: Path) -> None:
    import slidge.db.meta
    import sqlalchemy as sa

    get_engine = slidge_fixes.sqlite_wal_engine_factory(slidge.db.meta.get_engine)
    engine = get_engine(f"sqlite:///{tmp_path / 'x.sqlite'}")
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(sa.text("PRAGMA synchronous")).scalar() == 1  # NORMAL
    finally:
        engine.dispose()
    plain = slidge.db.meta.get_engine(f"sqlite:///{tmp_path / 'y.sqlite'}")
    try:
        with plain.connect() as conn:  # the detector's claim, shown: slidge alone is not WAL
            assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "delete"
    finally:
        plain.dispose()


# -- fix 8: one archive commit per tick, on a real SQLite database --------------------


def test_bug8_archive_commits_every_message_is_still_there() -> None:
    from slidge.group.archive import MessageArchive

    assert MessageArchive.add is not fixes_archive._archive_add
    source = inspect.getsource(MessageArchive.add)
    assert "orm.commit()" in source
    assert "add_message" in source


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from slidge.core import config

    monkeypatch.setattr(config, "HOME_DIR", tmp_path, raising=False)
    with slidge_store(tmp_path / "slidge.sqlite") as store:
        yield store


def _room(store: Any, legacy_id: str) -> Any:
    from slidge.db.models import Room

    with store.session(expire_on_commit=False) as orm:
        return orm.query(Room).filter_by(legacy_id=legacy_id).one()


def _rows(store: Any) -> list[tuple[str, str]]:
    import sqlalchemy as sa
    from slidge.db.models import ArchivedMessage, Room

    with store.session() as orm:
        query = (
            sa.select(Room.legacy_id, ArchivedMessage.stanza_id)
            .join(Room, Room.id == ArchivedMessage.room_id)
            .order_by(ArchivedMessage.id)
        )
        return [(room, stanza_id) for room, stanza_id in orm.execute(query)]


def _message(stanza_id: str, body: str = "hello") -> Any:
    from slixmpp import Message
    from slixmpp.plugins.xep_0203 import stanza as delay
    from slixmpp.plugins.xep_0359 import stanza as stanza_id_stanza
    from slixmpp.xmlstream import register_stanza_plugin

    # what slidge's XEP plugins do at start-up (slixmpp leaves it unannotated)
    stanza_id_stanza.register_plugins()  # type: ignore[no-untyped-call]
    register_stanza_plugin(Message, delay.Delay)
    msg = Message()  # type: ignore[no-untyped-call]  # slixmpp: unannotated __init__
    msg["type"] = "groupchat"
    msg["body"] = body
    msg["stanza_id"]["id"] = stanza_id
    return msg


@pytest.fixture
def batched() -> Iterator[None]:
    from slidge.db.store import MAMStore
    from slidge.group.archive import MessageArchive

    add = MessageArchive.__dict__["add"]
    reads = {name: MAMStore.__dict__[name] for name in slidge_fixes.MAM_READS}
    slidge_fixes.batch_archive_writes()
    try:
        yield
    finally:
        slidge_fixes.ARCHIVE.flush()
        MessageArchive.add = add  # type: ignore[method-assign]
        for name, attribute in reads.items():
            setattr(MAMStore, name, attribute)


async def test_fix8_archive_rows_wait_for_the_tick_and_reads_see_them(
    store: Any, batched: None
) -> None:
    from slidge.group.archive import MessageArchive

    a = MessageArchive(_room(store, "#a"), store)
    b = MessageArchive(_room(store, "#b"), store)
    a.add(_message("1"))
    b.add(_message("2"))
    a.add(_message("3"))
    assert len(slidge_fixes.ARCHIVE) == 3
    assert _rows(store) == []  # not written yet: they wait for the tick
    assert [m.id for m in a.get_all()] == ["1", "3"]  # a read flushes first
    assert _rows(store) == [("#a", "1"), ("#b", "2"), ("#a", "3")]
    a.add(_message("4"))
    await asyncio.sleep(slidge_fixes.ARCHIVE_TICK * 4)  # the tick writes them
    assert len(slidge_fixes.ARCHIVE) == 0
    assert _rows(store)[-1] == ("#a", "4")


async def test_fix8_duplicates_are_merged_as_slidge_does(store: Any, batched: None) -> None:
    from slidge.group.archive import MessageArchive

    a = MessageArchive(_room(store, "#a"), store)
    a.add(_message("1", "first"))
    a.add(_message("1", "again"))  # same stanza id, in the same batch
    a.add(_message("2"), legacy_msg_id="L")
    a.add(_message("3"), legacy_msg_id="L")  # same legacy id: slidge updates the row
    slidge_fixes.ARCHIVE.flush()
    a.add(_message("1", "third"))  # and across batches (the row takes the new time)
    assert [(m.id, m.stanza["body"]) for m in a.get_all()] == [("3", "hello"), ("1", "third")]
    a.add(_message("4", "edited"), legacy_msg_id="L")  # legacy id of a stored row: replaced
    assert [(m.id, m.stanza["body"]) for m in a.get_all()] == [("1", "third"), ("4", "edited")]
    assert len(_rows(store)) == 2


async def test_fix8_a_full_batch_is_written_at_once(store: Any, batched: None) -> None:
    from slidge.group.archive import MessageArchive

    a = MessageArchive(_room(store, "#a"), store)
    for i in range(slidge_fixes.ARCHIVE_BATCH):
        a.add(_message(str(i)))
    assert len(slidge_fixes.ARCHIVE) == 0
    assert len(_rows(store)) == slidge_fixes.ARCHIVE_BATCH


async def test_fix8_rows_of_a_deleted_room_are_dropped_not_fatal(store: Any, batched: None) -> None:
    from slidge.db.models import Room
    from slidge.group.archive import MessageArchive

    a = MessageArchive(_room(store, "#a"), store)
    b = MessageArchive(_room(store, "#b"), store)
    a.add(_message("1"))
    b.add(_message("2"))
    with store.session() as orm:
        orm.delete(orm.query(Room).filter_by(legacy_id="#b").one())
        orm.commit()
    slidge_fixes.ARCHIVE.flush()
    assert _rows(store) == [("#a", "1")]


def test_fix8_without_an_event_loop_rows_are_written_at_once(store: Any, batched: None) -> None:
    from slidge.group.archive import MessageArchive

    MessageArchive(_room(store, "#a"), store).add(_message("1"))
    assert _rows(store) == [("#a", "1")]


def _archived(store: Any) -> list[tuple[Any, ...]]:
    import sqlalchemy as sa

    with store.session() as orm:
        query = sa.text(
            "SELECT room_id, stanza_id, author_jid, source, legacy_id, stanza, "
            "displayed_by_user FROM mam ORDER BY id"
        )
        return [tuple(row) for row in orm.execute(query)]


def test_fix8_and_16_write_the_rows_slidge_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same messages archived by slidge's own ``add`` and by fixes 8 and 16 (its copy
    made from the XML, written with one Core INSERT per tick): the same columns."""
    from slidge.core import config
    from slidge.group.archive import MessageArchive
    from slixmpp import JID, Message
    from slixmpp.xmlstream import ET

    from tests.unit.test_slidge_speed import _component_stream, _register_message_plugins

    monkeypatch.setattr(config, "HOME_DIR", tmp_path, raising=False)
    _register_message_plugins()
    stream = _component_stream()
    contact = type("Contact", (), {"jid": JID("juliet%irc@irc.example.org/x")})()
    room = type("Muc", (), {"is_anonymous": False, "jid": JID("#a%irc@irc.example.org")})()
    part = type(
        "Part",
        (),
        {"muc": room, "role": "participant", "affiliation": None, "contact": contact},
    )()

    def messages() -> list[tuple[Message, str | None]]:
        line = (
            '<message xmlns="jabber:component:accept" type="groupchat" '
            'from="#a%irc@irc.example.org/juliet" xml:lang="en"><body>hi &amp; bye</body>'
            '<active xmlns="http://jabber.org/protocol/chatstates" />'
            '<markable xmlns="urn:xmpp:chat-markers:0" />'
            '<stanza-id xmlns="urn:xmpp:sid:0" id="ID" by="#a%irc@irc.example.org" />'
            "</message>"
        )
        out = []
        for i, legacy in ((1, "L1"), (2, None), (3, "L1")):
            out.append(
                (Message(xml=ET.fromstring(line.replace("ID", f"s{i}")), stream=stream), legacy)  # type: ignore[no-untyped-call]
            )
        return out

    rows = []
    for fixed in (False, True):
        with slidge_store(tmp_path / f"{fixed}.sqlite") as store:
            add = MessageArchive.__dict__["add"]
            if fixed:
                slidge_fixes.batch_archive_writes()
            try:
                archive = MessageArchive(_room(store, "#a"), store)
                for msg, legacy in messages():
                    archive.add(msg, part, legacy_msg_id=legacy)
                slidge_fixes.ARCHIVE.flush()
                rows.append(_archived(store))
            finally:
                MessageArchive.add = add  # type: ignore[method-assign]
    assert len(rows[0]) == 2  # the third replaced the first (same legacy id), as slidge does
    assert rows[1] == rows[0]
