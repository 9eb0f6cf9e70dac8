"""Persistent channels: Passerelle stays in them while the user is offline (a bouncer),
keeps what is said in the room archive, and rejoins them when it restarts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from slixmpp.stanza import Message

from gateway.localservers import NgIrcd, Prosody
from tests.e2e.conftest import PASSWORD, PasserelleProcess
from tests.e2e.irc_helpers import (  # noqa: F401  (fixtures: ngircd, irc_people)
    NewClient,
    People,
    irc_people_fixture,
    ngircd_fixture,
    registered,
    room,
    start_with_irc,
)
from tests.e2e.xmpp_client import Client

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def delay_of(msg: Message) -> datetime:
    """The XEP-0203 delay stamp of a message (it must have one)."""
    delay = msg.xml.find("{urn:xmpp:delay}delay")
    assert delay is not None, f"no delay in {msg}"
    return datetime.fromisoformat(delay.get("stamp", ""))


async def back_online(alice: Client, prosody: Prosody, resource: str) -> Client:
    """alice logs in again from another client (her first one has gone offline)."""
    client = Client(f"{alice.boundjid.bare}/{resource}", PASSWORD)
    await client.start(prosody.c2s_port)
    return client


async def test_a_persistent_channel_stays_joined_and_archives_while_offline(
    ngircd: NgIrcd,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
    irc_people: People,
    prosody: Prosody,
) -> None:
    await start_with_irc(start_passerelle, ngircd.port)
    alice, nick = await registered(new_client, "alice")
    bob = await irc_people("bob41")
    await bob.join("#story41")
    await bob.join("#story42")
    kept, left = room("#story41"), room("#story42")
    await alice.join_muc(kept, nick)
    await alice.join_muc(left, nick)

    # alice makes #story41 persistent with the room's "configure" command.
    result = await alice.run_command(kept, "configure", persistent="true")
    assert result["command"]["status"] == "completed"
    assert "stays joined" in result["command"]["notes"][0][1]

    # She goes offline: the ordinary room is parted, the persistent one is not.
    await alice.stop()
    await bob.expect(rf"^:{nick}!\S+ PART #story42")
    bob.say("#story41", "said while alice was offline")
    bob.say("#story41", "and a second line")
    bob.send(f"WHOIS {nick}")  # she is still on IRC, in #story41 only
    assert "#story42" not in (await bob.expect(rf" 319 bob41 {nick} :(.*)$")).group(1)
    assert not bob.saw(rf"^:{nick}!\S+ (PART #story41|QUIT)")

    # Back online (another client): joining shows what was said, with its time.
    phone = await back_online(alice, prosody, "phone")
    try:
        pres = await phone.join_muc(kept, nick, history=10)
        assert pres["type"] != "error", pres
        missed = [await phone.next_groupchat(kept, "bob41") for _ in range(2)]
        assert [m["body"] for m in missed] == ["said while alice was offline", "and a second line"]
        for msg in missed:
            assert delay_of(msg) <= datetime.now(UTC)
        # The room archive (MAM) has them too.
        archived = [m["body"] for m in await phone.archive(kept)]
        assert archived[-2:] == ["said while alice was offline", "and a second line"]
        # Still one IRC connection: bob saw alice join #story41 once.
        assert sum(f":{nick}!" in line and " JOIN " in line and "#story41" in line
                   for line in bob.lines) == 1  # fmt: skip

        # Persistent rooms still leave when asked to stop being persistent.
        result = await phone.run_command(kept, "configure", persistent="false")
        assert result["command"]["status"] == "completed"
        phone.leave_muc(kept, nick)
        await bob.expect(rf"^:{nick}!\S+ PART #story41")
    finally:
        await phone.stop()


async def test_persistent_channels_are_rejoined_when_the_gateway_restarts(
    ngircd: NgIrcd,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
    irc_people: People,
    prosody: Prosody,
) -> None:
    gateway = await start_with_irc(start_passerelle, ngircd.port)
    alice, nick = await registered(new_client, "alice")
    bob = await irc_people("bob43")
    await bob.join("#story43")
    kept = room("#story43")
    await alice.join_muc(kept, nick)
    await bob.expect(rf"^:{nick}!\S+ JOIN :?#story43")
    await alice.run_command(kept, "configure", persistent="true")
    await alice.stop()

    # The gateway stops (alice quits IRC) and starts again with the same data.
    gateway.stop()
    await bob.expect(rf"^:{nick}!\S+ QUIT")
    again = PasserelleProcess(gateway.config)
    try:
        await again.wait_for(r"^irc \| .*Slidge has successfully started")
        # Nobody is online on XMPP, yet the gateway goes back into #story43.
        await bob.expect(rf"^:{nick}!\S+ JOIN :?#story43", timeout=30)
        bob.say("#story43", "welcome back, bouncer")

        phone = await back_online(alice, prosody, "after-restart")
        try:
            await phone.join_muc(kept, nick, history=10)
            msg = await phone.next_groupchat(kept, "bob43")
            assert msg["body"] == "welcome back, bouncer"
            assert delay_of(msg) <= datetime.now(UTC)
        finally:
            await phone.stop()
    finally:
        again.stop()
