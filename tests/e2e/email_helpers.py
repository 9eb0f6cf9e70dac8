"""Steps and fixtures for the email stories: a real mail server and two kinds of peer.

* ``mail_server`` (session): Postfix + Dovecot on loopback (:mod:`gateway.localservers.mail`);
  each test creates its own mailboxes with :func:`new_mailbox`.
* :class:`PlainPeer`: an ordinary email user — ``smtplib`` to send, ``imaplib`` to read.
* :class:`DeltaPeer`: a Delta Chat user with the app's default settings, driven through
  its own ``deltachat-rpc-server``.
* :func:`start_email_gateway` runs Passerelle with the email network and
  :func:`register` signs an XMPP user up with a mailbox.

Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.message
import email.policy
import imaplib
import itertools
import re
import smtplib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from slixmpp import Iq
from slixmpp.xmlstream import ET

from gateway.localservers.mail import MailServer
from legacy_plugins.email.rpc import DeltaChatRpc
from tests.e2e.conftest import EMAIL_JID, EMAIL_SECRET, PasserelleProcess
from tests.e2e.xmpp_client import Client, send_iq, start_command

NewClient = Callable[..., "asyncio.Future[Client]"]
StartPasserelle = Callable[..., PasserelleProcess]
WAIT = 30.0
MAIL_DOMAIN = "mail.test"
_mailboxes = itertools.count(1)


@pytest.fixture(scope="session", name="mail_server")
def mail_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailServer]:
    """Import this into a test module; tests ask for ``mail_server``."""
    server = MailServer(tmp_path_factory.mktemp("mail"), domain=MAIL_DOMAIN)
    with server:
        yield server


def new_mailbox(mail: MailServer, name: str) -> tuple[str, str]:
    """A fresh mailbox ``<name><n>@mail.test``; returns (address, password)."""
    user = f"{name}{next(_mailboxes)}"
    password = f"pw-{user}-secret"
    return mail.add_user(user, password), password


def email_network(extra: str = "") -> str:
    return f"""
[networks.email]
jid = "{EMAIL_JID}"
secret = "{EMAIL_SECRET}"
{extra}
"""


def start_email_gateway(
    start_passerelle: Callable[..., PasserelleProcess], extra: str = ""
) -> PasserelleProcess:
    """Passerelle with echo and email; returns once both networks have started."""
    process: PasserelleProcess = start_passerelle(networks=email_network(extra), wait=False)
    first = process.wait_for_line("Slidge has successfully started", timeout=90)
    process.wait_for_line("Slidge has successfully started", after=first + 1, timeout=90)
    return process


def registration_fields(
    mail: MailServer, address: str, password: str, name: str = ""
) -> dict[str, str]:
    return {
        "address": address,
        "password": password,
        "name": name,
        "imap_host": "127.0.0.1",
        "imap_port": str(mail.imap_port),
        "imap_security": "plain",
        "smtp_host": "127.0.0.1",
        "smtp_port": str(mail.smtp_port),
        "smtp_security": "plain",
    }


async def register(
    client: Client, mail: MailServer, address: str, password: str, name: str = ""
) -> None:
    """Register with a mailbox and wait until the session is logged in."""
    await client.register(EMAIL_JID, **registration_fields(mail, address, password, name))
    await logged_in(client)


class User(NamedTuple):
    """An XMPP user registered with the email gateway, and their mailbox."""

    passerelle: PasserelleProcess
    xmpp: Client
    address: str
    password: str


async def new_user(
    start_passerelle: StartPasserelle,
    new_client: NewClient,
    mail: MailServer,
    name: str,
    extra: str = "",
) -> User:
    """Passerelle with the email network (``extra``: more keys for its section), a new
    XMPP user and a new mailbox ``<name><n>@mail.test``, not registered with each other
    yet."""
    passerelle = start_email_gateway(start_passerelle, extra)
    xmpp = await new_client(name)
    address, password = new_mailbox(mail, name)
    return User(passerelle, xmpp, address, password)


async def signed_up_user(
    start_passerelle: StartPasserelle,
    new_client: NewClient,
    mail: MailServer,
    name: str,
    display_name: str = "",
) -> User:
    """`new_user`, registered with its mailbox (as `display_name` if given)."""
    user = await new_user(start_passerelle, new_client, mail, name)
    await register(user.xmpp, mail, user.address, user.password, display_name)
    return user


async def logged_in(client: Client, timeout: float = 60) -> None:
    """The gateway's "Connected as …" status (show=chat; slixmpp reports show as type)."""
    await client.next_presence(EMAIL_JID, ptype="chat", timeout=timeout)


