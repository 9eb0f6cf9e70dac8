"""IRC side of the end-to-end stories: a person on IRC, and Passerelle with IRC enabled.

`IrcPerson` speaks raw IRC over a socket to the test ngIRCd, like a minimal irssi: it
registers (asking for IRCv3 capabilities if told to), joins, talks, and waits (always
with a bound) for lines that match a pattern. Every line received is kept, so a test can
wait for something that already arrived. Lines may start with IRCv3 tags
(`@msgid=…;time=… :nick!u@h PRIVMSG …`) when the person asked for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from gateway.localservers import NgIrcd
from tests.e2e.conftest import IRC_JID, IRC_SECRET, PasserelleProcess
from tests.e2e.xmpp_client import Client

WAIT = 20.0
SERVER = "127.0.0.1"
NewClient = Callable[..., "asyncio.Future[Client]"]
People = Callable[..., "asyncio.Future[IrcPerson]"]


def irc_section(port: int, extra: str = "", server_extra: str = "") -> str:
    """The ``[networks.irc]`` TOML for a Passerelle that reaches the test IRC server as
    ``127.0.0.1`` (admin-defined, plain text), so ``#chan`` is ``#chan%127.0.0.1@irc.localhost``."""
    return f"""
[networks.irc]
jid = "{IRC_JID}"
secret = "{IRC_SECRET}"
{extra}

[networks.irc.servers."{SERVER}"]
host = "127.0.0.1"
port = {port}
tls = false
{server_extra}
"""


def room(channel: str, server: str = SERVER) -> str:
    return f"{channel}%{server}@{IRC_JID}"


def user(nick: str, server: str = SERVER) -> str:
    return f"{nick}%{server}@{IRC_JID}"


def server_jid(server: str = SERVER) -> str:
    return f"{server}@{IRC_JID}"


async def start_with_irc(
    start_passerelle: Callable[..., PasserelleProcess],
    port: int,
    top_level: str = "",
    **kwargs: str,
) -> PasserelleProcess:
    """Passerelle with echo and IRC; returns once the IRC network's slidge is up.
    `top_level`: keys for the top of gateway.toml (``allowed_jids = [...]``)."""
    process = start_passerelle(extra=top_level, networks=irc_section(port, **kwargs), wait=False)
    await process.wait_for(r"^irc \| .*Slidge has successfully started")
    return process


def tags_of(line: str) -> dict[str, str]:
    """The IRCv3 tags at the start of a raw line (values unescaped only for `\\s`)."""
    if not line.startswith("@"):
        return {}
    tags = {}
    for item in line[1:].split(" ", 1)[0].split(";"):
        key, _, value = item.partition("=")
        tags[key] = value.replace("\\s", " ")
    return tags


