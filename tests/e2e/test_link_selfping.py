"""XEP-0410: a room that silently forgot the link is noticed by a self-ping, and the link
joins again by itself — and what the room said while it was not there still reaches IRC.

The room forgets the link's listener through Prosody's admin shell, the way a server
admin (or a MUC service that lost its state) would: no presence reaches the component,
so only a self-ping can tell. The link self-pings after a few quiet seconds here
(``PASSERELLE_LINK_SELF_PING_EVERY``); the default is five minutes.
"""

from __future__ import annotations

import pytest

from gateway.localservers import NgIrcd
from tests.e2e.irc_helpers import (  # noqa: F401  (fixtures)
    People,
    irc_people_fixture,
    ngircd_fixture,
)
from tests.e2e.link_helpers import (  # noqa: F401  (fixtures)
    LINK_JID,
    LinkProsody,
    StartLink,
    channel_texts,
    link_prosody_fixture,
    linked,
    linked_room,
    people_fixture,
    quiet,
    start_link_fixture,
)
from tests.e2e.link_helpers import People as XmppPeople
from tests.e2e.xmpp_client import muc_status

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


async def test_a_forgotten_listener_is_found_out_by_self_ping_and_rejoins(
    link_prosody: LinkProsody,
    ngircd: NgIrcd,
    people: XmppPeople,
    irc_people: People,
    start_link: StartLink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PASSERELLE_LINK_SELF_PING_EVERY", "4")
    alice, dave = await people("alice"), await irc_people("sdave1")
    room, channel, gateway = await linked_room("selfping1", ngircd.port, alice, dave, start_link)
    alice.send_groupchat(room, "hello")
    assert await channel_texts(dave, channel, 1) == [("alice[x]", "hello")]

    listener = f"#selfping1%127.0.0.1@{LINK_JID}/link"
    mark = len(gateway.lines)
    assert link_prosody.forget_occupant(room, listener) == f"{room}/#selfping1"
    # The room no longer sends the link anything: this line does not reach IRC now.
    alice.send_groupchat(room, "said while the room forgot the link")

    await gateway.wait_for(r"no longer has us \(self-ping\); rejoining", after=mark, timeout=60)
    await gateway.wait_for(linked(room, channel), after=mark, timeout=60)
    # The listener is an occupant again: alice saw it join a second time…
    for _ in range(2):
        joined = await alice.next_occupant(room, "#selfping1")
        assert muc_status(joined)[1]["jid"] == listener
    # …and what it missed comes from the room's archive, once.
    assert await channel_texts(dave, channel, 1, timeout=30) == [
        ("alice[x]", "said while the room forgot the link")
    ]
    alice.send_groupchat(room, "and live again")
    assert await channel_texts(dave, channel, 1) == [("alice[x]", "and live again")]
    dave.say(channel, "hi alice")
    assert (await alice.link_room_texts(room, 4))[-1] == ("sdave1", "hi alice")
    await quiet()
    with pytest.raises(AssertionError):
        await channel_texts(dave, channel, 1, timeout=0.2)
