"""Nothing is lost when Passerelle dies: what was said while it was away is relayed once
it is back, in order, once, and without our own puppets' lines coming back.

Passerelle (the supervisor and the link's process) is killed with SIGKILL in the middle
of a conversation and started again on the same data directory. The room side comes
from Prosody's MAM archive of the room (``mod_muc_mam``); the IRC side from InspIRCd's
history on join (``chanhistory``, channel mode ``+H``). ngIRCd keeps no history: lines
said on it while the link is away are lost, as the README says.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.localservers import InspIRCd, NgIrcd
from gateway.localservers.inspircd import IRCV3_MODULES
from tests.e2e.conftest import PasserelleProcess
from tests.e2e.irc_helpers import (  # noqa: F401  (fixtures)
    IrcPerson,
    People,
    irc_people_fixture,
    ngircd_fixture,
)
from tests.e2e.link_helpers import People as XmppPeople
from tests.e2e.link_helpers import (  # noqa: F401  (fixtures)
    StartLink,
    channel_texts,
    link_prosody_fixture,
    linked,
    linked_room,
    people_fixture,
    quiet,
    room_jid,
    start_link_fixture,
    start_linked,
)
from tests.e2e.xmpp_client import Client

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture
def history_inspircd(tmp_path: Path) -> Iterator[InspIRCd]:
    """An InspIRCd that plays a channel's recent lines to whoever joins (+H)."""
    with InspIRCd(tmp_path / "inspircd", modules=(*IRCV3_MODULES, "chanhistory")) as server:
        yield server


async def two_in_the_room(
    n: int, ngircd: NgIrcd, people: XmppPeople, irc_people: People, start_link: StartLink
) -> tuple[Client, Client, IrcPerson, str, str, PasserelleProcess]:
    """alice and bob in room `catchup{n}`, dave in `#catchup{n}`, linked:
    (alice, bob, dave, room, channel, Passerelle)."""
    alice, bob, dave = await people("alice"), await people("bob"), await irc_people(f"cdave{n}")
    room, channel, gateway = await linked_room(f"catchup{n}", ngircd.port, alice, dave, start_link)
    assert (await bob.join_muc(room, "bob"))["type"] != "error"
    return alice, bob, dave, room, channel, gateway


async def kill_passerelle(gateway: PasserelleProcess, person: IrcPerson, channel: str) -> None:
    """SIGKILL the link's process and the supervisor at once (no clean shutdown, no
    restart), and wait until IRC has seen the relay go."""
    os.kill(gateway.child_pid("link"), signal.SIGKILL)
    gateway.proc.kill()
    await asyncio.to_thread(gateway.proc.wait, 30)
    await person.expect(r"^(?:@\S+ )?:passerelle!\S+ QUIT", timeout=30)


async def test_room_lines_said_while_passerelle_was_dead_reach_irc_once(
    ngircd: NgIrcd, people: XmppPeople, irc_people: People, start_link: StartLink
) -> None:
    alice, bob, dave, room, channel, gateway = await two_in_the_room(
        1, ngircd, people, irc_people, start_link
    )

    alice.send_groupchat(room, "before the crash")
    assert await channel_texts(dave, channel, 1) == [("alice[x]", "before the crash")]
    dave.say(channel, "dave was here")  # archived in the room, said by our puppet
    assert await alice.link_room_texts(room, 2) == [
        ("alice", "before the crash"),
        ("cdave1", "dave was here"),
    ]

    await kill_passerelle(gateway, dave, channel)
    assert await bob.link_room_texts(room, 2) == [
        ("alice", "before the crash"),
        ("cdave1", "dave was here"),
    ]
    for speaker, text in [
        (alice, "said while the link was dead"),
        (bob, "/me agrees"),
        (alice, "third line"),
    ]:
        speaker.send_groupchat(room, text)  # one after the other, as the room has them
        assert (await bob.link_room_texts(room, 1))[0][1] == text

    again = start_link(config=gateway.config)
    await again.wait_for(linked(room, channel), timeout=60)
    assert await channel_texts(dave, channel, 3, timeout=30) == [
        ("alice[x]", "said while the link was dead"),
        ("bob[x]", "\x01ACTION agrees\x01"),
        ("alice[x]", "third line"),
    ]
    # Live again; nothing earlier came twice (not "before the crash", not dave's own
    # line through his occupant).
    alice.send_groupchat(room, "and now live")
    assert await channel_texts(dave, channel, 1) == [("alice[x]", "and now live")]
    dave.say(channel, "welcome back")
    assert (await alice.link_room_texts(room, 5))[-1] == ("cdave1", "welcome back")
    await quiet()
    with pytest.raises(AssertionError):
        await channel_texts(dave, channel, 1, timeout=0.2)
    with pytest.raises(TimeoutError):
        await alice.next_groupchat_text(room, timeout=0.2)

    # A second kill right away: nothing is relayed again after the next start.
    await kill_passerelle(again, dave, channel)
    third = start_link(config=gateway.config)
    await third.wait_for(linked(room, channel), timeout=60)
    await quiet(3)
    with pytest.raises(AssertionError):
        await channel_texts(dave, channel, 1, timeout=0.2)
    await dave.close()


