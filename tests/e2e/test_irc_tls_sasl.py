"""Logging in to IRC safely: TLS with verified certificates, SASL PLAIN accounts from real
services (Atheme linked to InspIRCd), NickServ, and server passwords (PASS).

One InspIRCd serves every story of this module: a plain port (the IRC people and the
services-backed server), a TLS port whose certificate a throw-away CA issued for
127.0.0.1 only, and a port whose connect class wants a server password. Atheme is
linked to it, so accounts registered with NickServ can log in with SASL.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.localservers import Atheme, InspIRCd, ServicesLink
from tests.e2e.conftest import IRC_JID, IRC_SECRET, PasserelleProcess
from tests.e2e.irc_helpers import IrcPerson, NewClient, registered, room, server_jid, user
from tests.e2e.xmpp_client import Client

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SERVER_PASSWORD = "open sesame"  # a throw-away test server's


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path


def _issue(out: Path) -> Pki:
    """A CA (trusted by nobody unless told) and a server certificate it signed, valid
    for the IP address 127.0.0.1 only: `localhost` is another name."""
    now = datetime.datetime.now(datetime.UTC)
    valid = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Passerelle test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(out / "ca.pem", out / "server.pem", out / "server.key")
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pki.key.chmod(0o600)
    return pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return _issue(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def inspircd(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[InspIRCd]:
    server = InspIRCd(
        tmp_path_factory.mktemp("inspircd"),
        tls_cert=pki.cert,
        tls_key=pki.key,
        server_password=SERVER_PASSWORD,
        services=ServicesLink(),
    )
    with server:
        yield server


@pytest.fixture(scope="module")
def atheme(tmp_path_factory: pytest.TempPathFactory, inspircd: InspIRCd) -> Iterator[Atheme]:
    with Atheme(tmp_path_factory.mktemp("atheme"), uplink=inspircd) as services:
        yield services


def networks(inspircd: InspIRCd, pki: Pki, extra: str = "") -> str:
    """Admin-defined servers, all on the test InspIRCd: `untrusted` (TLS, the system's
    CAs), `trusted` (TLS, the test CA), `misnamed` (TLS, the test CA, but reached as
    `localhost`), `unverified` (TLS, no certificate check), `services` (plain; Atheme
    behind it) and `locked` (a server password); `extra`: more TOML at the end."""
    tls = inspircd.tls_port
    return f"""
[networks.irc]
jid = "{IRC_JID}"
secret = "{IRC_SECRET}"
log_level = "DEBUG"

[networks.irc.servers.untrusted]
host = "127.0.0.1"
port = {tls}

[networks.irc.servers.trusted]
host = "127.0.0.1"
port = {tls}
ca_file = "{pki.ca}"

[networks.irc.servers.misnamed]
host = "localhost"
port = {tls}
ca_file = "{pki.ca}"

[networks.irc.servers.unverified]
host = "127.0.0.1"
port = {tls}
verify_certificate = false

[networks.irc.servers.services]
host = "127.0.0.1"
port = {inspircd.port}
tls = false

