"""Fixtures and steps for the channel ↔ room link stories (tests/e2e/test_link*.py).

The link joins rooms on the XMPP server's MUC service, so these stories run their own
Prosody (one per module) with the link component declared, next to the shared ngIRCd
of `irc_helpers`. Rooms are created by a real XMPP client, as a room owner does, and
made persistent; Passerelle runs with only ``[link]`` (no slidge network).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from slixmpp.xmlstream import ET

from gateway.localservers import ComponentSpec, InspIRCd, NgIrcd, Prosody
from gateway.localservers._process import ManagedServer
from gateway.localservers.prosody import lua_str
from tests.e2e.conftest import PASSWORD, PasserelleProcess
from tests.e2e.irc_helpers import IrcPerson
from tests.e2e.irc_helpers import People as IrcPeople
from tests.e2e.xmpp_client import Client

LINK_JID = "link.localhost"
LINK_SECRET = "link-secret-for-tests"
DOMAIN = "localhost"
MUC_DOMAIN = f"conference.{DOMAIN}"
ADMIN = "linkadmin"
WAIT = 20.0
_numbers = itertools.count(1)

People = Callable[..., "asyncio.Future[Client]"]
StartLink = Callable[..., PasserelleProcess]


def room_jid(name: str) -> str:
    return f"{name}@{MUC_DOMAIN}"


def link_toml(
    room: str, irc_port: int, channel: str, scheme: str = "irc", **options: object
) -> str:
    """One ``[[links]]`` entry for a test IRC server (``scheme="ircs"``: over TLS)."""
    lines = ["[[links]]", f'muc = "{room}"', f'irc = "{scheme}://127.0.0.1:{irc_port}/{channel}"']
    for key, value in options.items():
        lines.append(f"{key} = {str(value).lower() if isinstance(value, bool) else repr(value)}")
    return "\n".join(lines) + "\n"


def link_config(directory: Path, prosody: Prosody, links: str, link_extra: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "gateway.toml"
    path.write_text(
        f"""
data_dir = "./data"
admins = ["{ADMIN}@{DOMAIN}"]

[xmpp]
host = "127.0.0.1"
port = {prosody.component_port}

[link]
jid = "{LINK_JID}"
secret = "{LINK_SECRET}"
{link_extra}

