"""A real XMPP client for the end-to-end tests: slixmpp, logged in to the test Prosody.

It does what a person does in Gajim or Conversations: registers with a gateway (XEP-0077
or the ad-hoc command), watches its roster, sends and corrects messages, unregisters,
and joins, talks in and leaves group chats (XEP-0045). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Mapping
from typing import Any, cast

import slixmpp
from slixmpp import JID
from slixmpp.plugins.xep_0004 import Form
from slixmpp.stanza import Message
from slixmpp.types import MessageTypes
from slixmpp.xmlstream import ET, ElementBase, StanzaBase
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

WAIT = 20.0
MUC_NS = "http://jabber.org/protocol/muc"
MUC_USER_NS = "http://jabber.org/protocol/muc#user"


def muc_status(pres: slixmpp.Presence) -> tuple[set[int], dict[str, str]]:
    """The status codes and the item attributes (role, affiliation, nick...) of a MUC
    presence; empty when it has no muc#user element."""
    x = pres.xml.find(f"{{{MUC_USER_NS}}}x")
    if x is None:
        return set(), {}
    codes = {int(s.get("code", "0")) for s in x.findall(f"{{{MUC_USER_NS}}}status")}
    item = x.find(f"{{{MUC_USER_NS}}}item")
    return codes, dict(item.attrib) if item is not None else {}


async def send_iq(iq: slixmpp.Iq, timeout: float = WAIT) -> slixmpp.Iq:
    """Send `iq` and return the answer (IqError / IqTimeout are raised as usual).
    slixmpp's ``Iq.send`` has no annotations: the tests call it through here."""
    return cast(slixmpp.Iq, await iq.send(timeout=timeout))  # type: ignore[no-untyped-call]


def submit_form(
    xmpp: slixmpp.BaseXMPP, values: Mapping[str, Any], form_type: str | None = None
) -> Form:
    """A XEP-0004 submit form with these field values, and a hidden FORM_TYPE if given
    (slixmpp's ``make_form`` and ``add_field`` have no annotations)."""
    form = cast(Form, xmpp.plugin["xep_0004"].make_form(ftype="submit"))  # type: ignore[no-untyped-call]
    if form_type is not None:
        form.add_field("FORM_TYPE", value=form_type, ftype="hidden")  # type: ignore[no-untyped-call]
    for var, value in values.items():
        form.add_field(var, value=value)  # type: ignore[no-untyped-call]
    return form


async def start_command(
    xmpp: slixmpp.BaseXMPP, jid: str, node: str, timeout: float = WAIT
) -> slixmpp.Iq:
    """Execute ad-hoc command `node` of `jid` (XEP-0050): its first answer."""
    iq = await xmpp.plugin["xep_0050"].send_command(jid, node, timeout=timeout)  # type: ignore[no-untyped-call]
    return cast(slixmpp.Iq, iq)


async def registration_form(xmpp: slixmpp.BaseXMPP, jid: str, timeout: float = WAIT) -> slixmpp.Iq:
    """The XEP-0077 registration answer of `jid`, with its form."""
    iq = await xmpp.plugin["xep_0077"].get_registration(jid=jid, timeout=timeout)  # type: ignore[no-untyped-call]
    return cast(slixmpp.Iq, iq)


def child(stanza: ElementBase, path: str) -> ET.Element:
    """The element at `path` (``{ns}name/{ns}name``) in `stanza`; the test fails if
    there is none."""
    found = stanza.xml.find(path)
    assert found is not None, f"no {path} in {stanza}"
    return found