[networks.irc.servers.locked]
host = "127.0.0.1"
port = {inspircd.password_port}
tls = false
{extra}
"""


@pytest.fixture
async def gateway(
    inspircd: InspIRCd, pki: Pki, start_passerelle: Callable[..., PasserelleProcess]
) -> PasserelleProcess:
    process = start_passerelle(networks=networks(inspircd, pki), wait=False)
    await process.wait_for(r"^irc \| .*Slidge has successfully started")
    return process


def irc_log(gateway: PasserelleProcess) -> str:
    """What the IRC plugin logged (at DEBUG: every line it sent and received)."""
    return "\n".join(line for line in gateway.lines if "legacy_plugins.irc" in line)


async def expect_from(client: Client, jid: str, pattern: str) -> str:
    """The body of the next message from `jid` that matches `pattern` (others skipped)."""
    async with asyncio.timeout(20):
        while True:
            body = str((await client.next_message(jid))["body"])
            if re.search(pattern, body):
                return body


# --- TLS -------------------------------------------------------------------------------


async def test_a_certificate_nobody_trusts_or_for_another_name_is_refused(
    gateway: PasserelleProcess, inspircd: InspIRCd, new_client: NewClient
) -> None:
    alice, nick = await registered(new_client, "alice")
    # TLS is verified against the system's CAs by default: the test CA is not one.
    pres = await alice.join_muc(room("#story51", "untrusted"), nick)
    assert pres["type"] == "error", pres
    text = pres["error"]["text"]
    assert "'untrusted'" in text and "certificate" in text and "not trusted" in text, text
    assert "ca_file" in text, text  # what the admin can do about it
    # Even with the CA trusted, the certificate must name the host: it is for 127.0.0.1.
    pres = await alice.join_muc(room("#story51", "misnamed"), nick)
    assert pres["type"] == "error", pres
    text = pres["error"]["text"]
    assert "'misnamed'" in text and "not valid for 'localhost'" in text, text
    # No IRC connection was made for her: nobody by her nick is on the server.
    bob = await IrcPerson.connect(inspircd.port, "bob51")
    try:
        bob.send(f"WHOIS {nick}")
        await bob.expect(rf" 401 bob51 {nick} ")
    finally:
        await bob.close()
    assert gateway.proc.poll() is None


async def test_with_the_ca_trusted_the_user_talks_over_tls(
    gateway: PasserelleProcess, inspircd: InspIRCd, new_client: NewClient
) -> None:
    alice, nick = await registered(new_client, "alice")
    bob = await IrcPerson.connect(inspircd.port, "bob52")
    try:
        await bob.join("#story52")
        room52 = room("#story52", "trusted")
        pres = await alice.join_muc(room52, nick)
        assert pres["type"] != "error", pres
        bob.say("#story52", "hello over TLS")
        assert (await alice.next_groupchat(room52, "bob52"))["body"] == "hello over TLS"
        alice.send_groupchat(room52, "hello back")
        assert await bob.heard(nick, "#story52") == "hello back"
        # The server says her connection is a TLS one (671, "is using a secure connection").
        bob.send(f"WHOIS {nick}")
        await bob.expect(rf" 671 bob52 {nick} :is using a secure connection")
    finally:
        await bob.close()
    # An admin can also switch the check off for a test server (verify_certificate).
    pres = await alice.join_muc(room("#story52b", "unverified"), nick)
    assert pres["type"] != "error", pres


# --- accounts: SASL PLAIN and NickServ --------------------------------------------------


async def register_account(inspircd: InspIRCd, nick: str, password: str) -> None:
    """Register `nick` with NickServ from a raw IRC client, then leave."""
    owner = await IrcPerson.connect(inspircd.port, nick)
    try:
        owner.say("NickServ", f"REGISTER {password} {nick}@example.org")
        # Atheme writes the account name in bold (^B): match around it.
        await owner.expect(rf"NickServ!\S+ NOTICE {nick} :\W*{nick}\W* is now registered")
    finally:
        await owner.close()


async def logged_in_as(inspircd: InspIRCd, nick: str) -> str | None:
    """The account `nick` is logged in to, by WHOIS (330) from a raw client, or None."""
    who = await IrcPerson.connect(inspircd.port, "whois" + nick[-8:])
    try:
        who.send(f"WHOIS {nick}")
        await who.expect(rf" 318 {who.nick} {nick} ")
        for line in who.lines:
            if m := re.search(rf" 330 {who.nick} {nick} (\S+) :is logged in as", line):
                return m.group(1)
        return None
    finally:
        await who.close()


async def test_sasl_logs_the_user_in_once_she_set_her_account_password(
    gateway: PasserelleProcess, inspircd: InspIRCd, atheme: Atheme, new_client: NewClient
) -> None:
    alice, nick = await registered(new_client, "alice")
    await register_account(inspircd, nick, "s3cretpass")
    room53 = room("#story53", "services")

    # Without an account password she is on IRC, not logged in.
    assert (await alice.join_muc(room53, nick))["type"] != "error"
    assert await logged_in_as(inspircd, nick) is None

    # She gives her account password on the server's JID, and reconnects (QUIT).
    result = await alice.run_command(
        server_jid("services"), "configure", account_password="s3cretpass"
    )
    assert result["command"]["status"] == "completed"
    alice.send_chat(server_jid("services"), "QUIT :with my account this time")
    await expect_from(alice, server_jid("services"), r"^Reconnected to services")
    assert await logged_in_as(inspircd, nick) == nick
    # The password never reaches the wire log (AUTHENTICATE is redacted).
    assert "AUTHENTICATE [redacted]" in irc_log(gateway)
    # Nor any DEBUG line: slixmpp logs each stanza it receives (the ad-hoc form with
    # the password among them) as an object, redacted when the record is made.
    assert any("RECV: <iq" in line for line in gateway.lines)
    assert not [line for line in gateway.lines if "s3cret" in line]


async def test_a_wrong_account_password_is_reported_and_she_stays_unauthenticated(
    gateway: PasserelleProcess, inspircd: InspIRCd, atheme: Atheme, new_client: NewClient
) -> None:
    alice, nick = await registered(new_client, "alice")
    await register_account(inspircd, nick, "therightone")
    await alice.run_command(server_jid("services"), "configure", account_password="wrongone")

    room54 = room("#story54", "services")
    assert (await alice.join_muc(room54, nick))["type"] != "error"
    told = await expect_from(alice, server_jid("services"), "SASL")
    assert f"SASL login to services as {nick} failed" in told, told
    assert "without logging in" in told and "configure" in told, told
    assert await logged_in_as(inspircd, nick) is None
    # The connection goes on without the account: she still talks.
    bob = await IrcPerson.connect(inspircd.port, "bob54")
    try:
        await bob.join("#story54")
        alice.send_groupchat(room54, "still here")
        assert await bob.heard(nick, "#story54") == "still here"
    finally:
        await bob.close()


async def test_without_sasl_the_account_password_goes_to_nickserv(
    tmp_path: Path,
    inspircd: InspIRCd,
    pki: Pki,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
) -> None:
    # Another network whose server relays no SASL: accounts are NickServ's only.
    plain = InspIRCd(tmp_path / "nosasl", services=ServicesLink(sasl=False))
    with plain, Atheme(tmp_path / "nosasl-atheme", uplink=plain):
        server = f"""
