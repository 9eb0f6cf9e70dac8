"""Stories of the user's mailbox as a whole: another Delta Chat device on the same account,
new contacts added by address, and the mail that was there before registering.

A real Postfix + Dovecot carries the mail; the other device is a second Delta Chat core
that took the account from the gateway with Delta Chat's "Add as second device" (the
``add-device`` command), so both have the same keys.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from slixmpp import Message
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

from gateway.localservers.mail import MailServer
from legacy_plugins.email.rpc import DeltaChatRpc
from tests.e2e.conftest import EMAIL_JID, PasserelleProcess
from tests.e2e.email_helpers import (
    WAIT,
    Pair,
    PlainPeer,
    contact_jid,
    group_jid,
    mail_server_fixture,  # noqa: F401  (the mail_server fixture)
    new_user,
    next_message_containing,
    register,
    signed_up_user,
    text_of,
    verified_pair_fixture,  # noqa: F401  (the verified_pair fixture)
)
from tests.e2e.xmpp_client import Client, child, send_iq, submit_form

pytestmark = pytest.mark.e2e
RETRACT = "{urn:xmpp:message-retract:1}retract"
REACTIONS = "{urn:xmpp:reactions:0}reactions"
NewClient = Callable[..., "asyncio.Future[Client]"]
StartPasserelle = Callable[..., PasserelleProcess]


async def _message_on(rpc: DeltaChatRpc, account: int, text: str) -> int:
    """The id, in ``account``, of the message ``text`` once it has arrived there."""
    async with asyncio.timeout(40):
        while True:
            for chat in await rpc.call("get_chatlist_entries", account, None, None, None):
                for msg_id in await rpc.call("get_message_ids", account, chat, False, False):
                    if (await rpc.call("get_message", account, msg_id))["text"] == text:
                        return int(msg_id)
            await asyncio.sleep(0.5)


async def test_own_messages_from_another_delta_chat_device(
    verified_pair: Pair, tmp_path: Path
) -> None:
    xmpp, dora = verified_pair.xmpp, verified_pair.peer
    group = int(await dora.call("create_group_chat", "Family", False))
    await dora.call("add_contact_to_chat", group, await dora.contact_id(verified_pair.address))
    await dora.send(group, "Dinner on Sunday?")
    room = await group_jid(xmpp, "Family")

    # The user's phone: Delta Chat's "Add as second device" with the gateway's code.
    xmpp.send_chat(EMAIL_JID, "add-device")
    answer = await next_message_containing(xmpp, EMAIL_JID, "DCBACKUP")
    code = answer["body"].rsplit("\n", 1)[-1]
    assert code.startswith("DCBACKUP"), answer["body"]
    phone_rpc = DeltaChatRpc(tmp_path / "phone", name="phone")
    await phone_rpc.start()
    try:
        phone = int(await phone_rpc.call("add_account"))
        await phone_rpc.call("get_backup", phone, code, timeout=120)
        await next_message_containing(xmpp, EMAIL_JID, "has your account now", timeout=60)
        await phone_rpc.call("start_io", phone)

        xmpp.register_plugin("xep_0280")
        carbons: asyncio.Queue[Message] = asyncio.Queue()
        xmpp.add_event_handler("carbon_sent", carbons.put_nowait)
        await xmpp.plugin["xep_0280"].enable(timeout=WAIT)
        joined = await xmpp.join_muc(room, "xena")
        assert joined["type"] != "error", joined

        # 1:1: a carbon of what she sent Dora from the phone (XEP-0280, privileged).
        dora_on_phone = (await phone_rpc.call("get_contact_ids", phone, 0, dora.address))[0]
        chat = await phone_rpc.call("get_chat_id_by_contact_id", phone, dora_on_phone)
        on_phone = await phone_rpc.call("send_msg", phone, chat, {"text": "sent from my phone"})
        assert (await dora.next_message(lambda m: m["text"] == "sent from my phone"))["showPadlock"]
        async with asyncio.timeout(40):
            carbon = await carbons.get()
        sent = carbon["carbon_sent"]
        assert sent["body"] == "sent from my phone"
        assert sent["to"].bare == verified_pair.peer_jid
        assert carbon["from"].bare == xmpp.boundjid.bare

        # She corrects it, then deletes it for everyone, on the phone: carbons of both.
        await phone_rpc.call("send_edit_request", phone, on_phone, "sent from my phone!")
        async with asyncio.timeout(40):
            correction = (await carbons.get())["carbon_sent"]
        assert correction["replace"]["id"] == sent["id"]
        assert correction["body"] == "sent from my phone!"
        await phone_rpc.call("delete_messages_for_all", phone, [on_phone])
        async with asyncio.timeout(40):
            retraction = (await carbons.get())["carbon_sent"]
        assert retraction.xml.find(RETRACT).get("id") == sent["id"]

        # A reaction on the phone to Dora's message: a carbon of it; hers from XMPP: none.
        await dora.send(verified_pair.peer_chat, "Shall I bring dessert?")
        dessert = await xmpp.next_message(verified_pair.peer_jid, timeout=40)
        dessert_on_phone = await _message_on(phone_rpc, phone, "Shall I bring dessert?")
        await phone_rpc.call("send_reaction", phone, dessert_on_phone, ["😋"])
        async with asyncio.timeout(40):
            liked = (await carbons.get())["carbon_sent"]
        assert liked.xml.find(REACTIONS).get("id") == dessert["id"]
        assert [r.text for r in liked.xml.find(REACTIONS)] == ["😋"]
        xmpp.send_reactions(verified_pair.peer_jid, dessert["id"], ["👍"])
        await dora.next_event("ReactionsChanged", timeout=30)

        # Group: the message comes from her own occupant.
        await phone_rpc.call("send_msg", phone, group, {"text": "yes, at seven (phone)"})
        msg = await xmpp.next_groupchat_text(room, "yes, at seven (phone)", timeout=40)
        assert msg["from"].resource == joined["from"].resource
        # A change to the group made on the phone is the room's notice, not her words.
        await phone_rpc.call("set_chat_name", phone, group, "Family dinners")
        notice = await xmpp.next_matching(
            lambda m: m["from"].bare == room and "Family dinners" in m["body"], timeout=40
        )
        assert notice["from"].resource != joined["from"].resource, notice

        # What she sends from XMPP is not echoed back as if from another device.
        xmpp.send_chat(verified_pair.peer_jid, "sent from XMPP")
        await dora.next_message(lambda m: m["text"] == "sent from XMPP")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(5):
                echo = await carbons.get()
                pytest.fail(f"echoed as a carbon: {echo['carbon_sent']['body']!r}")
    finally:
        await phone_rpc.close()


async def _gateway_iq(xmpp: Client, prompt: str | None) -> ET.Element:
    """XEP-0100 §6.3: ask the gateway for the JID of an address (or for its prompt)."""
    iq = xmpp.make_iq_set(ito=EMAIL_JID) if prompt is not None else xmpp.make_iq_get(ito=EMAIL_JID)
    query = ET.SubElement(iq.xml, "{jabber:iq:gateway}query")
    if prompt is not None:
        ET.SubElement(query, "{jabber:iq:gateway}prompt").text = prompt
    return child(await send_iq(iq, WAIT), "{jabber:iq:gateway}query")


async def _search(xmpp: Client, address: str) -> list[dict[str, str]]:
    """XEP-0055 with a data form: the rows the gateway reports for ``address``."""
    iq = xmpp.make_iq_set(ito=EMAIL_JID)
    query = ET.SubElement(iq.xml, "{jabber:iq:search}query")
    query.append(submit_form(xmpp, {"address": address}).xml)
    result = await send_iq(iq, WAIT)
    items = result.xml.findall("{jabber:iq:search}query/{jabber:x:data}x/{jabber:x:data}item")
    rows = []
    for item in items:
        fields = item.findall("{jabber:x:data}field")
        rows.append({f.get("var", ""): f.findtext("{jabber:x:data}value") or "" for f in fields})
    return rows


async def test_adding_a_contact_by_address(
    start_passerelle: StartPasserelle, new_client: NewClient, mail_server: MailServer
) -> None:
    _, xmpp, _, _ = await signed_up_user(start_passerelle, new_client, mail_server, "nora")
    bob = PlainPeer.new(mail_server, "bob")
    bob_jid = contact_jid(bob.address)

    # XEP-0100: the prompt, then the JID of an address (in any case).
    asked = await _gateway_iq(xmpp, None)
    assert asked.findtext("{jabber:iq:gateway}prompt") == "Email address"
    answer = await _gateway_iq(xmpp, bob.address.upper())
    assert answer.findtext("{jabber:iq:gateway}jid") == bob_jid
    with pytest.raises(IqError) as err:
        await _gateway_iq(xmpp, "not an address")
    assert err.value.condition == "bad-request"

    # XEP-0055 search: the same, as a result table.
    assert await _search(xmpp, bob.address) == [{"address": bob.address, "jid": bob_jid}]

    # Roster add: a subscription request is accepted, and the address can be written to.
    xmpp.send_presence(pto=bob_jid, ptype="subscribe")
    await xmpp.next_presence(bob_jid, ptype="subscribed", timeout=WAIT)
    xmpp.send_chat(bob_jid, "Hello Bob, I added you by address")
    got = await bob.next_mail()
    assert "Hello Bob, I added you by address" in text_of(got)


async def test_mail_in_the_inbox_before_registering_is_not_shown(
    start_passerelle: StartPasserelle, new_client: NewClient, mail_server: MailServer
) -> None:
    _, xmpp, address, password = await new_user(start_passerelle, new_client, mail_server, "olga")
    bob = PlainPeer.new(mail_server, "bob")
    await bob.send(address, "Old news", "sent before Olga registered")
    olga_mailbox = PlainPeer(mail_server, address, password)
    for _ in range(50):  # delivered to the mailbox before the gateway logs in
        if await olga_mailbox.inbox_count():
            break
        await asyncio.sleep(0.2)
    assert await olga_mailbox.inbox_count() == 1

    await register(xmpp, mail_server, address, password)
    welcome = await next_message_containing(xmpp, EMAIL_JID, "already in your inbox")
    assert "not shown" in welcome["body"]
    await bob.send(address, "Fresh news", "sent after Olga registered")
    got = await xmpp.next_message(contact_jid(bob.address), timeout=40)
    assert "sent after Olga registered" in got["body"], got["body"]
