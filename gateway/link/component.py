"""The link component's XMPP side: one plain slixmpp component that is many MUC occupants.

A room on the XMPP server's MUC service sees the component as several occupants, each
with its own JID on the component's domain: one listener per link
(``#lounge%irc.example.net@link.example.org``), which reads the room, and one puppet per
IRC user who spoke (``alice%irc.example.net@link.example.org``). The room sends every
message to every occupant, so each stanza arrives once per occupant of ours; only the
copy addressed to a listener is read, the others are dropped here.

Rules this module enforces for everyone above it:

* It never sends an error ``<message/>`` or ``<presence/>`` (an outgoing filter drops
  them): Prosody kicks an occupant that bounces most errors into a room. IQs are answered
  normally (XEP-0199 pings, disco), which Prosody routes without kicking.
* A stanza handler never raises: slixmpp would answer the room with an error.
* A stanza for an occupant JID of ours that no link owns (left over from before a
  restart, or from a link since removed) makes that JID leave the room, once a minute at
  most, so no stale occupant lingers.

Joins and nick changes are awaitable (:meth:`LinkComponent.join`): the answer is our
self-presence (status 110, with 201 when the join created the room) or an error presence.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from slixmpp import JID, ComponentXMPP, Message, Presence
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream import ET, StanzaBase
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from gateway.errors import RemoteError

from .bridge import OriginIds, Recent, SelfPing, self_ping_verdict

__all__ = [
    "ArchiveError",
    "ArchivePage",
    "JoinResult",
    "LinkComponent",
    "MucPresence",
    "Occupancy",
    "RoomMessage",
    "parse_message",
    "parse_presence",
]

log = logging.getLogger(__name__)

MUC_NS = "http://jabber.org/protocol/muc"
MUC_USER_NS = f"{MUC_NS}#user"
MUC_OWNER_NS = f"{MUC_NS}#owner"
SID_NS = "urn:xmpp:sid:0"
STANZAS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"
DELAY_NS = "urn:xmpp:delay"
CORRECT_NS = "urn:xmpp:message-correct:0"
REPLY_NS = "urn:xmpp:reply:0"
FALLBACK_NS = "urn:xmpp:fallback:0"
OOB_NS = "jabber:x:oob"
MAM_NS = "urn:xmpp:mam:2"
RSM_NS = "http://jabber.org/protocol/rsm"
FORWARD_NS = "urn:xmpp:forward:0"
DATA_NS = "jabber:x:data"
ARCHIVE_MAX = 1000  # archived messages collected per query, whatever the server sends
JOIN_TIMEOUT = 20.0
GHOST_EVERY = 60.0  # seconds between two attempts to make the same stale occupant leave
IQ_TIMEOUT = 20.0

StateChange = Literal["up", "down", "failed"]


@dataclass(frozen=True, slots=True)
class MucPresence:
    """A presence from a room, reduced to what the link uses."""

    room: str
    nick: str
    to: str
    """The full JID of ours it was sent to."""
    type: str
    codes: frozenset[int] = frozenset()
    real_jid: str | None = None
    role: str | None = None
    new_nick: str | None = None
    """With status 303: the occupant's new nick."""
    error: str | None = None
    error_text: str = ""
    destroyed: bool = False
    is_muc: bool = False
    """It carries a muc#user payload (or is an error from the room)."""

    @property
    def is_self(self) -> bool:
        return 110 in self.codes

    @property
    def available(self) -> bool:
        return self.type not in ("unavailable", "error")


@dataclass(frozen=True, slots=True)
class RoomMessage:
    """A groupchat message from a room, reduced to what the link uses."""

    room: str
    nick: str
    to: str
    body: str = ""
    subject: str | None = None
    id: str | None = None
    origin_id: str | None = None
    stanza_id: str | None = None
    replace_id: str | None = None
    reply_to: str | None = None
    """The nick of the author of the message this one replies to (XEP-0461)."""
    reply_id: str | None = None
    fallback: tuple[tuple[int, int], ...] = ()
    """Ranges of the body that only repeat the replied-to message (XEP-0428)."""
    attachment: str | None = None
    delayed: bool = False
    real_jid: str | None = None
    """The sender's real JID, when the room shows it (archived messages of
    non-anonymous rooms)."""


