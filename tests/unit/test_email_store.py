"""The email plugin's own memory (delivered messages, contact-request notices), the
registration form, its configuration, and the test mail server's configuration files."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.config import validate
from gateway.localservers.mail import Dovecot, MailServer, Postfix
from legacy_plugins.email.config import Config, is_loopback
from legacy_plugins.email.store import AccountStore
from legacy_plugins.email.translate import ChatId, FormError, LoginParams, MsgId, login_params

# -- the id map ------------------------------------------------------------------------------


def test_delivered_messages_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "passerelle.sqlite"
    store = AccountStore(path)
    store.remember(MsgId(12), ChatId(10), "bob@example.org", "hello")
    store.close()
    again = AccountStore(path)
    delivered = again.delivered(MsgId(12))
    assert delivered is not None
    assert (delivered.chat_id, delivered.sender, delivered.body) == (10, "bob@example.org", "hello")
    assert again.delivered(MsgId(13)) is None
    again.close()


def test_remember_replaces_and_forget_removes(tmp_path: Path) -> None:
    store = AccountStore(tmp_path / "s.sqlite")
    store.remember(MsgId(5), ChatId(10), "bob@example.org", "old")
    store.remember(MsgId(5), ChatId(10), "bob@example.org", "new")
    delivered = store.delivered(MsgId(5))
    assert delivered is not None and delivered.body == "new"
    store.forget(MsgId(5))
    assert store.delivered(MsgId(5)) is None
    store.close()


def test_contact_request_notices_are_given_once(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = AccountStore(path)
    assert store.noticed(ChatId(12)) is False
    assert store.noticed(ChatId(12)) is True
    store.close()
    again = AccountStore(path)
    assert again.noticed(ChatId(12)) is True
    assert again.noticed(ChatId(13)) is False
    again.close()


def test_old_rows_are_pruned(tmp_path: Path) -> None:
    store = AccountStore(tmp_path / "s.sqlite")
    store.remember(MsgId(1), ChatId(10), "a@example.org", "x")
    store.remember(MsgId(30_000), ChatId(10), "a@example.org", "y")
    assert store.delivered(MsgId(1)) is None
    assert store.delivered(MsgId(30_000)) is not None
    store.close()


# -- the registration form ----------------------------------------------------------------------

FORM = {
    "address": " Alice@Example.org ",
    "password": "secret ",
    "imap_host": "",
    "imap_port": "",
    "imap_security": "automatic",
    "smtp_host": None,
    "smtp_port": None,
    "smtp_security": None,
}


def parse(allow_plaintext: bool = False, **changes: str | None) -> LoginParams:
    return login_params({**FORM, **changes}, allow_plaintext=allow_plaintext, is_local=is_loopback)


def test_minimal_form_uses_autoconfig() -> None:
    login = parse()
    assert login.address == "alice@example.org"
    assert login.password == "secret "  # passwords are not trimmed
    assert login.to_core() == {"addr": "alice@example.org", "password": "secret "}


def test_explicit_servers() -> None:
    login = parse(
        imap_host="imap.example.org", imap_port="993", imap_security="ssl",
        smtp_host="smtp.example.org", smtp_port="587", smtp_security="starttls",
    )  # fmt: skip
    assert login.to_core() == {
        "addr": "alice@example.org",
        "password": "secret ",
        "imapServer": "imap.example.org",
        "imapPort": 993,
        "imapSecurity": "ssl",
        "smtpServer": "smtp.example.org",
        "smtpPort": 587,
        "smtpSecurity": "starttls",
    }


BAD_FORMS = [
    # changes                                              condition      words in the text
    ({"address": "alice"}, "bad-request", "not an email address"),
    ({"password": ""}, "bad-request", "password"),
    ({"imap_port": "99999"}, "bad-request", "imap port"),
    ({"smtp_port": "25a"}, "bad-request", "smtp port"),
    ({"imap_security": "tls"}, "bad-request", "choose one of"),
    ({"imap_security": "plain", "imap_host": "imap.example.org"}, "not-allowed", "unencrypted"),
    ({"smtp_security": "plain"}, "not-allowed", "unencrypted"),
]


@pytest.mark.parametrize(("changes", "condition", "words"), BAD_FORMS)
def test_bad_forms(changes: dict[str, str], condition: str, words: str) -> None:
    with pytest.raises(FormError) as err:
        login_params({**FORM, **changes}, allow_plaintext=False, is_local=is_loopback)
    assert err.value.condition == condition
    assert words in str(err.value)


def test_resubmitted_forms_carry_other_types() -> None:
    form = {**FORM, "remove": False, "imap_security": ["ssl"], "smtp_security": ["a", "b"]}
    login = login_params(form, allow_plaintext=False, is_local=is_loopback)
    assert login.imap_security == "ssl"
    assert login.smtp_security is None


def test_plaintext_is_fine_on_loopback_or_when_allowed() -> None:
    parse(imap_security="plain", imap_host="127.0.0.1", smtp_security="plain", smtp_host="::1")
    parse(imap_security="plain", imap_host="localhost")
    parse(allow_plaintext=True, imap_security="plain", imap_host="imap.example.org")


@pytest.mark.parametrize(
    ("host", "local"),
    [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("localhost", True),
     ("LOCALHOST", True), ("10.0.0.1", False), ("example.org", False), ("", False)],
)  # fmt: skip
def test_is_loopback(host: str, local: bool) -> None:
    assert is_loopback(host) is local


# -- configuration ---------------------------------------------------------------------------------


def test_config_defaults_and_limits() -> None:
    cfg = validate(Config, {"jid": "email.example.org", "secret": "s"})
    assert cfg.keep_mail_on_server and not cfg.allow_plaintext
    with pytest.raises(ValidationError):
        validate(Config, {"jid": "email.example.org", "secret": "s", "configure_timeout": 0})
    with pytest.raises(ValidationError):
        validate(Config, {"jid": "email.example.org", "secret": "s", "unknown": 1})


# -- the test mail server's configuration ------------------------------------------------------------


def test_mail_server_configs_stay_on_loopback(tmp_path: Path) -> None:
    dovecot = Dovecot(tmp_path, tmp_path / "state", "mail.test", 5)
    dovecot.imap_port, dovecot.lmtp_port, dovecot.auth_port = 10143, 10024, 10025
    postfix = Postfix(tmp_path, tmp_path / "state", dovecot, 5)
    postfix.smtp_port = 10587
    conf = dovecot.render_config()
    assert "listen = 127.0.0.1" in conf
    assert "port = 10143" in conf and "port = 10024" in conf and "port = 10025" in conf
    assert "first_valid_uid = 8" in conf
    assert "!include" not in conf  # never the system's conf.d
    main = postfix.render_main_cf()
    assert "inet_interfaces = 127.0.0.1" in main
    assert "virtual_transport = lmtp:inet:127.0.0.1:10024" in main
    assert "smtpd_sasl_path = inet:127.0.0.1:10025" in main
    assert f"maillog_file = {tmp_path / 'postfix.log'}" in main
    master = postfix.render_master_cf()
    assert master.splitlines()[1].startswith("127.0.0.1:10587 inet")
    assert "postlog" in master


def test_mailbox_names_are_lower_cased_and_checked(tmp_path: Path) -> None:
    server = MailServer(tmp_path, domain="mail.test")
    assert server.add_user("Bob", "pw") == "bob@mail.test"
    assert server.users == {"bob": "pw"}
    with pytest.raises(Exception, match="cannot be used"):
        server.add_user("a:b", "pw")
    with pytest.raises(RuntimeError, match="start"):
        _ = server.smtp_port
