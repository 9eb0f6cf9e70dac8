"""Getting onto Matrix through Passerelle, and off it again: a real Synapse, a real Prosody.

- A homeserver that rate-limits logins (a Synapse of this module's own, with Synapse's
  default login rates but a burst of 3 logins from one address and 1 failed attempt
  per account): after a wrong password, her right one is refused by the homeserver for
  minutes; the form says so with the wait (``resource-constraint``), at once, and
  nothing is stored; someone else still logs in and chats, and the next login from
  the address is refused the same way. The gateway keeps running.
- The same homeserver limits messages (a burst of 3, then 1 a second): a burst of ten
  messages from XMPP reaches Matrix whole, in order, once each (the gateway waits as
  the homeserver's 429 answers say and sends again).
- Registering through the ad-hoc command (``jabber:iq:register``): a wrong password is
  refused with a sentence, nothing stored; her password logs her in and a DM works.
- Registering through the chat command (``register``): slidge asks each field in the
  chat, ``-`` leaves one empty; she is logged in, a DM works, and the password she
  typed is neither said back to her nor in the gateway's output.
- Both registrations run the gateway at DEBUG, where it logs every stanza: her password
  is in no line of its output (the form's field and her chat answer are redacted) and in
  no file of its directory.
- ``logout`` stops her session (the device stays), what she writes meanwhile is
  refused with an error (and never sent later), what bob writes meanwhile comes at
  ``re-login``; registering again with a new password moves her to a new device and
  logs the gateway's previous one out (Synapse's device list), and nothing bob sent
  around the move is lost or repeated.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from slixmpp.exceptions import IqError

from gateway.localservers.synapse import MatrixAccount, Synapse
from tests.e2e.conftest import MATRIX_JID, PasserelleProcess
from tests.e2e.matrix_helpers import (
    PASSWORD,
    MatrixPeer,
    jid_of,
    log_in,
    new_account,
    peer_factory,
    shared_synapse,
    start_matrix_gateway,
)
from tests.e2e.xmpp_client import Client, registration_form

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
NewClient = Callable[..., "asyncio.Future[Client]"]
Peers = Callable[[str], "asyncio.Future[MatrixPeer]"]

REGISTER = "jabber:iq:register"
RELOGIN = "https://slidge.im/command/core/re-login"
LOGOUT = "matrix/logout"
SLOW = {"per_second": 0.003, "burst_count": 1}
"""Synapse's default login rate (one every 333 s), with a burst of one."""
LIMITS: dict[str, Any] = {
    "rc_login": {"address": {**SLOW, "burst_count": 3}, "failed_attempts": SLOW},
    "rc_message": {"per_second": 1, "burst_count": 3},
}


@pytest.fixture(scope="session")
def synapse(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Synapse:
    return shared_synapse(request, tmp_path_factory)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synapse]:
    """A Synapse of this module's own that rate-limits logins and messages."""
    with Synapse(tmp_path_factory.mktemp("limited-synapse"), rate_limits=LIMITS) as server:
        yield server


@pytest.fixture
async def peers(synapse: Synapse) -> AsyncIterator[Peers]:
    async with peer_factory(synapse) as make:
        yield make


@pytest.fixture
async def limited_peers(limited: Synapse) -> AsyncIterator[Peers]:
    async with peer_factory(limited) as make:
        yield make


async def nothing_stored(client: Client) -> None:
    """The registration form she gets is a new user's (no "remove" field)."""
    form = await registration_form(client, MATRIX_JID, timeout=20)
    assert "remove" not in form["register"]["form"]["fields"]


async def refused(client: Client, account: MatrixAccount, password: str, url: str) -> IqError:
    with pytest.raises(IqError) as err:
        await client.register(
            MATRIX_JID, user_id=account.user_id, password=password, homeserver=url
        )
    return err.value


async def log_in_with_token(client: Client, server: Synapse, account: MatrixAccount) -> None:
    """Register with the account's access token (no login request); wait until online."""
    await client.register(
        MATRIX_JID, user_id=account.user_id, token=account.access_token, homeserver=server.url
    )
    await client.next_presence(MATRIX_JID, ptype="chat")