class ArchiveError(RemoteError):
    """The room's archive refused a query (or did not answer)."""

    def __init__(self, condition: str, text: str = "") -> None:
        super().__init__(f"{condition} {text}".strip())
        self.condition = condition


@dataclass(frozen=True, slots=True)
class ArchivePage:
    """An answer of the room's MAM archive, oldest message first."""

    messages: tuple[RoomMessage, ...]
    complete: bool
    """No message after `after` was left out."""
    last: str | None
    """The stanza-id of the newest message returned."""
    first: str | None = None
    """The stanza-id of the oldest message returned."""


@dataclass(frozen=True, slots=True)
class JoinResult:
    """The room's answer to a join or a nick change."""

    nick: str | None = None
    error: str | None = None
    text: str = ""
    created: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


class Occupancy(Protocol):
    """What a link shows the component: which JIDs are its occupants, and where its
    room's stanzas go."""

    room: str
    listener_jid: str

    def owns(self, jid: str) -> bool:
        """`jid` is the listener or one of the link's puppets (joined or joining)."""

    def nicks(self) -> set[str]:
        """The nicks our occupants hold in the room."""

    def on_presence(self, presence: MucPresence) -> None: ...

    def on_message(self, message: RoomMessage) -> None:
        """A groupchat message, as the listener received it."""

    def on_error(self, jid: str, condition: str, text: str) -> None:
        """The room refused a message one of our occupants sent."""

    def on_private(self, jid: str, nick: str, body: str) -> None:
        """A private message (XEP-0045 §7.5) from occupant `nick` to our occupant `jid`."""


def _error_of(stanza: StanzaBase) -> tuple[str | None, str]:
    error = stanza.xml.find("{jabber:component:accept}error")
    if error is None:
        error = stanza.xml.find("{jabber:client}error")
    if error is None:
        return None, ""
    condition, text = None, ""
    for child in error:
        if child.tag == f"{{{STANZAS_NS}}}text":
            text = child.text or ""
        elif child.tag.startswith(f"{{{STANZAS_NS}}}") and condition is None:
            condition = child.tag.split("}", 1)[1]
    return condition or "undefined-condition", text


def parse_presence(pres: Presence) -> MucPresence:
    """Read a presence from a room. Never raises on odd input."""
    frm, to = pres["from"], pres["to"]
    ptype = pres["type"] or "available"
    if ptype == "error":
        error, text = _error_of(pres)
        return MucPresence(frm.bare, frm.resource, to.full, ptype, error=error, error_text=text)
    x = pres.xml.find(f"{{{MUC_USER_NS}}}x")
    if x is None:
        return MucPresence(frm.bare, frm.resource, to.full, ptype)
    codes = set()
    for status in x.findall(f"{{{MUC_USER_NS}}}status"):
        code = status.get("code", "")
        if code.isdecimal():
            codes.add(int(code))
    item = x.find(f"{{{MUC_USER_NS}}}item")
    attrs = dict(item.attrib) if item is not None else {}
    return MucPresence(
        frm.bare,
        frm.resource,
        to.full,
        ptype,
        frozenset(codes),
        real_jid=attrs.get("jid"),
        role=attrs.get("role"),
        new_nick=attrs.get("nick") if 303 in codes else None,
        destroyed=x.find(f"{{{MUC_USER_NS}}}destroy") is not None,
        is_muc=True,
    )


def parse_message(msg: Message) -> RoomMessage:
    """Read a groupchat message from a room. Never raises on odd input."""
    return parse_message_xml(msg.xml, msg.namespace, stanza_id=None)