async def test_more_than_a_page_of_the_archive_is_relayed_in_order(
    ngircd: NgIrcd, people: XmppPeople, irc_people: People, start_link: StartLink
) -> None:
    """Prosody answers an archive query with 50 messages at most: 55 take two pages."""
    alice, bob, dave, room, channel, gateway = await two_in_the_room(
        3, ngircd, people, irc_people, start_link
    )
    alice.send_groupchat(room, "before")
    assert await channel_texts(dave, channel, 1) == [("alice[x]", "before")]
    await kill_passerelle(gateway, dave, channel)
    said = []
    for i in range(55):
        speaker, nick = (alice, "alice") if i % 2 == 0 else (bob, "bob")
        speaker.send_groupchat(room, f"line {i}")
        said.append((f"{nick}[x]", f"line {i}"))
        assert (await speaker.next_groupchat_text(room, f"line {i}"))["body"] == f"line {i}"

    again = start_link(config=gateway.config)
    await again.wait_for(linked(room, channel), timeout=60)
    assert await channel_texts(dave, channel, 55, timeout=120) == said
    await quiet()
    assert not dave.saw(r"NOTICE #catchup3"), "nothing was left out"


async def test_irc_and_room_lines_said_while_dead_are_relayed_with_inspircd_history(
    history_inspircd: InspIRCd, people: XmppPeople, start_link: StartLink
) -> None:
    room, channel = room_jid("catchup2"), "#catchup2"
    alice = await people("alice")
    await alice.link_create_room(room, "alice", persistentroom="1")
    dave = await IrcPerson.connect(history_inspircd.port, "cdave2")
    erin = await IrcPerson.connect(history_inspircd.port, "cerin2")
    try:
        await dave.join(channel)
        dave.send(f"MODE {channel} +H 50:1d")
        await dave.expect(rf"MODE {channel} :?\+H")
        await erin.join(channel)
        gateway = await start_linked(start_link, room, history_inspircd.port, channel)

        dave.say(channel, "before the crash")
        assert await alice.link_room_texts(room, 1) == [("cdave2", "before the crash")]
        alice.send_groupchat(room, "alice before")
        assert await alice.link_room_texts(room, 1) == [("alice", "alice before")]
        assert await channel_texts(dave, channel, 1) == [("alice[x]", "alice before")]
        assert await channel_texts(erin, channel, 2) == [
            ("cdave2", "before the crash"),
            ("alice[x]", "alice before"),
        ]

        await kill_passerelle(gateway, dave, channel)
        await asyncio.sleep(1.1)  # history times are whole seconds: a new second
        dave.say(channel, "said on IRC while the link was dead")
        erin.say(channel, "me too")
        alice.send_groupchat(room, "and alice meanwhile")
        assert (await alice.link_room_texts(room, 1)) == [("alice", "and alice meanwhile")]

        again = start_link(config=gateway.config)
        await again.wait_for(linked(room, channel), timeout=60)
        assert await alice.link_room_texts(room, 2, timeout=30) == [
            ("cdave2", "said on IRC while the link was dead"),
            ("cerin2", "me too"),
        ]
        assert await channel_texts(dave, channel, 2, timeout=30) == [
            ("cerin2", "me too"),
            ("alice[x]", "and alice meanwhile"),
        ]
        await quiet()
        with pytest.raises(TimeoutError):
            await alice.next_groupchat_text(room, timeout=0.2)
        with pytest.raises(AssertionError):
            await channel_texts(dave, channel, 1, timeout=0.2)
    finally:
        await dave.close()
        await erin.close()