[networks.irc.servers.nosasl]
host = "127.0.0.1"
port = {plain.port}
tls = false
"""
        process = start_passerelle(networks=networks(inspircd, pki, server), wait=False)
        await process.wait_for(r"^irc \| .*Slidge has successfully started")
        alice, nick = await registered(new_client, "alice")
        await register_account(plain, nick, "nickservpass")
        await alice.run_command(server_jid("nosasl"), "configure", account_password="nickservpass")

        assert (await alice.join_muc(room("#story56", "nosasl"), nick))["type"] != "error"
        told = await expect_from(alice, server_jid("nosasl"), "SASL")
        assert "sending your account password to NickServ instead" in told, told
        answer = await expect_from(alice, user("nickserv", "nosasl"), "identified")
        assert answer.startswith("[notice] You are now identified for"), answer
        assert await logged_in_as(plain, nick) == nick
        assert "nickservpass" not in irc_log(process)


# --- server password (PASS) -------------------------------------------------------------


async def test_a_server_password_is_needed_and_then_used(
    gateway: PasserelleProcess, inspircd: InspIRCd, new_client: NewClient
) -> None:
    alice, nick = await registered(new_client, "alice")
    room55 = room("#story55", "locked")
    # Without the password, and with a wrong one, the server turns her away: she is told.
    pres = await alice.join_muc(room55, nick)
    assert pres["type"] == "error", pres
    text = pres["error"]["text"]
    assert "'locked'" in text and "Access denied" in text, text  # which, and the server's words
    assert "if this server needs a password, set it with the configure command" in text, text
    await alice.run_command(server_jid("locked"), "configure", password="not it")
    pres = await alice.join_muc(room55, nick)
    assert pres["type"] == "error", pres
    text = pres["error"]["text"]
    assert "'locked'" in text and "check the server password" in text, text

    # With the right one she is in.
    await alice.run_command(server_jid("locked"), "configure", password=SERVER_PASSWORD)
    pres = await alice.join_muc(room55, nick)
    assert pres["type"] != "error", pres
    bob = await IrcPerson.connect(inspircd.port, "bob55")
    try:
        await bob.join("#story55")
        alice.send_groupchat(room55, "let in")
        assert await bob.heard(nick, "#story55") == "let in"
    finally:
        await bob.close()
    assert "PASS [redacted]" in irc_log(gateway)
    assert SERVER_PASSWORD not in irc_log(gateway) and "not it" not in irc_log(gateway)


async def test_passwords_typed_in_a_chat_are_used_and_stay_out_of_the_log(
    gateway: PasserelleProcess, inspircd: InspIRCd, new_client: NewClient
) -> None:
    alice, nick = await registered(new_client, "alice")
    # In a chat with the gateway, `contact locked configure` asks the form's fields one
    # by one there; she types both passwords.
    answers = {
        "Nick on this server": nick,
        "Account password": "typed-account-pw-57",
        "Server password": SERVER_PASSWORD,
        "IRC commands": " ",  # none (slidge reads a space as an empty list)
    }
    said, asked = await alice.answer_chat_command(
        IRC_JID, "contact locked configure", answers, until="^Saved"
    )
    assert asked == list(answers), said
    # The server password she typed lets her in.
    pres = await alice.join_muc(room("#story57", "locked"), nick)
    assert pres["type"] != "error", pres
    # At DEBUG, where slixmpp logs each stanza it receives, her two answers are there
    # with their bodies redacted (slidge fix 52), and neither password is anywhere.
    answered = [
        line for line in gateway.lines if "RECV: <message" in line and alice.boundjid.bare in line
    ]
    assert sum("<body>[redacted]</body>" in line for line in answered) == 2, answered
    assert not [line for line in gateway.lines if SERVER_PASSWORD in line or "account-pw" in line]