def parse_message_xml(xml: ET.Element, ns: str, *, stanza_id: str | None) -> RoomMessage:
    """Read a room message from its XML in namespace `ns` (``jabber:client`` when it
    was forwarded by the archive, which gives its `stanza_id`). Never raises."""
    frm, to = JID(xml.get("from", "")), JID(xml.get("to", ""))

    def attr(path: str, name: str) -> str | None:
        element = xml.find(path)
        return element.get(name) if element is not None else None

    for element in xml.findall(f"{{{SID_NS}}}stanza-id"):
        if element.get("by") == frm.bare:
            stanza_id = element.get("id")
    reply_to = attr(f"{{{REPLY_NS}}}reply", "to")
    fallback: list[tuple[int, int]] = []
    for element in xml.findall(f"{{{FALLBACK_NS}}}fallback"):
        if element.get("for") != REPLY_NS:
            continue
        for body in element.findall(f"{{{FALLBACK_NS}}}body"):
            start, end = body.get("start", ""), body.get("end", "")
            if start.isdecimal() and end.isdecimal():
                fallback.append((int(start), int(end)))
    url = xml.find(f"{{{OOB_NS}}}x/{{{OOB_NS}}}url")
    subject = xml.find(f"{{{ns}}}subject")
    text = xml.find(f"{{{ns}}}body")
    return RoomMessage(
        room=frm.bare,
        nick=frm.resource,
        to=to.full,
        body=(text.text or "") if text is not None else "",
        subject=(subject.text or "") if subject is not None else None,
        id=xml.get("id") or None,
        origin_id=attr(f"{{{SID_NS}}}origin-id", "id"),
        stanza_id=stanza_id,
        replace_id=attr(f"{{{CORRECT_NS}}}replace", "id"),
        reply_to=JID(reply_to).resource if reply_to else None,
        reply_id=attr(f"{{{REPLY_NS}}}reply", "id"),
        fallback=tuple(fallback),
        attachment=(url.text or None) if url is not None else None,
        delayed=xml.find(f"{{{DELAY_NS}}}delay") is not None,
        real_jid=attr(f"{{{MUC_USER_NS}}}x/{{{MUC_USER_NS}}}item", "jid"),
    )


