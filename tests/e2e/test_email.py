"""Stories of an XMPP user on email through Passerelle, with ordinary email correspondents.

A real Postfix + Dovecot on loopback carries the mail; the correspondents are people with
a mail program (SMTP and IMAP, nothing else).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from slixmpp.exceptions import IqError

from gateway.localservers.mail import MailServer
from tests.e2e.conftest import EMAIL_JID, PasserelleProcess
from tests.e2e.email_helpers import (
    PlainPeer,
    contact_jid,
    logged_in,
    mail_server_fixture,  # noqa: F401  (the mail_server fixture)
    new_user,
    next_message_containing,
    registration_fields,
    signed_up_user,
    text_of,
)
from tests.e2e.xmpp_client import Client, child_text

pytestmark = pytest.mark.e2e
NewClient = Callable[..., "asyncio.Future[Client]"]
StartPasserelle = Callable[..., PasserelleProcess]


async def test_mail_server_carries_mail_between_two_mailboxes(mail_server: MailServer) -> None:
    alice = PlainPeer.new(mail_server, "alice")
    bob = PlainPeer.new(mail_server, "bob")
    await alice.send(bob.address, "Lunch?", "At noon, as usual.")
    got = await bob.next_mail()
    assert got["Subject"] == "Lunch?"
    assert "At noon" in text_of(got)


async def test_wrong_password_is_refused_and_nothing_is_stored(
    start_passerelle: StartPasserelle, new_client: NewClient, mail_server: MailServer
) -> None:
    passerelle, xmpp, address, password = await new_user(
        start_passerelle, new_client, mail_server, "wrongpw", 'log_level = "DEBUG"'
    )
    fields = registration_fields(mail_server, address, "not-" + password)
    with pytest.raises(IqError) as err:
        await xmpp.register(EMAIL_JID, **fields)
    assert err.value.condition == "not-authorized"
    assert "authentication failed" in err.value.text.lower(), err.value.text
    accounts = passerelle.config.parent / "data" / "email" / "accounts"
    assert not accounts.exists() or not any(accounts.iterdir())
    # With the right password, typed in a chat with the gateway (`register` asks the
    # form's fields one by one there), the same user gets in.
    answers = {
        "Email address": address,
        "Password": password,
        "Your name": "Wanda",
        "IMAP server": "127.0.0.1",
        "IMAP port": str(mail_server.imap_port),
        "IMAP security": "plain",
        "SMTP server": "127.0.0.1",
        "SMTP port": str(mail_server.smtp_port),
        "SMTP security": "plain",
    }
    said, asked = await xmpp.answer_chat_command(
        EMAIL_JID, "register", answers, until="^Welcome to email", timeout=90
    )
    assert asked[: len(answers)] == list(answers), said
    await logged_in(xmpp)
    assert passerelle.proc.poll() is None
    # At DEBUG both are logged (the form, and her answer in the chat) with the password
    # redacted, and neither password is in any line. On disk it is only in her Delta
    # Chat account, as the README says; slidge's database has only her address.
    assert any("RECV: <iq" in line and "[redacted]" in line for line in passerelle.lines)
    assert any(
        "RECV: <message" in line and "<body>[redacted]</body>" in line for line in passerelle.lines
    )
    assert not [line for line in passerelle.lines if password in line]
    assert all(accounts in path.parents for path in passerelle.files_holding(password))


async def test_plaintext_to_a_remote_server_is_refused(
    start_passerelle: StartPasserelle, new_client: NewClient, mail_server: MailServer
) -> None:
    _, xmpp, address, password = await new_user(start_passerelle, new_client, mail_server, "plain")
    fields = registration_fields(mail_server, address, password)
    fields["imap_host"] = "imap.example.org"
    with pytest.raises(IqError) as err:
        await xmpp.register(EMAIL_JID, **fields)
    assert err.value.condition == "not-allowed"
    assert "unencrypted" in err.value.text


async def test_one_to_one_with_an_ordinary_email_user(
    start_passerelle: StartPasserelle, new_client: NewClient, mail_server: MailServer
) -> None:
    _, xmpp, address, _ = await signed_up_user(
        start_passerelle, new_client, mail_server, "anna", "Anna Lyse"
    )
    bob = PlainPeer.new(mail_server, "Bob", "Bob Plain")
    bob_jid = contact_jid(bob.address)

    # Anna writes first: bob gets an ordinary mail, readable in any mail program.
    xmpp.send_chat(bob_jid, "Hello Bob, this is Anna on XMPP")
    mail = await bob.next_mail()
    assert "Hello Bob, this is Anna on XMPP" in text_of(mail)
    assert mail["From"].addresses[0].addr_spec == address
    assert mail["From"].addresses[0].display_name == "Anna Lyse"
    assert "-----BEGIN PGP" not in mail.as_string()

    # Bob answers from his mail program; anna reads it from bob's contact.
    await bob.send(
        address, "Re: hello", "Hi Anna! Plain mail works.", In_Reply_To=mail["Message-ID"]
    )
    answer = await xmpp.next_message(bob_jid, timeout=30)
    assert "Hi Anna! Plain mail works." in answer["body"]


async def test_classic_mail_from_a_stranger_is_a_contact_request(
    start_passerelle: StartPasserelle, new_client: NewClient, mail_server: MailServer
) -> None:
    _, xmpp, address, _password = await signed_up_user(
        start_passerelle, new_client, mail_server, "cora"
    )
    stranger = PlainPeer.new(mail_server, "Stranger", "Sam Stranger")

    await stranger.send(address, "Quarterly report", "Please find the numbers below.")
    notice = await next_message_containing(xmpp, EMAIL_JID, "Contact request", timeout=30)
    assert stranger.address in notice["body"]
    message = await xmpp.next_message(contact_jid(stranger.address), timeout=10)
    # The subject of a classic mail is shown with its text.
    assert "Quarterly report" in message["body"]
    assert "Please find the numbers below." in message["body"]
    assert contact_jid(stranger.address) not in xmpp.client_roster

    # Accepting puts the stranger in the roster.
    xmpp.send_chat(EMAIL_JID, f"accept {stranger.address}")
    await xmpp.next_roster_push(contact_jid(stranger.address))


async def test_mail_sent_while_passerelle_is_down_arrives_once(
    start_passerelle: StartPasserelle,
    new_client: NewClient,
    mail_server: MailServer,
    tmp_path: Path,
) -> None:
    passerelle, xmpp, address, _password = await signed_up_user(
        start_passerelle, new_client, mail_server, "dora"
    )
    bob = PlainPeer.new(mail_server, "bob")
    bob_jid = await bob.exchange(xmpp, address, "first contact", "before the restart")

    assert await asyncio.to_thread(passerelle.stop) == 0
    await bob.send(address, "while you were away", "sent while Passerelle was down")

    # Same configuration and data directory, started again.
    restarted = PasserelleProcess(passerelle.config)
    try:
        first = await restarted.wait_for("Slidge has successfully started", timeout=90)
        await restarted.wait_for("Slidge has successfully started", after=first + 1, timeout=90)
        got = await xmpp.next_message(bob_jid, timeout=40)
        assert "sent while Passerelle was down" in got["body"]
        # Nothing delivered twice: neither the old message nor the new one.
        with pytest.raises(TimeoutError):
            again = await xmpp.next_message(bob_jid, timeout=5)
            pytest.fail(f"delivered twice: {again['body']!r}")
    finally:
        await asyncio.to_thread(restarted.stop)


async def test_html_mail_arrives_as_text_and_as_the_whole_mail(
    start_passerelle: StartPasserelle, new_client: NewClient, mail_server: MailServer
) -> None:
    _, xmpp, address, _password = await signed_up_user(
        start_passerelle, new_client, mail_server, "hana"
    )
    shop = PlainPeer.new(mail_server, "shop", "The Shop")
    html = (
        "<html><body><h1>Spring sale</h1><p>Everything <b>half price</b>.</p>"
        "<table><tr><td>Boots</td><td>40 EUR</td></tr></table></body></html>"
    )
    await shop.send(address, "Spring sale", "Everything half price.", html=html)
    shop_jid = contact_jid(shop.address)
    got = await xmpp.email_next(shop_jid, "{jabber:x:oob}x", timeout=40)
    url = child_text(got, "{jabber:x:oob}x/{jabber:x:oob}url")
    assert url.endswith(".html"), url
    text = await xmpp.next_message(shop_jid, timeout=10)
    assert "Spring sale" in text["body"] and "half price" in text["body"]


async def test_block_hides_a_stranger(
    start_passerelle: StartPasserelle, new_client: NewClient, mail_server: MailServer
) -> None:
    _, xmpp, address, _password = await signed_up_user(
        start_passerelle, new_client, mail_server, "ines"
    )
    spam = PlainPeer.new(mail_server, "spam")
    await spam.send(address, "You won", "Claim your prize")
    await next_message_containing(xmpp, EMAIL_JID, "Contact request", timeout=30)
    xmpp.send_chat(EMAIL_JID, f"block {spam.address}")
    await next_message_containing(xmpp, EMAIL_JID, "is blocked")
    await spam.send(address, "You won again", "Claim it now")
    friend = PlainPeer.new(mail_server, "friend")
    await friend.send(address, "Dinner", "Dinner tonight?")
    # The friend's mail, sent after the spam, arrives; the spam never does.
    async with asyncio.timeout(40):
        while True:
            msg = await xmpp.messages.get()
            assert msg["from"].bare != contact_jid(spam.address) or "won again" not in msg["body"]
            if msg["from"].bare == contact_jid(friend.address):
                break


async def test_unregister_deletes_the_account(
    start_passerelle: StartPasserelle, new_client: NewClient, mail_server: MailServer
) -> None:
    passerelle, xmpp, _address, _password = await signed_up_user(
        start_passerelle, new_client, mail_server, "jude"
    )
    accounts = passerelle.config.parent / "data" / "email" / "accounts"
    assert len(list(accounts.iterdir())) == 1
    await xmpp.unregister(EMAIL_JID)
    for _ in range(50):
        if not any(accounts.iterdir()):
            break
        await asyncio.sleep(0.2)
    assert not any(accounts.iterdir()), list(accounts.iterdir())
    assert passerelle.proc.poll() is None


def _core_pids(data_dir: Path) -> list[int]:
    """The deltachat-rpc-server processes whose accounts live under ``data_dir``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if not (proc / "exe").resolve().name == "deltachat-rpc-server":
                continue
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(e.startswith(b"DC_ACCOUNTS_PATH=" + str(data_dir).encode()) for e in environ):
            pids.append(int(proc.name))
    return pids