def said_wait(error: IqError) -> int:
    """The seconds a rate-limited login's error tells her to wait."""
    assert error.condition == "resource-constraint", (error.condition, error.text)
    assert "rate limited" in error.text, error.text
    wait = re.search(r"try again in (\d+) s\b", error.text)
    assert wait is not None, error.text
    return int(wait.group(1))


async def test_a_rate_limited_login_is_refused_at_once_with_the_wait(
    limited: Synapse,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
    limited_peers: Peers,
) -> None:
    gateway = await start_matrix_gateway(start_passerelle)
    carol_mx, alice_mx, dave_mx = [
        await asyncio.to_thread(new_account, limited, name) for name in ("carol", "alice", "dave")
    ]
    carol = await new_client("carol")

    # A wrong password: refused as such (the homeserver counts the failure).
    error = await refused(carol, carol_mx, "not " + PASSWORD, limited.url)
    assert error.condition == "not-authorized", error.text
    # Her right password, next: the homeserver refuses any login of hers for minutes.
    # The form says so and how long, at once (not after waiting those minutes).
    error = await refused(carol, carol_mx, carol_mx.password, limited.url)
    assert 60 < said_wait(error) <= 334, error.text
    assert carol_mx.user_id in error.text
    await nothing_stored(carol)

    # Someone else logs in (the address's third login) and chats: the gateway is fine.
    alice = await new_client("alice")
    await log_in(alice, limited, alice_mx)
    bob = await limited_peers("bob")
    room = await bob.create_dm(alice_mx.user_id)
    await bob.send_text(room, "after carol's trouble")
    assert (await alice.next_message(jid_of(bob.user_id)))["body"] == "after carol's trouble"

    # A fourth login from the address: refused with the wait, nothing stored.
    dave = await new_client("dave")
    error = await refused(dave, dave_mx, dave_mx.password, limited.url)
    assert 60 < said_wait(error) <= 334, error.text
    await nothing_stored(dave)
    assert gateway.proc.poll() is None


async def test_a_burst_to_a_rate_limited_homeserver_arrives_whole_and_in_order(
    limited: Synapse,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
    limited_peers: Peers,
) -> None:
    gateway = await start_matrix_gateway(start_passerelle)
    alice_mx = await asyncio.to_thread(new_account, limited, "alice")
    alice = await new_client("alice")
    # Her access token: no login request (the address's logins are the other story's).
    await log_in_with_token(alice, limited, alice_mx)
    bob = await limited_peers("bob")
    bob_jid = jid_of(bob.user_id)
    room = await bob.create_dm(alice_mx.user_id)
    await bob.send_text(room, "go ahead")
    assert (await alice.next_message(bob_jid))["body"] == "go ahead"

    # Ten at once, and one more once they are all out: three go through, then the
    # homeserver answers 429 with the wait, and the gateway sends again after it.
    mark = len(gateway.lines)
    burst = [f"burst {n}" for n in range(1, 11)]
    for body in burst:
        alice.send_chat(bob_jid, body)
    got: list[str] = []
    for _ in range(len(burst) + 5):  # a repeated message would show before "last"
        event = await bob.wait_for_message(room, timeout=90)
        got.append(event["content"]["body"])
        if len(got) == len(burst):
            alice.send_chat(bob_jid, "last")
        if got[-1] == "last":
            break
    assert got == [*burst, "last"]
    waited = [line for line in gateway.lines[mark:] if "rate limited by the homeserver" in line]
    assert waited, "the homeserver never answered 429: the test proves nothing"
    assert gateway.proc.poll() is None