{links}
""",
        encoding="utf-8",
    )
    return path


def linked(room: str, channel: str) -> str:
    """The log line of a link that has joined both sides."""
    return rf"^link \| .*linked {re.escape(room)} ↔ {re.escape(channel)} "


async def start_linked(
    start_link: StartLink,
    room: str,
    irc_port: int,
    channel: str,
    scheme: str = "irc",
    link_extra: str = "",
    **options: object,
) -> PasserelleProcess:
    """Passerelle with one link (`link_toml`'s arguments), once it has joined both sides."""
    gateway = start_link(link_toml(room, irc_port, channel, scheme, **options), link_extra)
    await gateway.wait_for(linked(room, channel))
    return gateway


class LinkProsody(Prosody):
    """The stories' Prosody, with its admin shell (``mod_admin_shell`` over
    ``mod_admin_socket``) on: what a server admin types into ``prosodyctl shell``, a
    story can do too."""

    def render_config(self) -> str:
        text = super().render_config()
        first = 'modules_enabled = { "roster"'
        assert first in text, "the global modules_enabled line moved"
        return text.replace(first, 'modules_enabled = { "admin_shell", "admin_socket", "roster"', 1)

    def shell(self, lua: str) -> str:
        """Run Lua in the server (``prosodyctl shell ">…"``) and return what it printed."""
        result = subprocess.run(
            ["prosodyctl", "--config", str(self.config_path), "shell", f">{lua}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def forget_occupant(self, room: str, jid: str) -> str:
        """Make `room` forget the occupant with full JID `jid` without telling anyone —
        no presence, as when the MUC service loses its state — and return its nick."""
        host = room.partition("@")[2]
        return self.shell(
            f"local r = prosody.hosts[{lua_str(host)}].modules.muc.get_room_from_jid("
            f"{lua_str(room)}); local nick = r._jid_nick[{lua_str(jid)}]; "
            f"r._occupants[nick] = nil; r._jid_nick[{lua_str(jid)}] = nil; print(nick)"
        ).splitlines()[0]


@pytest.fixture(scope="module", name="link_prosody")
def link_prosody_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LinkProsody]:
    server = LinkProsody(
        tmp_path_factory.mktemp("link-prosody"),
        components=[ComponentSpec(LINK_JID, LINK_SECRET, privileged=False)],
    )
    with server:
        server.register(ADMIN, PASSWORD)
        yield server


@pytest.fixture(name="own_ngircd")
def own_ngircd_fixture(tmp_path: Path) -> Iterator[NgIrcd]:
    """An ngIRCd this test may stop and start again (same port)."""
    with NgIrcd(tmp_path / "ngircd") as server:
        yield server


async def server_down(server: ManagedServer, gateway: PasserelleProcess, noticed: str) -> int:
    """Stop `server`; return once the link logged `noticed` (its log position before)."""
    mark = len(gateway.lines)
    await asyncio.to_thread(server.stop)
    await gateway.wait_for(noticed, after=mark)
    return mark


async def irc_down(server: NgIrcd, gateway: PasserelleProcess) -> int:
    """Stop the IRC server; return once the link noticed (its log position then)."""
    return await server_down(server, gateway, r"reconnecting in")


async def irc_up(
    server: NgIrcd, gateway: PasserelleProcess, mark: int, nick: str, channel: str
) -> IrcPerson:
    """Start the IRC server again once the link's connections wait a few seconds before
    their next attempt, so that `nick` is in `channel` before they come back."""
    await gateway.wait_for(r"reconnecting in ([3-9]|\d\d)\.\d s", after=mark, timeout=60)
    await asyncio.to_thread(server.start)
    person = await IrcPerson.connect(server.port, nick)
    await person.join(channel)
    return person


async def xmpp_down(server: Prosody, gateway: PasserelleProcess) -> int:
    """Stop the XMPP server; return once the link noticed (its log position then)."""
    return await server_down(server, gateway, r"XMPP server at .*: lost the connection")


async def xmpp_up(
    server: Prosody, gateway: PasserelleProcess, mark: int, room: str, channel: str, user: Client
) -> Client:
    """Start the XMPP server again; once the link has linked `room` and `channel` again,
    log `user`'s account in again. The new client is the caller's to stop."""
    await asyncio.to_thread(server.start)
    await gateway.wait_for(linked(room, channel), after=mark, timeout=60)
    client = Client(user.boundjid.bare, PASSWORD)
    await client.start(server.c2s_port)
    return client


@pytest.fixture(name="people")
async def people_fixture(link_prosody: Prosody) -> AsyncIterator[People]:
    """Log in fresh XMPP accounts (`people("alice")`), or the admin (`people(ADMIN)`)."""
    clients: list[Client] = []

    async def make(name: str) -> Client:
        user = name if name == ADMIN else f"{name}{next(_numbers)}"
        if user != ADMIN:
            await asyncio.to_thread(link_prosody.register, user, PASSWORD)
        client = Client(f"{user}@{DOMAIN}", PASSWORD)
        clients.append(client)
        await client.start(link_prosody.c2s_port)
        return client

    yield make  # type: ignore[misc]
    for client in clients:
        await client.stop()


@pytest.fixture(name="start_link")
def start_link_fixture(link_prosody: Prosody, tmp_path: Path) -> Iterator[StartLink]:
    """Start ``passerelle run`` with the link component and these ``[[links]]``."""
    started: list[PasserelleProcess] = []

    def start(
        links: str = "", link_extra: str = "", config: Path | None = None
    ) -> PasserelleProcess:
        path = config or link_config(tmp_path / "passerelle", link_prosody, links, link_extra)
        process = PasserelleProcess(path)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
        if os.environ.get("PASSERELLE_TEST_VERBOSE"):
            print(process.output())


async def linked_room(
    name: str,
    irc_port: int,
    alice: Client,
    dave: IrcPerson,
    start_link: StartLink,
    **room_config: str,
) -> tuple[str, str, PasserelleProcess]:
    """Room `name` made by alice (persistent, with `room_config`), `#name` joined by dave,
    and a Passerelle that has linked them: (room, channel, Passerelle)."""
    room, channel = room_jid(name), f"#{name}"
    await alice.link_create_room(room, "alice", persistentroom="1", **room_config)
    await dave.join(channel)
    gateway = await start_linked(start_link, room, irc_port, channel)
    return room, channel, gateway


async def alice_linked(
    name: str, server: NgIrcd, people: People, start_link: StartLink, **options: object
) -> tuple[str, str, Client, PasserelleProcess, tuple[str, str]]:
    """alice in room `name`, linked to `#name` on `server` (one a story may stop: its IRC
    person leaves before it returns), and her first line on IRC.
    Returns (room, channel, alice, Passerelle, (nick, text) of that line on IRC)."""
    room, channel = room_jid(name), f"#{name}"
    alice = await people("alice")
    await alice.link_create_room(room, "alice", persistentroom="1")
    dave = await IrcPerson.connect(server.port, f"d{name}")
    await dave.join(channel)
    try:
        gateway = await start_linked(start_link, room, server.port, channel, "irc", "", **options)
        alice.send_groupchat(room, "before")
        (first,) = await channel_texts(dave, channel, 1)
    finally:
        await dave.close()
    return room, channel, alice, gateway, first


async def channel_texts(
    person: IrcPerson, channel: str, count: int, timeout: float = WAIT
) -> list[tuple[str, str]]:
    """The next `count` PRIVMSGs to `channel` that `person` received, as (nick, text)."""
    texts = []
    for _ in range(count):
        match = await person.expect(
            rf"^(?:@\S+ )?:([^!\s]+)!\S+ PRIVMSG {re.escape(channel)} :(.*)$", timeout
        )
        texts.append((match.group(1), match.group(2)))
    return texts


async def quiet(seconds: float = 1.5) -> None:
    """Give a duplicate the time to show up before checking there is none."""
    await asyncio.sleep(seconds)


# --- a conversation --------------------------------------------------------------------


def on_irc(nick: str, text: str) -> str:
    """What IRC shows for an XMPP line: /me becomes a CTCP ACTION."""
    return f"\x01ACTION {text[4:]}\x01" if text.startswith("/me ") else text


def on_xmpp(text: str) -> str:
    """What the room shows for an IRC line."""
    return f"/me {text[8:-1]}" if text.startswith("\x01ACTION ") else text


class Conversation:
    """Three people in the room, three on IRC, one link between them."""

    def __init__(
        self,
        room: str,
        channel: str,
        xmpp: dict[str, Client],
        irc: dict[str, IrcPerson],
        gateway: PasserelleProcess,
    ) -> None:
        self.room, self.channel, self.xmpp, self.irc = room, channel, xmpp, irc
        self.gateway = gateway

    def say(self, speaker: str, text: str) -> None:
        if speaker in self.xmpp:
            self.xmpp[speaker].send_groupchat(self.room, text)
        else:
            self.irc[speaker].say(self.channel, text)

    def seen_in_room(self, speaker: str, text: str) -> tuple[str, str]:
        return (speaker, text if speaker in self.xmpp else on_xmpp(text))

    def seen_on_irc(self, speaker: str, text: str) -> tuple[str, str]:
        return (f"{speaker}[x]", on_irc(speaker, text)) if speaker in self.xmpp else (speaker, text)

    async def turn(self, speaker: str, text: str) -> None:
        """`speaker` says `text`, and everyone sees it before anyone answers."""
        self.say(speaker, text)
        for client in self.xmpp.values():
            assert await client.link_room_texts(self.room, 1) == [self.seen_in_room(speaker, text)]
        for nick, person in self.irc.items():
            if nick != speaker:
                assert await channel_texts(person, self.channel, 1) == [
                    self.seen_on_irc(speaker, text)
                ]

    async def nothing_more(self) -> None:
        """No echo, no duplicate: nobody receives anything else."""
        await quiet()
        for client in self.xmpp.values():
            with pytest.raises(TimeoutError):
                await client.next_groupchat_text(self.room, timeout=0.2)
        for person in self.irc.values():
            with pytest.raises(AssertionError):
                await channel_texts(person, self.channel, 1, timeout=0.2)


async def three_and_three(
    n: int,
    ngircd: NgIrcd | InspIRCd,
    people: People,
    irc_people: IrcPeople,
    start_link: StartLink,
    name: str = "story",
    *,
    link_port: int | None = None,
    scheme: str = "irc",
    link_extra: str = "",
    **options: object,
) -> Conversation:
    """alice, bob and carol in room `{name}{n}`, dave, erin and frank in `#{name}{n}`,
    everyone's nick ending in `n`, and a Passerelle that links them (through
    `link_port` with `scheme` if given, e.g. the server's TLS port and ``ircs``)."""
    room, channel = room_jid(f"{name}{n}"), f"#{name}{n}"
    alice, bob, carol = [await people(name) for name in ("alice", "bob", "carol")]
    await alice.link_create_room(room, f"alice{n}", persistentroom="1")
    for client, nick in ((bob, f"bob{n}"), (carol, f"carol{n}")):
        assert (await client.join_muc(room, nick))["type"] != "error"
    irc = {f"{name}{n}": await irc_people(f"{name}{n}") for name in ("dave", "erin", "frank")}
    for person in irc.values():
        await person.join(channel)
    port = link_port if link_port is not None else ngircd.port
    gateway = await start_linked(start_link, room, port, channel, scheme, link_extra, **options)
    xmpp = {f"alice{n}": alice, f"bob{n}": bob, f"carol{n}": carol}
    return Conversation(room, channel, xmpp, irc, gateway)


# --- attachments and notices -----------------------------------------------------------


def send_attachment(
    client: Client, room: str, body: str, url: str, reply: tuple[str, str] | None = None
) -> None:
    """A groupchat message with an XEP-0066 OOB URL, as Conversations and Gajim send
    after an HTTP upload (`body` may be the URL, text, or empty); `reply` is
    (stanza-id, occupant JID) of the message it answers (XEP-0461)."""
    msg = client.make_message(mto=room, mtype="groupchat")
    if body:
        msg["body"] = body
    msg["id"] = client.new_id()
    oob = ET.SubElement(msg.xml, "{jabber:x:oob}x")
    ET.SubElement(oob, "{jabber:x:oob}url").text = url
    if reply is not None:
        ET.SubElement(msg.xml, "{urn:xmpp:reply:0}reply", {"id": reply[0], "to": reply[1]})
    msg.send()


async def private_notices(client: Client, room: str, timeout: float) -> list[str]:
    """The bodies of the private messages (through `room`) that `client` receives within
    `timeout` seconds; the other messages it receives meanwhile are skipped."""
    bodies: list[str] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (left := deadline - loop.time()) > 0:
        try:
            msg = await asyncio.wait_for(client.messages.get(), left)
        except TimeoutError:
            break
        if msg["from"].bare == room and msg["type"] == "chat" and msg["body"]:
            bodies.append(msg["body"])
    return bodies
