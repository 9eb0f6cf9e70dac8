"""The gateway's file size limit (``max_upload_size``), both ways, against Synapse: a
Matrix file larger than it reaches the XMPP user as a line naming the file and the
limit, an XMPP attachment larger than it is refused with an error stanza saying so and
never reaches Matrix; the files within it, before and after, go through."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from gateway.localservers.synapse import Synapse
from tests.e2e.conftest import PasserelleProcess
from tests.e2e.matrix_helpers import (
    PNG,
    http_get,
    jid_of,
    log_in,
    new_account,
    peer_factory,
    shared_synapse,
    start_matrix_gateway,
    understand_features,
    xmpp_upload,
)
from tests.e2e.xmpp_client import Client

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
NewClient = Callable[..., "asyncio.Future[Client]"]
LIMIT = 2000
BIG = bytes(range(256)) * 20  # 5,120 bytes


@pytest.fixture(scope="session")
def synapse(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Synapse:
    return shared_synapse(request, tmp_path_factory)


async def test_files_beyond_the_size_limit_are_refused_with_the_reason_both_ways(
    synapse: Synapse,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
    prosody: object,
) -> None:
    gateway = await start_matrix_gateway(start_passerelle, max_upload_size=LIMIT)
    upload_jid = str(prosody.upload_domain)  # type: ignore[attr-defined]
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    async with peer_factory(synapse) as make:
        bob = await make("bob")
        bob_jid = jid_of(bob.user_id)
        alice = await new_client("alice")
        understand_features(alice)
        await log_in(alice, synapse, alice_mx)
        room = await bob.create_dm(alice_mx.user_id)

        # Matrix → XMPP: the big file is a line that says what and why; the small one
        # after it arrives as a file.
        big = await bob.upload(BIG, "application/octet-stream", "big.bin")
        await bob.send(room, "m.room.message", {"msgtype": "m.file", "body": "big.bin", "url": big})
        said = await alice.next_message(bob_jid)
        assert "big.bin" in said["body"], said["body"]
        assert f"larger than {LIMIT} bytes" in said["body"], said["body"]
        assert not said["oob"]["url"], said
        small = await bob.upload(PNG, "image/png", "dot.png")
        await bob.send(
            room,
            "m.room.message",
            {
                "msgtype": "m.image",
                "body": "dot.png",
                "url": small,
                "info": {"mimetype": "image/png"},
            },
        )
        got = await alice.next_matching(
            lambda m: m["from"].bare == bob_jid and bool(m["oob"]["url"])
        )
        assert await http_get(got["oob"]["url"]) == PNG

        # XMPP → Matrix: the big attachment is refused with an error stanza naming the
        # limit; nothing of it reaches bob, and what she sends next does.
        url = await xmpp_upload(alice, upload_jid, BIG, "big.bin", "application/octet-stream")
        msg = alice.make_message(mto=bob_jid, mbody=url, mtype="chat")
        msg["oob"]["url"] = url
        msg.send()
        error = await alice.next_matching(
            lambda m: m["type"] == "error" and m["from"].bare == bob_jid
        )
        assert f"larger than {LIMIT} bytes" in error["error"]["text"], error
        alice.send_chat(bob_jid, "after the big one")
        event = await bob.wait_for(
            lambda e: e.get("type") == "m.room.message" and e.get("sender") == alice_mx.user_id
        )
        assert event["content"]["body"] == "after the big one", event
        assert gateway.proc.poll() is None
