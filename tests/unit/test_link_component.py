"""The link component's XMPP side, stanza in → what it does, without a server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from slixmpp import Message, Presence
from slixmpp.xmlstream import ET, StanzaBase

from gateway.link.component import (
    JoinResult,
    LinkComponent,
    MucPresence,
    RoomMessage,
    parse_message,
    parse_presence,
)

ROOM = "lounge@conference.example.org"
LISTENER = "#lounge%irc.example.net@link.example.org/link"
PUPPET = "dave%irc.example.net@link.example.org/irc"


def presence(xml: str) -> Presence:
    """A presence as the component receives it (in the stanza classes' namespace, which
    a component sets to jabber:component:accept)."""
    ns = Presence.namespace
    return Presence(xml=ET.fromstring(xml.replace("<presence ", f"<presence xmlns='{ns}' ", 1)))


def message(xml: str) -> Message:
    ns = Message.namespace
    xml = xml.replace("<message ", f"<message xmlns='{ns}' ", 1)
    return Message(xml=ET.fromstring(xml))  # type: ignore[no-untyped-call]  # slixmpp: unannotated


MUC_USER = "xmlns='http://jabber.org/protocol/muc#user'"


@pytest.mark.parametrize(
    ("xml", "expected"),
    [
        (
            f"<presence from='{ROOM}/#lounge' to='{LISTENER}'><x {MUC_USER}>"
            "<status code='201'/><item role='moderator' affiliation='owner' "
            f"jid='{LISTENER}'/><status code='110'/></x></presence>",
            MucPresence(
                ROOM, "#lounge", LISTENER, "available", frozenset({110, 201}),
                real_jid=LISTENER, role="moderator", is_muc=True,
            ),
        ),
        (
            f"<presence type='error' from='{ROOM}/alice' to='{PUPPET}'>"
            "<error type='cancel'><conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
            "<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>taken</text></error></presence>",
            MucPresence(ROOM, "alice", PUPPET, "error", error="conflict", error_text="taken"),
        ),
        (
            f"<presence type='unavailable' from='{ROOM}/bob' to='{LISTENER}'><x {MUC_USER}>"
            "<item role='participant' affiliation='none' nick='robert'/><status code='303'/>"
            "</x></presence>",
            MucPresence(
                ROOM, "bob", LISTENER, "unavailable", frozenset({303}),
                role="participant", new_nick="robert", is_muc=True,
            ),
        ),
        (
            f"<presence type='unavailable' from='{ROOM}/#lounge' to='{LISTENER}'><x {MUC_USER}>"
            "<item role='none' affiliation='none'/><destroy/><status code='110'/></x></presence>",
            MucPresence(
                ROOM, "#lounge", LISTENER, "unavailable", frozenset({110}),
                role="none", destroyed=True, is_muc=True,
            ),
        ),
        (
            f"<presence from='someone@example.org/x' to='{PUPPET}'/>",
            MucPresence("someone@example.org", "x", PUPPET, "available"),
        ),
    ],
)  # fmt: skip
def test_parse_presence(xml: str, expected: MucPresence) -> None:
    assert parse_presence(presence(xml)) == expected


def test_parse_message() -> None:
    msg = message(
        f"<message type='groupchat' id='m1' from='{ROOM}/alice' to='{LISTENER}'>"
        "<body>&gt; dave: is it?\nyes</body>"
        "<origin-id xmlns='urn:xmpp:sid:0' id='o1'/>"
        "<stanza-id xmlns='urn:xmpp:sid:0' by='alice@example.org' id='not-the-room'/>"
        f"<stanza-id xmlns='urn:xmpp:sid:0' by='{ROOM}' id='s1'/>"
        "<replace xmlns='urn:xmpp:message-correct:0' id='m0'/>"
        f"<reply xmlns='urn:xmpp:reply:0' to='{ROOM}/dave' id='s0'/>"
        "<fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'><body start='0' end='14'/></fallback>"
        "<x xmlns='jabber:x:oob'><url>https://up.example/a.png</url></x>"
        "</message>"
    )
    assert parse_message(msg) == RoomMessage(
        room=ROOM,
        nick="alice",
        to=LISTENER,
        body="> dave: is it?\nyes",
        id="m1",
        origin_id="o1",
        stanza_id="s1",
        replace_id="m0",
        reply_to="dave",
        reply_id="s0",
        fallback=((0, 14),),
        attachment="https://up.example/a.png",
    )


def test_parse_message_subject_and_history() -> None:
    msg = message(
        f"<message type='groupchat' from='{ROOM}/alice' to='{LISTENER}'><subject>Linking</subject>"
        "<delay xmlns='urn:xmpp:delay' stamp='2020-01-01T00:00:00Z'/></message>"
    )
    parsed = parse_message(msg)
    assert parsed.subject == "Linking" and parsed.delayed and parsed.body == ""


@dataclass
class FakeLink:
    room: str = ROOM
    listener_jid: str = LISTENER
    puppets: set[str] = field(default_factory=lambda: {PUPPET})
    presences: list[MucPresence] = field(default_factory=list)
    messages: list[RoomMessage] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    privates: list[tuple[str, str, str]] = field(default_factory=list)

    def owns(self, jid: str) -> bool:
        return jid == self.listener_jid or jid in self.puppets

    def nicks(self) -> set[str]:
        return {"#lounge", "dave"}

    def on_presence(self, presence: MucPresence) -> None:
        self.presences.append(presence)

    def on_message(self, message: RoomMessage) -> None:
        self.messages.append(message)

    def on_error(self, jid: str, condition: str, text: str) -> None:
        self.errors.append((jid, condition))

    def on_private(self, jid: str, nick: str, body: str) -> None:
        self.privates.append((jid, nick, body))


@pytest.fixture
def sent() -> list[StanzaBase]:
    return []


@pytest.fixture
def component(sent: list[StanzaBase]) -> Iterator[LinkComponent]:
    xmpp = LinkComponent("link.example.org", "secret", ["admin@example.org"])
    xmpp.send = lambda stanza, *args, **kwargs: sent.append(stanza)  # type: ignore[method-assign]
    xmpp.online.set()
    yield xmpp


async def test_only_the_listeners_copy_of_a_message_is_read(
    component: LinkComponent, sent: list[StanzaBase]
) -> None:
    link = FakeLink()
    component.attach(link)
    body = "<body>hi</body></message>"
    component._on_message(
        message(f"<message type='groupchat' from='{ROOM}/alice' to='{LISTENER}'>{body}")
    )
    component._on_message(
        message(f"<message type='groupchat' from='{ROOM}/alice' to='{PUPPET}'>{body}")
    )
    assert [m.body for m in link.messages] == ["hi"]
    assert sent == []
    assert component.our_nicks(ROOM) == {"#lounge", "dave"}


async def test_a_stale_occupant_of_ours_leaves_once(
    component: LinkComponent, sent: list[StanzaBase]
) -> None:
    component.attach(FakeLink())
    ghost = "erin%irc.example.net@link.example.org/irc"
    for _ in range(3):
        component._on_message(
            message(
                f"<message type='groupchat' from='{ROOM}/bob' to='{ghost}'><body>x</body></message>"
            )
        )
    assert len(sent) == 1
    leave = sent[0]
    assert isinstance(leave, Presence)
    assert (leave["type"], leave["from"].full, leave["to"].bare) == ("unavailable", ghost, ROOM)
    # Someone else's JID, or a presence without MUC payload, is none of our business.
    component._on_presence(
        presence(f"<presence from='{ROOM}/x' to='bob@example.org/y'><x {MUC_USER}/></presence>")
    )
    component._on_presence(presence(f"<presence from='bob@example.org/x' to='{ghost}x'/>"))
    assert len(sent) == 1


async def test_errors_go_to_the_link_and_never_out(
    component: LinkComponent, sent: list[StanzaBase]
) -> None:
    link = FakeLink()
    component.attach(link)
    component._on_message(
        message(
            f"<message type='error' from='{ROOM}' to='{PUPPET}'><error type='cancel'>"
            "<not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
        )
    )
    assert link.errors == [(PUPPET, "not-acceptable")]
    bounce = message(f"<message type='error' from='{PUPPET}' to='{ROOM}/alice'/>")
    assert component._no_errors_to_rooms(bounce) is None
    normal = message(f"<message type='groupchat' from='{PUPPET}' to='{ROOM}'/>")
    assert component._no_errors_to_rooms(normal) is normal


async def test_a_handler_never_raises(component: LinkComponent) -> None:
    class Broken(FakeLink):
        def on_message(self, message: RoomMessage) -> None:
            raise RuntimeError("bug")

    component.attach(Broken())
    component._on_message(
        message(
            f"<message type='groupchat' from='{ROOM}/alice' to='{LISTENER}'><body>x</body></message>"
        )
    )  # logged, not raised (slixmpp would answer the room with an error)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            f"<presence from='{ROOM}/dave' to='{PUPPET}'><x {MUC_USER}><item role='participant'/>"
            "<status code='110'/></x></presence>",
            JoinResult("dave"),
        ),
        (
            f"<presence from='{ROOM}/dave' to='{PUPPET}'><x {MUC_USER}><item role='moderator'/>"
            "<status code='201'/><status code='110'/></x></presence>",
            JoinResult("dave", created=True),
        ),
        (
            f"<presence type='error' from='{ROOM}/dave' to='{PUPPET}'><error type='cancel'>"
            "<conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>",
            JoinResult(error="conflict"),
        ),
    ],
)
async def test_join_waits_for_the_rooms_answer(
    component: LinkComponent, sent: list[StanzaBase], answer: str, expected: JoinResult
) -> None:
    component.attach(FakeLink())
    joining = asyncio.create_task(component.join(ROOM, "dave", PUPPET))
    await asyncio.sleep(0)
    (pres,) = sent
    assert pres["to"].full == f"{ROOM}/dave" and pres["from"].full == PUPPET
    history = pres.xml.find(
        "{http://jabber.org/protocol/muc}x/{http://jabber.org/protocol/muc}history"
    )
    assert history is not None and history.get("maxstanzas") == "0"
    # Presences of other occupants come first; only ours answers.
    component._on_presence(
        presence(f"<presence from='{ROOM}/alice' to='{PUPPET}'><x {MUC_USER}/></presence>")
    )
    assert not joining.done()
    component._on_presence(presence(answer))
    assert await joining == expected


async def test_a_lost_connection_ends_every_wait(component: LinkComponent) -> None:
    joining = asyncio.create_task(component.join(ROOM, "dave", PUPPET))
    await asyncio.sleep(0)
    component._on_disconnected(None)
    assert (await joining).error == "remote-server-not-found"
    assert not component.online.is_set()
    assert component.state_changes.get_nowait() == "down"