class LinkComponent(ComponentXMPP):
    """The XMPP component of the link: occupants, their stanzas, admin messages."""

    def __init__(self, jid: str, secret: str, admins: Iterable[str]) -> None:
        super().__init__(jid, secret, fix_error_ns=True)  # type: ignore[no-untyped-call]
        self.admins = tuple(admins)
        for plugin in ("xep_0030", "xep_0004", "xep_0050", "xep_0199"):
            self.register_plugin(plugin)
        self.plugin["xep_0030"].add_identity(
            category="gateway", itype="irc", name="Passerelle IRC channel link", jid=self.boundjid
        )
        self.sent_ids = OriginIds(secret)
        """Recognises the origin-id of every message our occupants sent, before and
        after a restart: their echoes are ours."""
        self.online = asyncio.Event()
        self.state_changes: asyncio.Queue[StateChange] = asyncio.Queue()
        self.fatal: str | None = None
        """A stream error that restarting will not fix (wrong secret, unknown component)."""
        self._rooms: dict[str, list[Occupancy]] = {}
        self._waiters: dict[tuple[str, str], asyncio.Future[JoinResult]] = {}
        self._ghosts: Recent[tuple[str, str], float] = Recent(1024)
        self._archive: dict[str, tuple[str, str, list[RoomMessage]]] = {}
        """MAM queries in flight by queryid: (room, our JID that asked, results)."""
        # The stock handlers keep a roster per JID for every presence: thousands of
        # entries for a busy room, and nothing we use. Ours replace them.
        for name in ("IM", "IMError", "Presence"):
            self.remove_handler(name)
        self.register_handler(
            Callback(
                "link presence", MatchXPath(f"{{{self.default_ns}}}presence"), self._on_presence
            )
        )
        self.register_handler(
            Callback("link message", MatchXPath(f"{{{self.default_ns}}}message"), self._on_message)
        )
        self.add_filter("out", self._no_errors_to_rooms)
        self.add_event_handler("session_start", self._on_session_start)
        self.add_event_handler("disconnected", self._on_disconnected)
        self.add_event_handler("connection_failed", self._on_connection_failed)
        self.add_event_handler("stream_error", self._on_stream_error)

    # --- which links live in which room ---------------------------------------------

    def attach(self, occupancy: Occupancy) -> None:
        self._rooms.setdefault(occupancy.room, []).append(occupancy)

    def detach(self, occupancy: Occupancy) -> None:
        links = self._rooms.get(occupancy.room, [])
        if occupancy in links:
            links.remove(occupancy)
        if not links:
            self._rooms.pop(occupancy.room, None)

    def our_nicks(self, room: str) -> set[str]:
        """The nicks our occupants (of every link on `room`) hold there."""
        return set().union(*(link.nicks() for link in self._rooms.get(room, [])))

    # --- occupants -----------------------------------------------------------------------

    async def join(
        self, room: str, nick: str, jid: str, *, timeout: float = JOIN_TIMEOUT, new: bool = True
    ) -> JoinResult:
        """Enter `room` as `nick` from `jid`, without history (`new`), or change the nick
        of `jid` there (not `new`); wait for the room's answer."""
        key = (room, jid)
        previous = self._waiters.get(key)
        if previous is not None and not previous.done():
            previous.set_result(JoinResult(error="conflict", text="superseded"))
        waiter: asyncio.Future[JoinResult] = asyncio.get_running_loop().create_future()
        self._waiters[key] = waiter
        pres = self.make_presence(pto=JID(f"{room}/{nick}"), pfrom=JID(jid))
        if new:
            x = ET.SubElement(pres.xml, f"{{{MUC_NS}}}x")
            ET.SubElement(x, f"{{{MUC_NS}}}history", {"maxstanzas": "0"})
        pres.send()
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError:
            return JoinResult(error="remote-server-timeout", text=f"no answer in {timeout:g} s")
        finally:
            if self._waiters.get(key) is waiter:
                del self._waiters[key]

    def leave(self, room: str, nick: str, jid: str, status: str = "") -> None:
        pres = self.make_presence(pto=JID(f"{room}/{nick}"), pfrom=JID(jid), ptype="unavailable")
        if status:
            pres["status"] = status
        pres.send()

    def send_groupchat(
        self, room: str, jid: str, body: str | None = None, *, subject: str | None = None
    ) -> str:
        """Send a message (or a subject) to `room` from occupant `jid`; return its
        origin-id, which marks its echo as ours."""
        msg = self.make_message(mto=JID(room), mfrom=JID(jid), mtype="groupchat", mbody=body)
        if subject is not None:
            msg["subject"] = subject
        origin_id = self.sent_ids.make(secrets.token_hex(8))
        msg["id"] = origin_id
        ET.SubElement(msg.xml, f"{{{SID_NS}}}origin-id", {"id": origin_id})
        msg.send()
        return origin_id

    def send_private(self, room: str, nick: str, jid: str, body: str) -> None:
        """A private message through the room (XEP-0045 §7.5) from occupant `jid`."""
        msg = self.make_message(mto=JID(f"{room}/{nick}"), mfrom=JID(jid), mtype="chat", mbody=body)
        ET.SubElement(msg.xml, f"{{{MUC_USER_NS}}}x")
        msg.send()

    async def self_ping(self, room: str, nick: str, jid: str) -> SelfPing:
        """XEP-0410: are we still an occupant of `room`?"""
        try:
            await self.plugin["xep_0199"].send_ping(
                JID(f"{room}/{nick}"), ifrom=JID(jid), timeout=IQ_TIMEOUT
            )
        except IqError as exc:
            return self_ping_verdict(exc.iq["error"]["condition"])
        except IqTimeout:
            return self_ping_verdict("timeout")
        return "joined"

    async def archive(
        self, room: str, jid: str, after: str | None, limit: int, before: str | None = None
    ) -> ArchivePage:
        """The newest `limit` messages of `room`'s MAM archive after stanza-id `after`
        (from the start if `after` is None) and before stanza-id `before` (to the end if
        None), oldest first, asked as our occupant `jid`. The server may return fewer
        (Prosody: 50 at most); `complete` says whether any in the range were left out.
        Raises `ArchiveError` with the room's error condition (``item-not-found`` when
        `after` is no longer in the archive)."""
        queryid = uuid.uuid4().hex
        iq = self.make_iq_set(ito=JID(room), ifrom=JID(jid))
        query = ET.SubElement(iq.xml, f"{{{MAM_NS}}}query", {"queryid": queryid})
        form = ET.SubElement(query, f"{{{DATA_NS}}}x", {"type": "submit"})
        fields = {"FORM_TYPE": MAM_NS, **({"after-id": after} if after else {})}
        for var, value in fields.items():
            field = ET.SubElement(form, f"{{{DATA_NS}}}field", {"var": var})
            ET.SubElement(field, f"{{{DATA_NS}}}value").text = value
        rsm = ET.SubElement(query, f"{{{RSM_NS}}}set")
        ET.SubElement(rsm, f"{{{RSM_NS}}}max").text = str(limit)
        # The newest page of the range: its last `limit` messages.
        ET.SubElement(rsm, f"{{{RSM_NS}}}before").text = before or None
        collected: list[RoomMessage] = []
        self._archive[queryid] = (room, jid, collected)
        try:
            result = await iq.send(timeout=IQ_TIMEOUT)  # type: ignore[no-untyped-call]
        except IqError as exc:
            condition = exc.iq["error"]["condition"]
            raise ArchiveError(condition, exc.iq["error"]["text"] or "") from None
        except IqTimeout:
            raise ArchiveError("remote-server-timeout", f"no answer in {IQ_TIMEOUT:g} s") from None
        finally:
            del self._archive[queryid]
        fin = result.xml.find(f"{{{MAM_NS}}}fin")
        complete = fin is not None and fin.get("complete") in ("true", "1")
        rsm_set = f"{{{MAM_NS}}}fin/{{{RSM_NS}}}set"
        first = result.xml.find(f"{rsm_set}/{{{RSM_NS}}}first")
        last = result.xml.find(f"{rsm_set}/{{{RSM_NS}}}last")
        return ArchivePage(
            tuple(collected),
            complete,
            last.text if last is not None else None,
            first.text if first is not None else None,
        )

    def _archived(self, msg: Message, result: ET.Element) -> bool:
        """A message of a MAM query of ours: collected, and True."""
        pending = self._archive.get(result.get("queryid", ""))
        if pending is None:
            return False
        room, jid, collected = pending
        if msg["from"].full != room or msg["to"].full != jid or len(collected) >= ARCHIVE_MAX:
            return True
        inner = result.find(f"{{{FORWARD_NS}}}forwarded/{{jabber:client}}message")
        if inner is not None and inner.get("type") == "groupchat":
            parsed = parse_message_xml(inner, "jabber:client", stanza_id=result.get("id"))
            if parsed.room == room:
                collected.append(parsed)
        return True

    async def room_features(self, room: str) -> frozenset[str] | None:
        """The room's disco#info features, or None if the room does not exist. Raises
        `RemoteError` when the MUC service does not answer or refuses otherwise."""
        try:
            info = await self.plugin["xep_0030"].get_info(
                jid=JID(room), ifrom=self.boundjid, timeout=IQ_TIMEOUT
            )
        except IqError as exc:
            condition = exc.iq["error"]["condition"]
            if condition == "item-not-found":
                return None
            raise RemoteError(f"{room} answered disco#info with {condition}") from None
        except IqTimeout:
            raise RemoteError(f"{room} did not answer disco#info in {IQ_TIMEOUT:g} s") from None
        return frozenset(info["disco_info"]["features"])

    async def destroy(self, room: str, jid: str, reason: str) -> None:
        """Destroy `room`, which occupant `jid` owns (a room our join created)."""
        iq = self.make_iq_set(ito=JID(room), ifrom=JID(jid))
        query = ET.SubElement(iq.xml, f"{{{MUC_OWNER_NS}}}query")
        destroy = ET.SubElement(query, f"{{{MUC_OWNER_NS}}}destroy")
        ET.SubElement(destroy, f"{{{MUC_OWNER_NS}}}reason").text = reason
        try:
            await iq.send(timeout=IQ_TIMEOUT)  # type: ignore[no-untyped-call]
        except (IqError, IqTimeout) as exc:
            log.warning("could not destroy %s, which our join created: %s", room, exc)

    def notify_admins(self, text: str) -> None:
        """Tell every admin, as a chat message from the component."""
        log.warning("telling the admins: %s", text)
        if not self.online.is_set():
            return
        for admin in self.admins:
            self.send_message(mto=JID(admin), mbody=text, mtype="chat", mfrom=self.boundjid)

    # --- incoming stanzas ----------------------------------------------------------------

    def _owner(self, room: str, jid: str) -> Occupancy | None:
        return next((link for link in self._rooms.get(room, []) if link.owns(jid)), None)

    def _on_presence(self, pres: StanzaBase) -> None:
        assert isinstance(pres, Presence)
        try:
            presence = parse_presence(pres)
            waiter = self._waiters.get((presence.room, presence.to))
            if waiter is not None and not waiter.done():
                if presence.type == "error":
                    error = presence.error or "undefined-condition"
                    waiter.set_result(JoinResult(error=error, text=presence.error_text))
                elif presence.available and presence.is_self:
                    waiter.set_result(JoinResult(presence.nick, created=201 in presence.codes))
            owner = self._owner(presence.room, presence.to)
            if owner is not None:
                owner.on_presence(presence)
            elif presence.is_muc and presence.available:
                self._ghost(presence.room, presence.to)
        except Exception:
            log.exception("could not handle a presence from %s", pres["from"])

    def _on_message(self, msg: StanzaBase) -> None:
        assert isinstance(msg, Message)
        try:
            mtype = msg["type"]
            if mtype == "error":
                room, to = msg["from"].bare, msg["to"].full
                condition, text = _error_of(msg)
                owner = self._owner(room, to)
                if owner is not None:
                    owner.on_error(to, condition or "undefined-condition", text)
                else:
                    log.info("error from %s to %s: %s %s", msg["from"], to, condition, text)
                return
            result = msg.xml.find(f"{{{MAM_NS}}}result")
            if result is not None and self._archived(msg, result):
                return
            if mtype == "chat" and msg.xml.find(f"{{{MUC_USER_NS}}}x") is not None:
                room, to = msg["from"].bare, msg["to"].full
                owner = self._owner(room, to)
                if owner is not None and msg["from"].resource and msg["body"]:
                    owner.on_private(to, msg["from"].resource, msg["body"])
                return
            if mtype != "groupchat":
                return  # chat to the component itself: nothing to do
            # The room sends each message to every occupant of ours; only the listener's
            # copy is read (and parsed).
            room, to = msg["from"].bare, msg["to"].full
            owner = self._owner(room, to)
            if owner is None:
                if msg["from"].resource:
                    self._ghost(room, to)
            elif to == owner.listener_jid:
                owner.on_message(parse_message(msg))
        except Exception:
            log.exception("could not handle a message from %s", msg["from"])

    def _ghost(self, room: str, jid: str) -> None:
        """`jid` of ours is in `room` but no link owns it: make it leave."""
        if JID(jid).domain != self.boundjid.domain or jid == self.boundjid.full:
            return
        now = asyncio.get_running_loop().time()
        last = self._ghosts.get((room, jid))
        if last is not None and now - last < GHOST_EVERY:
            return
        self._ghosts.put((room, jid), now)
        log.info("%s is still in %s but no link uses it: leaving", jid, room)
        self.leave(room, "ghost", jid)

    def _no_errors_to_rooms(self, stanza: StanzaBase) -> StanzaBase | None:
        if isinstance(stanza, Message | Presence) and stanza["type"] == "error":
            log.warning("not sending an error stanza to %s: %s", stanza["to"], stanza)
            return None
        return stanza

    # --- the connection ------------------------------------------------------------------

    def _on_session_start(self, _event: Any) -> None:
        self.online.set()
        self.state_changes.put_nowait("up")

    def _on_disconnected(self, _event: Any) -> None:
        self.online.clear()
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_result(JoinResult(error="remote-server-not-found", text="disconnected"))
        self.state_changes.put_nowait("down")

    def _on_connection_failed(self, _event: Any) -> None:
        # slixmpp would retry on its own, up to 5 minutes apart; the service's loop
        # retries with our backoff instead.
        self.cancel_connection_attempt()
        self.state_changes.put_nowait("failed")

    def _on_stream_error(self, error: Any) -> None:
        condition = error["condition"]
        log.error("the XMPP server closed the component stream: %s %s", condition, error["text"])
        # A wrong secret or an undeclared component stays wrong; a "conflict" (the
        # previous process's stream not yet closed) is retried.
        if condition in ("not-authorized", "host-unknown"):
            self.fatal = condition