async def test_registration_through_the_ad_hoc_command(
    synapse: Synapse,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
    peers: Peers,
) -> None:
    gateway = await start_matrix_gateway(start_passerelle, log_level="DEBUG")
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    alice = await new_client("alice")
    fields = {"user_id": alice_mx.user_id, "homeserver": synapse.url}

    # A wrong password: the command ends with an error that says why, in a sentence,
    # under its own condition (slidge's command said internal-server-error: fix 51).
    with pytest.raises(IqError) as err:
        await alice.run_command(MATRIX_JID, REGISTER, password="not " + PASSWORD, **fields)
    assert err.value.condition == "not-authorized", (err.value.condition, err.value.text)
    text = err.value.text
    assert text.startswith(f"login to {synapse.url} as {alice_mx.user_id}: "), text
    assert "password" in text.lower(), text
    await nothing_stored(alice)

    result = await alice.run_command(MATRIX_JID, REGISTER, password=alice_mx.password, **fields)
    assert result["command"]["status"] == "completed", result
    await alice.next_presence(MATRIX_JID, ptype="chat")
    bob = await peers("bob")
    room = await bob.create_dm(alice_mx.user_id)
    await bob.send_text(room, "registered by command")
    assert (await alice.next_message(jid_of(bob.user_id)))["body"] == "registered by command"
    alice.send_chat(jid_of(bob.user_id), "yes, by command")
    await bob.wait_for_message(room, "yes, by command")
    # At DEBUG the gateway logs both forms she sent, with the passwords redacted, and
    # keeps no password on disk (only the device's token).
    assert any("RECV: <iq" in line and "[redacted]" in line for line in gateway.lines)
    assert not [line for line in gateway.lines if alice_mx.password in line]
    assert not gateway.files_holding(alice_mx.password)


async def test_registration_through_the_chat_command(
    synapse: Synapse,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
    peers: Peers,
) -> None:
    gateway = await start_matrix_gateway(start_passerelle, log_level="DEBUG")
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    alice = await new_client("alice")
    # In a chat with the gateway, "register" asks the form's fields one by one; "-"
    # leaves the access token empty; slidge's preferences come after (defaults: yes).
    answers = {
        "Matrix ID": alice_mx.user_id,
        "Password": alice_mx.password,
        "Homeserver URL": synapse.url,
        "Access token": "-",
    }
    dialogue, asked = await alice.answer_chat_command(
        MATRIX_JID, "register", answers, until="^Welcome to Matrix through Passerelle"
    )
    assert asked[:4] == list(answers), asked
    assert any("'-' to leave a field empty" in said for said in dialogue), dialogue

    bob = await peers("bob")
    room = await bob.create_dm(alice_mx.user_id)
    await bob.send_text(room, "registered by chat")
    assert (await alice.next_message(jid_of(bob.user_id)))["body"] == "registered by chat"

    # The password she typed is not said back, nor in the gateway's output, at DEBUG
    # either, where her answer is logged with its body redacted (fix 52); nor on disk.
    assert not any(alice_mx.password in said for said in dialogue)
    assert any(
        "RECV: <message" in line and "<body>[redacted]</body>" in line for line in gateway.lines
    )
    assert not [line for line in gateway.lines if alice_mx.password in line]
    assert not gateway.files_holding(alice_mx.password)