async def test_a_crashed_delta_chat_core_is_restarted(
    start_passerelle: StartPasserelle, new_client: NewClient, mail_server: MailServer
) -> None:
    passerelle, xmpp, _address, _password = await signed_up_user(
        start_passerelle, new_client, mail_server, "kira"
    )
    data = passerelle.config.parent / "data" / "email"
    pids = await asyncio.to_thread(_core_pids, data)
    assert len(pids) == 1, pids
    os.kill(pids[0], signal.SIGKILL)
    await next_message_containing(xmpp, EMAIL_JID, "Mail is interrupted", timeout=30)
    await next_message_containing(xmpp, EMAIL_JID, "Mail is flowing again", timeout=60)
    assert passerelle.proc.poll() is None
    bob = PlainPeer.new(mail_server, "bob")
    xmpp.send_chat(contact_jid(bob.address), "still here after the crash")
    assert "still here after the crash" in text_of(await bob.next_mail())


async def test_registering_again_keeps_the_account_and_its_mail(
    start_passerelle: StartPasserelle, new_client: NewClient, mail_server: MailServer
) -> None:
    _, xmpp, address, password = await signed_up_user(
        start_passerelle, new_client, mail_server, "lena"
    )
    bob = PlainPeer.new(mail_server, "bob")
    bob_jid = await bob.exchange(xmpp, address, "before registering again", "first answer")

    # A wrong password is refused and changes nothing; the right one is accepted again.
    with pytest.raises(IqError) as err:
        await xmpp.register(EMAIL_JID, **registration_fields(mail_server, address, "wrong"))
    assert err.value.condition == "not-authorized", err.value.text
    await xmpp.register(EMAIL_JID, **registration_fields(mail_server, address, password))

    await bob.send(address, "Re: before", "second answer")
    got = await xmpp.next_message(bob_jid, timeout=40)
    assert "second answer" in got["body"], got["body"]  # not "first answer" again
