"""Stories of a person using the echo network through Passerelle, from a real XMPP client."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable

import pytest
from slixmpp.exceptions import IqError

from tests.e2e.conftest import ECHO_JID, ECHO_SECRET, PasserelleProcess
from tests.e2e.xmpp_client import Client

pytestmark = pytest.mark.e2e
ECHO = f"echo@{ECHO_JID}"
NewClient = Callable[..., "asyncio.Future[Client]"]


async def test_register_talk_correct_unregister(
    passerelle: PasserelleProcess, new_client: NewClient
) -> None:
    alice = await new_client("alice")
    await alice.register(ECHO_JID, nickname="Alice")
    # The echo contact arrives in alice's roster through the privileged roster push.
    await alice.next_roster_push(ECHO)
    assert ECHO in alice.client_roster

    sent = alice.send_chat(ECHO, "hello, echo")
    answer = await alice.next_message(ECHO)
    assert answer["body"] == "hello, echo"
    assert answer["type"] == "chat"
    # The network's SQLite database runs in WAL mode (gateway.slidge_fixes, fix 7).
    assert (passerelle.config.parent / "data" / "echo" / "passerelle.sqlite-wal").exists()

    # alice corrects her message; echo corrects its answer (XEP-0308), it does not resend it.
    alice.send_chat(ECHO, "hello, Echo!", replace=sent["id"])
    correction = await alice.next_message(ECHO)
    assert correction["body"] == "hello, Echo!"
    assert correction["replace"]["id"] == answer["id"]

    await alice.unregister(ECHO_JID)
    # Once unregistered, the gateway no longer carries her messages.
    alice.send_chat(ECHO, "still there?")
    bounce = await alice.next_message(ECHO, with_body=False)
    assert bounce["type"] == "error"
    assert bounce["error"]["condition"] == "registration-required"
    assert passerelle.proc.poll() is None


async def test_register_with_adhoc_command(
    passerelle: PasserelleProcess, new_client: NewClient
) -> None:
    bob = await new_client("bob")
    result = await bob.run_command(ECHO_JID, "jabber:iq:register", nickname="Bob")
    assert result["command"]["status"] == "completed"
    await bob.next_roster_push(ECHO)
    bob.send_chat(ECHO, "ping through the command")
    assert (await bob.next_message(ECHO))["body"] == "ping through the command"


async def test_reregistration_with_two_users_keeps_gateway_up(
    passerelle: PasserelleProcess, new_client: NewClient
) -> None:
    # slidge 0.4.2 crashes here without gateway.slidge_fixes (bug 2).
    carol, dave = await new_client("carol"), await new_client("dave")
    await carol.register(ECHO_JID, nickname="Carol")
    await dave.register(ECHO_JID, nickname="Dave")
    await carol.register(ECHO_JID, nickname="Carol Again")
    dave.send_chat(ECHO, "are you still there?")
    assert (await dave.next_message(ECHO))["body"] == "are you still there?"
    assert passerelle.proc.poll() is None


async def test_jid_outside_allow_list_cannot_register(
    start_passerelle: Callable[..., PasserelleProcess], new_client: NewClient
) -> None:
    start_passerelle(extra='allowed_jids = ["friend*@localhost"]')
    mallory = await new_client("mallory")
    with pytest.raises(IqError) as err:
        await mallory.register(ECHO_JID, nickname="Mallory")
    assert err.value.condition == "not-allowed"
    friend = await new_client("friend")
    await friend.register(ECHO_JID, nickname="Friend")


async def test_bad_nickname_is_refused_with_a_reason(
    passerelle: PasserelleProcess, new_client: NewClient
) -> None:
    erin = await new_client("erin")
    with pytest.raises(IqError) as err:
        await erin.register(ECHO_JID, nickname="n" * 65)
    assert err.value.condition == "not-acceptable"
    assert "nickname" in err.value.text.lower()
    await erin.register(ECHO_JID, nickname="Erin")
    await erin.next_roster_push(ECHO)


async def test_killed_network_is_restarted_and_session_comes_back(
    passerelle: PasserelleProcess, new_client: NewClient
) -> None:
    frank = await new_client("frank")
    await frank.register(ECHO_JID, nickname="Frank")
    await frank.next_roster_push(ECHO)
    old_pid = passerelle.child_pid("echo")
    mark = len(passerelle.lines)
    os.kill(old_pid, signal.SIGKILL)
    await passerelle.wait_for(r"echo exited with code -9 .* restarting in", after=mark)
    await passerelle.wait_for("Slidge has successfully started", after=mark)
    assert passerelle.child_pid("echo") != old_pid
    # The restarted gateway logs frank in again by itself.
    await frank.next_presence(ECHO)
    frank.send_chat(ECHO, "welcome back")
    assert (await frank.next_message(ECHO))["body"] == "welcome back"


async def test_sigterm_stops_cleanly_with_unavailable_presences(
    passerelle: PasserelleProcess, new_client: NewClient
) -> None:
    grace = await new_client("grace")
    await grace.register(ECHO_JID, nickname="Grace")
    await grace.next_presence(ECHO)
    code = await asyncio.to_thread(passerelle.stop)
    assert code == 0, passerelle.output()
    await grace.next_presence(ECHO_JID, ptype="unavailable")
    assert "echo stopped (exit code 0)" in passerelle.output()


async def test_debug_logs_never_show_the_component_secret(
    start_passerelle: Callable[..., PasserelleProcess], new_client: NewClient
) -> None:
    process = start_passerelle(extra='log_level = "DEBUG"')
    henry = await new_client("henry")
    await henry.register(ECHO_JID, nickname="Henry")
    henry.send_chat(ECHO, "wire logs on")
    assert (await henry.next_message(ECHO))["body"] == "wire logs on"
    output = process.output()
    assert "RECV: <message" in output  # the wire really is logged
    assert "Setting 'SECRET' to '[redacted]'" in output
    assert ECHO_SECRET not in output
    assert "INSERT INTO user_account" not in output  # no SQL echo: it shows stored credentials
