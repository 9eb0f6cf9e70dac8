import logging
from typing import Any

import pytest

from gateway.redact import RedactSecrets, private_answer_from


@pytest.mark.parametrize(
    ("wire", "secret"),
    [
        ("<query xmlns='jabber:iq:register'><password>hunter2</password></query>", "hunter2"),
        ("<handshake>3c5a1e0f9b</handshake>", "3c5a1e0f9b"),
        ('<field var="password" type="text-private"><value>hunter2</value></field>', "hunter2"),
        ('<field var="sasl_password"><value>p@ss</value></field>', "p@ss"),
        ('<field label="x" var="access_token"><value>syt_abc</value></field>', "syt_abc"),
        (
            '<field var="nickname"><value>x</value></field><field var="secret"><value>s</value></field>',
            "<value>s</value>",
        ),
        # Named as anything, but private: the type says so.
        ('<field type="text-private" var="code"><value>428913</value></field>', "428913"),
        ("<field var='pin' type='text-private' label='PIN'><value>4242</value></field>", "4242"),
    ],
)
def test_wire_secrets_are_redacted(wire: str, secret: str) -> None:
    redacted = RedactSecrets.redact(wire)
    assert secret not in redacted
    assert "[redacted]" in redacted


def test_other_fields_are_kept() -> None:
    wire = '<field var="nickname"><value>alice</value></field>'
    assert RedactSecrets.redact(wire) == wire


@pytest.mark.parametrize(
    "wire",
    [
        # An empty private field leaves the next field's value alone.
        '<field var="password" type="text-private"/><field var="nick"><value>alice</value></field>',
        '<field var="token"></field><field var="nick"><value>alice</value></field>',
    ],
)
def test_an_empty_secret_field_keeps_the_next_fields_value(wire: str) -> None:
    assert RedactSecrets.redact(wire) == wire


ANSWER = '<message to="gw.example.org" type="chat" from="{}"><body>{}</body></message>'


def test_an_awaited_private_answer_is_redacted_only_from_whom_it_is_awaited() -> None:
    mine = ANSWER.format("Alice@Example.org/phone", "hunter2")
    other = ANSWER.format("bob@example.org/pc", "hello")
    assert RedactSecrets.redact(mine) == mine  # nothing awaited
    with private_answer_from("alice@example.org"):
        assert RedactSecrets.redact(f"RECV: {mine}") == "RECV: " + ANSWER.format(
            "Alice@Example.org/phone", "[redacted]"
        )
        assert RedactSecrets.redact(other) == other
        # Cut short by a %.300s, or with a body per language: still hidden.
        assert "hunter" not in RedactSecrets.redact(mine[:-18])
        two = mine.replace("</body>", "</body><body xml:lang='fr'>hunter2</body>")
        assert "hunter2" not in RedactSecrets.redact(two)
        with private_answer_from("alice@example.org"):  # a second question, nested
            pass
        assert "hunter2" not in RedactSecrets.redact(mine)
    assert RedactSecrets.redact(mine) == mine  # answered: the next message is logged


def test_filter_rewrites_debug_record_arguments() -> None:
    record = logging.LogRecord(
        "slixmpp", logging.DEBUG, __file__, 1, "SEND: %s", ("<password>pw1</password>",), None
    )
    assert RedactSecrets().filter(record)
    assert "pw1" not in record.getMessage()


def test_known_secret_values_are_redacted_from_any_logger(caplog: pytest.LogCaptureFixture) -> None:
    original = logging.getLogRecordFactory()
    try:
        RedactSecrets(["component-s3cret", "db-pw"]).install()
        with caplog.at_level(logging.DEBUG):
            logging.getLogger("slidge.util.conf").debug(
                "Setting '%s' to %r", "SECRET", "component-s3cret"
            )
            logging.getLogger("anything").warning("url postgresql://u:db-pw@h/x and %s", ("db-pw",))
    finally:
        logging.setLogRecordFactory(original)
    assert "component-s3cret" not in caplog.text
    assert "db-pw" not in caplog.text
    assert "Setting 'SECRET' to '[redacted]'" in caplog.text


def _registration_form() -> object:
    """A registration form as slidge receives it: a stanza object, not text."""
    from slixmpp import Iq
    from slixmpp.plugins.xep_0004 import stanza as forms
    from slixmpp.xmlstream import register_stanza_plugin

    register_stanza_plugin(Iq, forms.Form)
    iq = Iq()  # type: ignore[no-untyped-call]  # slixmpp's Iq.__init__ is unannotated
    form = iq["form"]
    form.add_field(var="user_id", ftype="text-single", value="@alice:example.org")
    form.add_field(var="password", ftype="text-private", value="hunter2-secret")
    form.add_field(var="recovery_key", ftype="text-private", value="EsTc aaaa bbbb")
    return iq


@pytest.mark.parametrize(
    ("fmt", "wrap"),
    [
        ("received %s", lambda stanza: stanza),
        ("received %r", lambda stanza: stanza),
        ("received %s", lambda stanza: [stanza]),
        ("received %s", lambda stanza: {"form": stanza}),
    ],
    ids=["str", "repr", "in a list", "in a dict"],
)
def test_stanza_objects_are_redacted_too(
    caplog: pytest.LogCaptureFixture, fmt: str, wrap: Any
) -> None:
    stanza = _registration_form()
    assert "hunter2-secret" in str(stanza)  # what would be written without the filter
    original = logging.getLogRecordFactory()
    try:
        RedactSecrets().install()
        with caplog.at_level(logging.DEBUG):
            logging.getLogger("slidge.core.gateway.registration").debug(fmt, wrap(stanza))
    finally:
        logging.setLogRecordFactory(original)
    assert "hunter2-secret" not in caplog.text
    assert "EsTc aaaa" not in caplog.text
    assert "@alice:example.org" in caplog.text  # the rest is still there


def test_other_objects_are_passed_as_they_are() -> None:
    class Jid:
        def __str__(self) -> str:
            return "alice@example.org"

    jid = Jid()
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s %d %s", (jid, 3, None), None)
    assert RedactSecrets().filter(record)
    assert record.args == (jid, 3, None)
    assert record.getMessage() == "alice@example.org 3 None"
