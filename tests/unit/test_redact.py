import logging

import pytest

from gateway.child import RedactSecrets


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
    ],
)
def test_wire_secrets_are_redacted(wire: str, secret: str) -> None:
    redacted = RedactSecrets.redact(wire)
    assert secret not in redacted
    assert "[redacted]" in redacted


def test_other_fields_are_kept() -> None:
    wire = '<field var="nickname"><value>alice</value></field>'
    assert RedactSecrets.redact(wire) == wire


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