class IrcPerson:
    """One IRC user on the test server."""

    def __init__(self, nick: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.nick = nick
        self._reader, self._writer = reader, writer
        self.lines: list[str] = []
        self._used: set[int] = set()
        self._new = asyncio.Event()
        self._task = asyncio.create_task(self._read(), name=f"irc-person-{nick}")

    @classmethod
    async def connect(cls, port: int, nick: str, caps: tuple[str, ...] = ()) -> IrcPerson:
        """Register as `nick`, asking for the IRCv3 capabilities `caps` first."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        person = cls(nick, reader, writer)
        if caps:
            person.send(f"CAP REQ :{' '.join(caps)}")
        person.send(f"NICK {nick}", f"USER {nick.lower()} 0 * :{nick} on IRC")
        if caps:
            person.send("CAP END")
        await person.expect(rf"^(@\S+ )?:\S+ 001 {re.escape(nick)} ")
        return person

    async def _read(self) -> None:
        while line := await self._reader.readline():
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            if text.startswith("PING "):
                self._writer.write(f"PONG {text[5:]}\r\n".encode())
            self.lines.append(text)
            self._new.set()

    def send(self, *lines: str) -> None:
        for line in lines:
            self._writer.write(line.encode() + b"\r\n")

    def send_raw(self, data: bytes) -> None:
        self._writer.write(data)

    async def expect(self, pattern: str, timeout: float = WAIT) -> re.Match[str]:
        """The first line not matched before that matches `pattern` (a regex)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for i, line in enumerate(self.lines):
                if i not in self._used and (match := regex.search(line)):
                    self._used.add(i)
                    return match
            left = deadline - time.monotonic()
            if left <= 0 or self._task.done():
                recent = "\n".join(self.lines[-30:])
                raise AssertionError(f"{self.nick} saw no line matching {pattern!r}:\n{recent}")
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, 0.5)):
                    await self._new.wait()

    async def join(self, channel: str) -> None:
        self.send(f"JOIN {channel}")
        await self.expect(rf" 366 {re.escape(self.nick)} {re.escape(channel)} ")

    def saw(self, pattern: str) -> bool:
        """Whether any line received so far matches `pattern` (used or not)."""
        regex = re.compile(pattern)
        return any(regex.search(line) for line in self.lines)

    def change_nick(self, nick: str) -> None:
        self.send(f"NICK {nick}")
        self.nick = nick

    def say(self, target: str, text: str) -> None:
        self.send(f"PRIVMSG {target} :{text}")

    async def heard(self, sender: str, target: str, timeout: float = WAIT) -> str:
        """The text of the next PRIVMSG from `sender` to `target`."""
        return (await self.heard_tagged(sender, target, timeout))[0]

    async def heard_tagged(
        self, sender: str, target: str, timeout: float = WAIT
    ) -> tuple[str, dict[str, str]]:
        """The text and IRCv3 tags of the next PRIVMSG from `sender` to `target`."""
        match = await self.expect(
            rf"^(?:@\S+ )?:{re.escape(sender)}!\S+ PRIVMSG {re.escape(target)} :(.*)$", timeout
        )
        return match.group(1), tags_of(match.string)

    async def close(self) -> None:
        with contextlib.suppress(OSError):
            self.send("QUIT :bye")
            await self._writer.drain()
        self._writer.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await self._task
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


# --- fixtures (imported by the test_irc*.py modules) ---------------------------------


@pytest.fixture(scope="module", name="ngircd")
def ngircd_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NgIrcd]:
    with NgIrcd(tmp_path_factory.mktemp("ngircd")) as server:
        yield server


@pytest.fixture(name="irc_people")
async def irc_people_fixture(ngircd: NgIrcd) -> AsyncIterator[People]:
    people: list[IrcPerson] = []

    async def connect(nick: str) -> IrcPerson:
        person = await IrcPerson.connect(ngircd.port, nick)
        people.append(person)
        return person

    yield connect  # type: ignore[misc]
    for person in people:
        await person.close()


@pytest.fixture(name="irc_gateway")
async def irc_gateway_fixture(
    ngircd: NgIrcd, start_passerelle: Callable[..., PasserelleProcess]
) -> PasserelleProcess:
    return await start_with_irc(start_passerelle, ngircd.port)


async def registered(new_client: NewClient, name: str) -> tuple[Client, str]:
    """An XMPP user registered on the IRC gateway with their local part as nick."""
    client = await new_client(name)
    nick = client.boundjid.user
    await client.register(IRC_JID, nick=nick)
    return client, nick


async def in_channel(
    new_client: NewClient, irc_people: People, person: str, channel: str
) -> tuple[Client, str, IrcPerson, str]:
    """The opening of most stories: IRC person `person` is in `channel`, then alice
    (registered, her nick) joins it from XMPP. Returns (alice, her nick, the person,
    the room's JID)."""
    alice, nick = await registered(new_client, "alice")
    bob = await irc_people(person)
    await bob.join(channel)
    room_jid = room(channel)
    pres = await alice.join_muc(room_jid, nick)
    assert pres["type"] != "error", pres
    return alice, nick, bob, room_jid