async def next_message_containing(
    client: Client, sender: str, text: str, timeout: float = WAIT
) -> Any:
    """The next message from ``sender`` whose body contains ``text`` (others skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await client.next_message(sender, timeout=timeout)
            if text in msg["body"]:
                return msg


async def create_group(client: Client, name: str, members: list[str]) -> Iq:
    """slidge's "create group" ad-hoc command: the category node, then its form. The
    members are sent as the form offers them (slidge lists full JIDs) in a field typed
    list-multi: slidge reads a single untyped value as text and refuses it."""
    groups = "https://slidge.im/command/core/groups"
    result = await start_command(client, EMAIL_JID, groups, WAIT)
    steps: list[dict[str, tuple[str, list[str]]]] = [
        {"command": ("list-single", [f"{groups}/create-group"])},
        {"group_name": ("text-single", [name]), "contacts": ("list-multi", members)},
    ]
    for values in steps:
        command = result["command"]
        offered = command["form"].get_fields()
        form = ET.Element("{jabber:x:data}x", {"type": "submit"})
        for var, (ftype, wanted) in values.items():
            options = [o["value"] for o in offered[var]["options"]] if var in offered else []
            chosen = [o for o in options if any(o.startswith(w) for w in wanted)] or wanted
            field = ET.SubElement(form, "{jabber:x:data}field", {"var": var, "type": ftype})
            for value in chosen:
                ET.SubElement(field, "{jabber:x:data}value").text = value
        iq = client.make_iq_set(ito=EMAIL_JID)
        iq["command"]["node"] = groups
        iq["command"]["sessionid"] = command["sessionid"]
        iq["command"]["action"] = "complete" if "complete" in command["actions"] else "next"
        iq["command"].xml.append(form)
        result = await send_iq(iq, WAIT)
    return result


def contact_jid(address: str) -> str:
    return address.lower().replace("@", "\\40") + "@" + EMAIL_JID


# -- an ordinary email user -----------------------------------------------------------------


class PlainPeer:
    """Someone with a mail program: SMTP to send, IMAP to read, nothing else."""

    def __init__(self, mail: MailServer, address: str, password: str, name: str = "") -> None:
        self.mail = mail
        self.address = address
        self.password = password
        self.name = name or address.split("@", 1)[0].capitalize()
        self._seen: set[bytes] = set()

    @classmethod
    def new(cls, mail: MailServer, name: str, display: str = "") -> PlainPeer:
        """Someone with a fresh mailbox ``<name><n>@mail.test`` (`display`: the name
        their mails show)."""
        return cls(mail, *new_mailbox(mail, name), name=display)

    async def exchange(self, xmpp: Client, address: str, said: str, answer: str) -> str:
        """`xmpp` (the XMPP user of `address`) writes `said` to us; we answer `answer`
        once it arrived, and `xmpp` reads it. Returns our contact JID."""
        jid = contact_jid(self.address)
        xmpp.send_chat(jid, said)
        assert said in text_of(await self.next_mail())
        await self.send(address, f"Re: {said}", answer)
        assert answer in (await xmpp.next_message(jid, timeout=30))["body"]
        return jid

    def _send(self, msg: email.message.EmailMessage, to: list[str]) -> None:
        with smtplib.SMTP("127.0.0.1", self.mail.smtp_port, timeout=WAIT) as smtp:
            smtp.login(self.address, self.password)
            smtp.send_message(msg, self.address, to)

    async def send(
        self, to: str, subject: str, body: str, *, html: str | None = None, **headers: str
    ) -> str:
        msg = email.message.EmailMessage()
        msg["From"] = f"{self.name} <{self.address}>"
        msg["To"] = to
        msg["Subject"] = subject
        msg["Message-ID"] = email.utils.make_msgid(domain=MAIL_DOMAIN)
        for key, value in headers.items():
            msg[key.replace("_", "-")] = value
        msg.set_content(body)
        if html is not None:
            msg.add_alternative(html, subtype="html")
        await asyncio.to_thread(self._send, msg, [to])
        return str(msg["Message-ID"])

    def _fetch_new(self) -> list[email.message.EmailMessage]:
        imap = imaplib.IMAP4("127.0.0.1", self.mail.imap_port, timeout=WAIT)
        try:
            imap.login(self.address, self.password)
            imap.select("INBOX")
            _typ, data = imap.search(None, "ALL")
            found = []
            for num in data[0].split():
                _typ, parts = imap.fetch(num, "(RFC822)")
                raw = parts[0][1] if parts and isinstance(parts[0], tuple) else b""
                msg = email.message_from_bytes(raw, policy=email.policy.default)
                key = str(msg["Message-ID"]).encode()
                if key in self._seen:
                    continue
                self._seen.add(key)
                found.append(msg)
            return found
        finally:
            with contextlib.suppress(Exception):
                imap.logout()

    async def next_mail(
        self,
        predicate: Callable[[email.message.EmailMessage], bool] = lambda _m: True,
        timeout: float = WAIT,
    ) -> email.message.EmailMessage:
        """The next mail in the inbox that satisfies ``predicate`` (polls IMAP)."""
        deadline = time.monotonic() + timeout
        while True:
            for msg in await asyncio.to_thread(self._fetch_new):
                if predicate(msg):
                    return msg
            if time.monotonic() > deadline:
                raise TimeoutError(f"no mail for {self.address} within {timeout} s")
            await asyncio.sleep(0.3)

    async def inbox_count(self) -> int:
        def count() -> int:
            imap = imaplib.IMAP4("127.0.0.1", self.mail.imap_port, timeout=WAIT)
            try:
                imap.login(self.address, self.password)
                _typ, data = imap.select("INBOX")
                return int(data[0] or 0)
            finally:
                with contextlib.suppress(Exception):
                    imap.logout()

        return await asyncio.to_thread(count)


def text_of(msg: email.message.EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain", "html"))
    return str(part.get_content()) if part is not None else ""


# -- a Delta Chat user ------------------------------------------------------------------------


class DeltaPeer:
    """A Delta Chat account with the app's defaults (encryption forced), in its own core."""

    def __init__(self, rpc: DeltaChatRpc, account: int, address: str) -> None:
        self.rpc = rpc
        self.id = account
        self.address = address
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def call(self, method: str, *params: Any) -> Any:
        return await self.rpc.call(method, self.id, *params, timeout=60)

    async def next_event(
        self,
        kind: str,
        predicate: Callable[[dict[str, Any]], bool] = lambda _e: True,
        timeout: float = WAIT,
    ) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                event = await self.events.get()
                if event["kind"] == kind and predicate(event):
                    return event

    async def next_message(
        self,
        predicate: Callable[[dict[str, Any]], bool] = lambda _m: True,
        timeout: float = WAIT,
    ) -> dict[str, Any]:
        """The next incoming message (as the core's JSON) that satisfies ``predicate``."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.next_event("IncomingMsg", timeout=timeout)
                msg: dict[str, Any] = await self.call("get_message", event["msgId"])
                if predicate(msg):
                    return msg

    async def send(self, chat_id: int, text: str, **data: Any) -> int:
        return int(await self.call("send_msg", chat_id, {"text": text, **data}))

    async def join(self, link: str) -> int:
        chat_id = int(await self.call("secure_join", link))
        await self.next_event(
            "SecurejoinJoinerProgress", lambda e: e.get("progress") == 1000, timeout=60
        )
        return chat_id

    async def invite_link(self) -> str:
        return str(await self.call("get_chat_securejoin_qr_code", None))

    async def contact_id(self, address: str) -> int:
        for cid in await self.call("get_contact_ids", 0, address):
            contact = await self.call("get_contact", cid)
            if contact["address"].lower() == address.lower():
                return int(cid)
        raise LookupError(f"no key-contact for {address}")


@contextlib.asynccontextmanager
async def delta_peer(mail: MailServer, directory: Path, name: str) -> AsyncIterator[DeltaPeer]:
    """A configured Delta Chat user on a fresh mailbox, its events queued."""
    address, password = new_mailbox(mail, name)
    rpc = DeltaChatRpc(directory / f"dc-{name}", name=f"peer-{name}")
    await rpc.start()
    pump: asyncio.Task[None] | None = None
    try:
        account = int(await rpc.call("add_account"))
        peer = DeltaPeer(rpc, account, address)

        async def read_events() -> None:
            while True:
                event = await rpc.next_event()
                if event.get("contextId") == account:
                    peer.events.put_nowait(event["event"])

        pump = asyncio.create_task(read_events())
        await rpc.call("batch_set_config", account, {"displayname": name.capitalize()})
        await rpc.call(
            "add_or_update_transport",
            account,
            {
                "addr": address,
                "password": password,
                "imapServer": "127.0.0.1",
                "imapPort": mail.imap_port,
                "imapSecurity": "plain",
                "smtpServer": "127.0.0.1",
                "smtpPort": mail.smtp_port,
                "smtpSecurity": "plain",
            },
            timeout=90,
        )
        await rpc.call("start_io", account)
        # Mail that arrives before the core first reads the inbox is skipped: wait for it.
        await peer.next_event("ImapInboxIdle", timeout=60)
        yield peer
    finally:
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
        await rpc.close()


# -- a verified pair: an XMPP user and a Delta Chat user after a SecureJoin -----------------


@dataclass
class Pair:
    xmpp: Client
    address: str
    password: str
    peer: DeltaPeer
    peer_jid: str
    peer_chat: int
    passerelle: PasserelleProcess


@pytest.fixture(name="verified_pair")
async def verified_pair_fixture(
    start_passerelle: StartPasserelle,
    new_client: NewClient,
    mail_server: MailServer,
    tmp_path: Path,
) -> AsyncIterator[Pair]:
    """An XMPP user on email whose invite link a default Delta Chat user opened."""
    passerelle = start_email_gateway(start_passerelle)
    xmpp = await new_client("xena")
    xmpp.queue_bodyless_messages()
    address, password = new_mailbox(mail_server, "xena")
    await register(xmpp, mail_server, address, password)
    async with delta_peer(mail_server, tmp_path, "dora") as dora:
        xmpp.send_chat(EMAIL_JID, "invite")
        answer = await next_message_containing(xmpp, EMAIL_JID, "https://i.delta.chat")
        link = re.search(r"https://i\.delta\.chat/\S+", answer["body"])
        assert link is not None, answer["body"]
        chat = await dora.join(link.group(0))
        dora_jid = contact_jid(dora.address)
        await next_message_containing(xmpp, EMAIL_JID, "are end-to-end encrypted", timeout=60)
        await xmpp.next_roster_push(dora_jid)
        yield Pair(xmpp, address, password, dora, dora_jid, chat, passerelle)


async def group_jid(xmpp: Client, name: str) -> str:
    """The room of group ``name``, from the gateway's "groups" command."""
    pattern = re.compile(r"name: (.*)\njid: xmpp:(group-\d+@[^?\s]+)")
    for _ in range(40):
        xmpp.send_chat(EMAIL_JID, "groups")
        listing = await xmpp.next_message(EMAIL_JID)  # the listing or "Empty results"
        for found_name, jid in pattern.findall(listing["body"]):
            if found_name.strip() == name:
                return str(jid)
        await asyncio.sleep(0.5)
    raise AssertionError(f"no group {name!r} in the listing: {listing['body']}")