def child_text(stanza: ElementBase, path: str) -> str:
    """The text of the element at `path` in `stanza`; the test fails if there is none."""
    text = child(stanza, path).text
    assert text is not None, f"{path} is empty in {stanza}"
    return text


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid: str, password: str) -> None:
        super().__init__(jid, password)
        self.enable_direct_tls = False
        self.enable_starttls = False
        self.enable_plaintext = True
        self.plugin["feature_mechanisms"].unencrypted_scram = True
        self.plugin["feature_mechanisms"].unencrypted_plain = True
        for plugin in ("xep_0004", "xep_0030", "xep_0050", "xep_0077", "xep_0199", "xep_0308"):
            self.register_plugin(plugin)
        self.messages: asyncio.Queue[Message] = asyncio.Queue()
        self.roster_pushes: asyncio.Queue[JID] = asyncio.Queue()
        self.presences: asyncio.Queue[slixmpp.Presence] = asyncio.Queue()
        self.add_event_handler("message", self.messages.put_nowait)
        self.add_event_handler("message_error", self.messages.put_nowait)
        self.add_event_handler("presence", self.presences.put_nowait)
        self.add_event_handler("roster_update", self._on_roster_update)
        self.add_event_handler("session_start", self._on_start)
        self.subjects: asyncio.Queue[Message] = asyncio.Queue()
        self.occupants: dict[str, dict[str, slixmpp.Presence]] = {}
        self.register_handler(
            Callback(
                "test subjects",
                MatchXPath("{jabber:client}message/{jabber:client}subject"),
                self._on_subject,
            )
        )
        self._started: asyncio.Future[None] = asyncio.get_event_loop().create_future()

    def _on_subject(self, stanza: StanzaBase) -> None:
        assert isinstance(stanza, Message)
        self.subjects.put_nowait(stanza)

    def _on_roster_update(self, iq: slixmpp.Iq) -> None:
        for jid in iq["roster"]["items"]:
            self.roster_pushes.put_nowait(JID(jid))

    async def _on_start(self, _event: object) -> None:
        await self.get_roster()
        self.send_presence()
        if not self._started.done():
            self._started.set_result(None)

    async def start(self, port: int) -> None:
        self.connect("127.0.0.1", port)
        async with asyncio.timeout(WAIT):
            await self._started

    async def stop(self) -> None:
        self.disconnect()
        try:
            async with asyncio.timeout(5):
                await self.disconnected
        except TimeoutError:
            self.abort()
        # slixmpp leaves these running after a disconnect; end them while the loop lives.
        for task in (self._run_out_filters, self._current_connection_attempt):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def register(self, gateway: str, **fields: str) -> slixmpp.Iq:
        """XEP-0077 with a data form, as Gajim does."""
        form_iq = await registration_form(self, gateway)
        assert form_iq["register"]["form"]["fields"], "the gateway offered no form"
        submit = submit_form(self, fields, "jabber:iq:register")
        iq = self.make_iq_set(ito=gateway)
        iq["register"].append(submit)
        return await send_iq(iq)

    async def unregister(self, gateway: str) -> slixmpp.Iq:
        iq = self.make_iq_set(ito=gateway)
        iq["register"]["remove"] = True
        return await send_iq(iq)

    async def run_command(self, jid: str, node: str, **fields: str) -> slixmpp.Iq:
        """Execute an ad-hoc command (XEP-0050) as a person would: fill in ``fields`` where
        a form asks for them, keep every other default, and go on until it completes."""
        result = await start_command(self, jid, node)
        for _ in range(5):
            command = result["command"]
            if command["status"] != "executing":
                return result
            values = {
                var: fields.get(var, field["value"])
                for var, field in command["form"].get_fields().items()
                if field["type"] != "fixed" and var
            }
            submit = submit_form(self, values)
            iq = self.make_iq_set(ito=jid)
            iq["command"]["node"] = node
            iq["command"]["sessionid"] = command["sessionid"]
            iq["command"]["action"] = "complete" if "complete" in command["actions"] else "next"
            iq["command"].append(submit)
            result = await send_iq(iq)
        raise AssertionError(f"command {node} did not complete in 5 steps")

    async def answer_chat_command(
        self,
        jid: str,
        command: str,
        answers: Mapping[str, str],
        until: str,
        *,
        default: str = "yes",
        timeout: float = 60.0,
    ) -> tuple[list[str], list[str]]:
        """Send chat command ``command`` to ``jid`` and answer its questions (slidge's
        ``…? (or 'abort')``) as a person would: a question that starts with a key of
        ``answers`` gets its value, any other ``default``; until ``jid`` says something
        that matches ``until``. Returns all ``jid`` said, and the questions asked (their
        key, or the whole question when no key matched)."""
        self.send_chat(jid, command)
        said: list[str] = []
        asked: list[str] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    body = str((await self.next_message(jid, timeout=timeout))["body"])
                    said.append(body)
                    if re.search(until, body):
                        return said, asked
                    if body.endswith("(or 'abort')"):
                        key = next((q for q in answers if body.startswith(q)), None)
                        asked.append(key or body)
                        self.send_chat(jid, answers[key] if key is not None else default)
        except TimeoutError:
            raise AssertionError(f"nothing matching {until!r} in: {said}") from None

    def send_chat(self, to: str, body: str, **extra: Any) -> Message:
        msg = self.make_message(mto=to, mbody=body, mtype="chat")
        msg["id"] = self.new_id()
        if replace := extra.get("replace"):
            msg["replace"]["id"] = replace
        msg.send()
        return msg

    async def next_message(
        self, sender: str, *, with_body: bool = True, timeout: float = WAIT
    ) -> Message:
        """The next message from bare JID ``sender`` (others are skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.messages.get()
                if msg["from"].bare == sender and (msg["body"] or not with_body):
                    return msg

    async def next_roster_push(self, jid: str, timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout):
            while (await self.roster_pushes.get()).bare != jid:
                pass

    async def next_presence(
        self, sender: str, ptype: str = "available", timeout: float = WAIT
    ) -> slixmpp.Presence:
        async with asyncio.timeout(timeout):
            while True:
                pres = await self.presences.get()
                if pres["from"].bare == sender and pres["type"] == ptype:
                    return pres

    # --- group chats (XEP-0045) -----------------------------------------------------

    async def join_muc(
        self, room: str, nick: str, timeout: float = WAIT, history: int = 0
    ) -> slixmpp.Presence:
        """Join `room` as `nick` asking for `history` archived messages; return our
        self-presence (status 110), or the error
        presence if the room refused us. The occupants announced before it are kept in
        ``self.occupants[room]`` (nick -> presence)."""
        pres = self.make_presence(pto=f"{room}/{nick}")
        x = ET.Element(f"{{{MUC_NS}}}x")
        ET.SubElement(x, f"{{{MUC_NS}}}history", {"maxstanzas": str(history)})
        pres.append(x)
        pres.send()
        occupants = self.occupants.setdefault(room, {})
        async with asyncio.timeout(timeout):
            while True:
                got = await self.presences.get()
                if got["from"].bare != room:
                    continue
                if got["type"] == "error" or 110 in muc_status(got)[0]:
                    return got
                occupants[got["from"].resource] = got

    def change_muc_nick(self, room: str, nick: str) -> None:
        """Ask for another nick in a joined room (XEP-0045 7.6: presence to the new JID)."""
        self.make_presence(pto=f"{room}/{nick}").send()

    def leave_muc(self, room: str, nick: str) -> None:
        self.make_presence(pto=f"{room}/{nick}", ptype="unavailable").send()

    def send_groupchat(self, room: str, body: str, **extra: Any) -> Message:
        msg = self.make_message(mto=room, mbody=body, mtype="groupchat")
        msg["id"] = self.new_id()
        if replace := extra.get("replace"):
            msg["replace"]["id"] = replace
        msg.send()
        return msg

    def set_subject(self, room: str, subject: str) -> None:
        msg = self.make_message(mto=room, mtype="groupchat")
        msg["subject"] = subject
        msg.send()

    async def next_groupchat(
        self, room: str, nick: str | None = None, timeout: float = WAIT
    ) -> Message:
        """The next groupchat message (or error) in `room`, from occupant `nick` if given."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.messages.get()
                if msg["from"].bare != room or msg["type"] not in ("groupchat", "error"):
                    continue
                if nick is None or msg["from"].resource == nick or msg["type"] == "error":
                    return msg

    async def next_subject(self, room: str, timeout: float = WAIT) -> Message:
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.subjects.get()
                if msg["from"].bare == room:
                    return msg

    async def next_occupant(
        self, room: str, nick: str, ptype: str = "available", timeout: float = WAIT
    ) -> slixmpp.Presence:
        """The next presence of occupant `nick` in `room` (type "available" or
        "unavailable")."""
        async with asyncio.timeout(timeout):
            while True:
                pres = await self.presences.get()
                if pres["from"] == JID(f"{room}/{nick}") and pres["type"] == ptype:
                    return pres

    async def kick(self, room: str, nick: str, reason: str = "") -> slixmpp.Iq:
        """Kick occupant `nick` as a moderator does (XEP-0045 role "none")."""
        iq = self.make_iq_set(ito=room)
        query = ET.SubElement(iq.xml, f"{{{MUC_NS}#admin}}query")
        item = ET.SubElement(query, f"{{{MUC_NS}#admin}}item", {"nick": nick, "role": "none"})
        if reason:
            ET.SubElement(item, f"{{{MUC_NS}#admin}}reason").text = reason
        return await send_iq(iq)

    # --- replies, reactions, retractions, chat states, markers (Matrix stories) ------
    # Added for tests/e2e/test_matrix*.py; the methods above are shared and unchanged.

    async def next_groupchat_text(
        self, room: str, body: str | None = None, timeout: float = WAIT
    ) -> Message:
        """The next groupchat message from `room` that has a body (equal to `body`, if
        given); subjects, chat states and markers are skipped."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.messages.get()
                if msg["from"].bare != room or msg["type"] != "groupchat":
                    continue
                if msg["body"] and (body is None or msg["body"] == body):
                    return msg

    def send_reply(
        self, to: str, body: str, reply_to_id: str, reply_to_jid: str, mtype: MessageTypes = "chat"
    ) -> Message:
        """A XEP-0461 reply, without fallback text."""
        msg = self.make_message(mto=to, mbody=body, mtype=mtype)
        msg["id"] = self.new_id()
        ET.SubElement(msg.xml, "{urn:xmpp:reply:0}reply", {"id": reply_to_id, "to": reply_to_jid})
        msg.send()
        return msg

    def send_reactions(
        self, to: str, msg_id: str, emojis: list[str], mtype: MessageTypes = "chat"
    ) -> None:
        """XEP-0444: the full set of our reactions to `msg_id`."""
        msg = self.make_message(mto=to, mtype=mtype)
        reactions = ET.SubElement(msg.xml, "{urn:xmpp:reactions:0}reactions", {"id": msg_id})
        for emoji in emojis:
            ET.SubElement(reactions, "{urn:xmpp:reactions:0}reaction").text = emoji
        msg.send()

    def send_retraction(self, to: str, msg_id: str, mtype: MessageTypes = "chat") -> None:
        """XEP-0424: retract our message `msg_id`."""
        msg = self.make_message(mto=to, mtype=mtype, mbody="/me retracted a message")
        ET.SubElement(msg.xml, "{urn:xmpp:message-retract:1}retract", {"id": msg_id})
        ET.SubElement(
            msg.xml, "{urn:xmpp:fallback:0}fallback", {"for": "urn:xmpp:message-retract:1"}
        )
        msg.send()

    def send_chat_state(self, to: str, state: str) -> None:
        """A standalone XEP-0085 notification (composing, paused, active…)."""
        msg = self.make_message(mto=to, mtype="chat")
        ET.SubElement(msg.xml, f"{{http://jabber.org/protocol/chatstates}}{state}")
        msg.send()

    def send_displayed(self, to: str, msg_id: str) -> None:
        """A XEP-0333 displayed marker for `msg_id`."""
        msg = self.make_message(mto=to, mtype="chat")
        ET.SubElement(msg.xml, "{urn:xmpp:chat-markers:0}displayed", {"id": msg_id})
        msg.send()

    def queue_bodyless_messages(self) -> None:
        """Also put messages without a body (reactions, chat states, markers,
        retractions) into ``self.messages``: slixmpp's "message" event skips them."""

        def queue(msg: StanzaBase) -> None:
            assert isinstance(msg, Message)
            if not msg["body"] and msg["type"] != "error":
                self.messages.put_nowait(msg)

        self.register_handler(Callback("bodyless", MatchXPath("{jabber:client}message"), queue))

    async def next_matching(self, match: Any, timeout: float = WAIT) -> Message:
        """The next message, from anyone, for which `match(msg)` is true."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.messages.get()
                if match(msg):
                    return msg

    # --- email network (tests/e2e/test_email*.py) -------------------------------------
    # Files through HTTP upload + OOB, and waiting for a message by its payload; replies,
    # reactions, retractions and markers use the shared methods above.

    async def email_upload(self, path: Any, domain: str) -> str:
        """Upload a file with HTTP File Upload (XEP-0363); returns its GET URL."""
        if "xep_0363" not in self.plugin:
            self.register_plugin("xep_0363")
        url: str = await self.plugin["xep_0363"].upload_file(path, domain=JID(domain), timeout=WAIT)
        return url

    def email_send_file(self, to: str, url: str, mtype: MessageTypes = "chat") -> Message:
        msg = self.make_message(mto=to, mbody=url, mtype=mtype)
        msg["id"] = self.new_id()
        oob = ET.SubElement(msg.xml, "{jabber:x:oob}x")
        ET.SubElement(oob, "{jabber:x:oob}url").text = url
        msg.send()
        return msg

    async def email_next(self, sender: str, element: str, timeout: float = WAIT) -> Message:
        """The next message from bare JID ``sender`` that has child ``element``
        (``{namespace}name``), with or without a body; others are skipped."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.messages.get()
                if msg["from"].bare == sender and msg.xml.find(element) is not None:
                    return msg

    # --- archives, affiliations, invitations (IRC stories) ---------------------------
    # Added for tests/e2e/test_irc*.py; the methods above are shared and unchanged.

    async def archive(self, jid: str, timeout: float = WAIT) -> list[Message]:
        """The messages a MAM archive (XEP-0313) holds for `jid` (a room), oldest first,
        as the forwarded stanzas."""
        if "xep_0313" not in self.plugin:
            self.register_plugin("xep_0313")
        # slixmpp annotates the timeout as int; it only passes it on to Iq.send.
        iq = await self.plugin["xep_0313"].retrieve(
            jid=JID(jid),
            timeout=timeout,  # type: ignore[arg-type]
        )
        return [result["mam_result"]["forwarded"]["stanza"] for result in iq["mam"]["results"]]

    async def set_affiliation(
        self, room: str, affiliation: str, *, nick: str = "", jid: str = "", reason: str = ""
    ) -> slixmpp.Iq:
        """XEP-0045 §9/§10: give occupant `nick` (or `jid`) `affiliation` ("outcast" bans)."""
        iq = self.make_iq_set(ito=room)
        query = ET.SubElement(iq.xml, f"{{{MUC_NS}#admin}}query")
        attrs = {"affiliation": affiliation, **({"nick": nick} if nick else {})}
        if jid:
            attrs["jid"] = jid
        item = ET.SubElement(query, f"{{{MUC_NS}#admin}}item", attrs)
        if reason:
            ET.SubElement(item, f"{{{MUC_NS}#admin}}reason").text = reason
        return await send_iq(iq)

    async def affiliation_list(self, room: str, affiliation: str) -> list[dict[str, str]]:
        """XEP-0045 §9.5: the items (jid, nick, affiliation...) with `affiliation`."""
        iq = self.make_iq_get(ito=room)
        query = ET.SubElement(iq.xml, f"{{{MUC_NS}#admin}}query")
        ET.SubElement(query, f"{{{MUC_NS}#admin}}item", {"affiliation": affiliation})
        result = await send_iq(iq)
        items = result.xml.findall(f"{{{MUC_NS}#admin}}query/{{{MUC_NS}#admin}}item")
        return [dict(item.attrib) for item in items]

    def send_direct_invite(self, to: str, room: str, reason: str = "") -> None:
        """XEP-0249: invite `to` into `room`."""
        msg = self.make_message(mto=to)
        attrs = {"jid": room, **({"reason": reason} if reason else {})}
        ET.SubElement(msg.xml, "{jabber:x:conference}x", attrs)
        msg.send()

    # --- rooms on the server's MUC service (tests/e2e/test_link*.py) -----------------
    # Added for the channel ↔ room link stories; the methods above are shared and unchanged.

    async def link_create_room(self, room: str, nick: str, **config: str) -> slixmpp.Presence:
        """Create `room` by joining it, then submit its configuration (`muc#roomconfig_`
        fields without that prefix, e.g. ``persistentroom="1"``), as an owner does."""
        pres = await self.join_muc(room, nick)
        assert pres["type"] != "error", pres
        assert 201 in muc_status(pres)[0], f"{room} existed already"
        iq = self.make_iq_set(ito=room)
        query = ET.SubElement(iq.xml, f"{{{MUC_NS}#owner}}query")
        values = {f"muc#roomconfig_{var}": value for var, value in config.items()}
        form = submit_form(self, values, f"{MUC_NS}#roomconfig")
        query.append(form.xml)
        await send_iq(iq)
        return pres

    async def link_room_texts(
        self, room: str, count: int, timeout: float = WAIT
    ) -> list[tuple[str, str]]:
        """The next `count` groupchat messages with a body in `room`, as (nick, body)."""
        texts = []
        for _ in range(count):
            msg = await self.next_groupchat_text(room, timeout=timeout)
            texts.append((msg["from"].resource, msg["body"]))
        return texts

    # --- XEP-0372 mentions (tests/e2e/test_irc_mentions.py) -------------------------
    # Added for the IRC mention stories; the methods above are shared and unchanged.

    def send_groupchat_mentioning(
        self, room: str, body: str, mentions: list[tuple[int, int, str]]
    ) -> Message:
        """A groupchat message marking `body[begin:end]` as a mention of `uri`, for each
        (begin, end, uri) — as Converse or Movim send them."""
        msg = self.make_message(mto=room, mbody=body, mtype="groupchat")
        msg["id"] = self.new_id()
        for begin, end, uri in mentions:
            attrs = {"type": "mention", "begin": str(begin), "end": str(end), "uri": uri}
            ET.SubElement(msg.xml, "{urn:xmpp:reference:0}reference", attrs)
        msg.send()
        return msg


def mention_references(msg: Message) -> list[tuple[int, int, str]]:
    """The XEP-0372 mentions of `msg` as (begin, end, uri), in document order."""
    return [
        (int(ref.get("begin", "-1")), int(ref.get("end", "-1")), ref.get("uri", ""))
        for ref in msg.xml.findall("{urn:xmpp:reference:0}reference")
        if ref.get("type") == "mention"
    ]