async def test_logout_re_login_and_registering_again_on_a_new_device(
    synapse: Synapse,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
    peers: Peers,
) -> None:
    gateway = await start_matrix_gateway(start_passerelle)
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    alice = await new_client("alice")
    await log_in(alice, synapse, alice_mx)
    her_app = MatrixPeer(synapse, alice_mx)  # her other Matrix session
    bob = await peers("bob")
    bob_jid = jid_of(bob.user_id)
    room = await bob.create_dm(alice_mx.user_id)

    async def gateway_devices() -> set[str]:
        devices = (await her_app.call("GET", "/devices"))["devices"]
        return {d["device_id"] for d in devices} - {alice_mx.device_id}

    async def bodies_until(last: str) -> list[str]:
        got: list[str] = []
        for _ in range(10):
            msg = await alice.next_message(bob_jid)
            if msg["type"] == "error":  # the refusal below, seen in its own queue
                continue
            got.append(msg["body"])
            if got[-1] == last:
                return got
        raise AssertionError(f"{last!r} not among {got}")

    try:
        await bob.send_text(room, "one")
        assert (await alice.next_message(bob_jid))["body"] == "one"
        first = await gateway_devices()
        assert len(first) == 1, first

        # Logout: the session stops, the device stays; bob writes meanwhile.
        result = await alice.run_command(MATRIX_JID, LOGOUT)
        assert "re-login" in str(result["command"]), result
        await alice.next_presence(MATRIX_JID, ptype="xa")
        await bob.send_text(room, "while out 1")
        await bob.send_text(room, "while out 2")
        with pytest.raises(TimeoutError):  # nothing comes while she is logged out
            await alice.next_message(bob_jid, timeout=4)
        # What she writes meanwhile is refused with an error, not kept nor lost silently.
        errors: asyncio.Queue[Any] = asyncio.Queue()
        alice.add_event_handler("message_error", errors.put_nowait)
        alice.send_chat(bob_jid, "while I am out")
        refusal = await asyncio.wait_for(errors.get(), 30)
        assert refusal["from"].bare == bob_jid and refusal["error"]["text"], refusal
        assert await gateway_devices() == first

        # Re-login: what bob wrote meanwhile comes, once, in order.
        await alice.run_command(MATRIX_JID, RELOGIN)
        await bob.send_text(room, "back")
        assert await bodies_until("back") == ["while out 1", "while out 2", "back"]

        # A wrong password when registering again: refused, her session goes on.
        error = await refused(alice, alice_mx, "not " + PASSWORD, synapse.url)
        assert error.condition == "not-authorized", error.text
        await bob.send_text(room, "still here")
        assert (await alice.next_message(bob_jid))["body"] == "still here"

        # She changes her Matrix password (keeping her sessions) and registers again with
        # the new one while bob writes: a new device, the previous one logged out.
        new_password = "a new " + PASSWORD
        auth = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": alice_mx.user_id},
            "password": alice_mx.password,
        }
        body = {"new_password": new_password, "logout_devices": False, "auth": auth}
        await her_app.call("POST", "/account/password", body)
        mark = len(gateway.lines)
        await bob.send_text(room, "before the move")
        await alice.register(
            MATRIX_JID, user_id=alice_mx.user_id, password=new_password, homeserver=synapse.url
        )
        await bob.send_text(room, "after the move")
        assert await bodies_until("after the move") == ["before the move", "after the move"]
        now = await gateway_devices()
        assert len(now) == 1 and not now & first, (first, now)
        await gateway.wait_for(r"Logged the previous Matrix device of \S+ out", after=mark)
        alice.send_chat(bob_jid, "from the new device")
        event = await bob.wait_for_message(room)  # her first since "one": not the refused one
        assert event["content"]["body"] == "from the new device"
        assert event["sender"] == alice_mx.user_id
        assert new_password not in gateway.output()
    finally:
        await her_app.close()


async def test_unregistering_leaves_logged_in_a_device_whose_token_she_gave(
    synapse: Synapse,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
) -> None:
    # Her access token is another app's session (here: this test's): unregistering
    # must not log that app out. (A device the gateway made with her password is
    # logged out: test_matrix.py::test_unregistering_logs_the_matrix_device_out.)
    gateway = await start_matrix_gateway(start_passerelle)
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    alice = await new_client("alice")
    await log_in_with_token(alice, synapse, alice_mx)
    her_app = MatrixPeer(synapse, alice_mx)
    try:
        before = {d["device_id"] for d in (await her_app.call("GET", "/devices"))["devices"]}
        mark = len(gateway.lines)
        await alice.unregister(MATRIX_JID)
        await gateway.wait_for("unregistered: the Matrix device", after=mark)
        whoami = await her_app.call("GET", "/account/whoami")  # her app still works
        assert whoami["user_id"] == alice_mx.user_id
        assert "was given, left logged in" in gateway.output()
        after = {d["device_id"] for d in (await her_app.call("GET", "/devices"))["devices"]}
        assert after == before
    finally:
        await her_app.close()
