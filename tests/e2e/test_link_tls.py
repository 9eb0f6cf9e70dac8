"""The link over TLS to InspIRCd: ``ircs://`` with the certificate verified, as on a real
network. The test InspIRCd's certificate comes from a throw-away CA that nothing
trusts unless told: Passerelle trusts it through ``[link] ca_file`` (or through
``SSL_CERT_FILE``, OpenSSL's standard variable, which Python's default TLS context reads),
and refuses the server without it.
The IRC people connect to the same InspIRCd in plain text.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.localservers import InspIRCd
from tests.e2e.irc_helpers import IrcPerson
from tests.e2e.link_helpers import People as XmppPeople
from tests.e2e.link_helpers import (  # noqa: F401  (fixtures)
    StartLink,
    link_prosody_fixture,
    link_toml,
    linked,
    people_fixture,
    room_jid,
    start_link_fixture,
    three_and_three,
)
from tests.e2e.test_irc_tls_sasl import Pki, _issue

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return _issue(tmp_path_factory.mktemp("link-pki"))


@pytest.fixture(scope="module")
def tls_inspircd(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[InspIRCd]:
    with InspIRCd(
        tmp_path_factory.mktemp("link-inspircd"), tls_cert=pki.cert, tls_key=pki.key
    ) as server:
        yield server


@pytest.fixture
async def inspircd_people(tls_inspircd: InspIRCd) -> AsyncIterator[object]:
    people: list[IrcPerson] = []

    async def connect(nick: str) -> IrcPerson:
        person = await IrcPerson.connect(tls_inspircd.port, nick)
        people.append(person)
        return person

    yield connect
    for person in people:
        await person.close()


async def test_three_and_three_over_tls_on_inspircd(
    tls_inspircd: InspIRCd,
    pki: Pki,
    people: XmppPeople,
    inspircd_people: object,
    start_link: StartLink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    talk = await three_and_three(
        1,
        tls_inspircd,
        people,
        inspircd_people,  # type: ignore[arg-type]
        start_link,
        name="tls",
        link_port=tls_inspircd.tls_port,
        scheme="ircs",
        link_extra=f'ca_file = "{pki.ca}"',
    )
    for speaker, text in [
        ("alice1", "hello over TLS"),
        ("dave1", "hi alice"),
        ("bob1", "/me waves"),
        ("erin1", "\x01ACTION waves back\x01"),
        ("carol1", "carol here"),
        ("frank1", "and frank"),
    ]:
        await talk.turn(speaker, text)
    # bob renames himself: his IRC connection (over TLS too) follows.
    bob, dave = talk.xmpp.pop("bob1"), talk.irc["dave1"]
    bob.change_muc_nick(talk.room, "robert1")
    await dave.expect(r"^(?:@\S+ )?:bob1\[x\]!\S+ NICK :?robert1\[x\]")
    talk.xmpp["robert1"] = bob
    await talk.turn("robert1", "robert now")
    await talk.nothing_more()
    assert not any("not trusted" in line for line in talk.gateway.lines)


async def test_an_untrusted_certificate_is_refused(
    tls_inspircd: InspIRCd,
    people: XmppPeople,
    start_link: StartLink,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # The system's trust store does not know the test CA: verification is on by default.
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    room, channel = room_jid("tls2"), "#tls2"
    alice = await people("alice")
    await alice.link_create_room(room, "alice", persistentroom="1")
    gateway = start_link(link_toml(room, tls_inspircd.tls_port, channel, "ircs"))
    refused = await gateway.wait_for(r"TLS certificate not trusted", timeout=60)
    # One warning, whose reason names the link's section, not an IRC network's.
    assert "WARNING" in gateway.lines[refused], gateway.lines[refused]
    assert "ca_file in [link]" in gateway.lines[refused], gateway.lines[refused]
    assert not any("networks.irc" in line for line in gateway.lines)
    await asyncio.sleep(1)
    assert not any("linked" in line and channel in line for line in gateway.lines)
