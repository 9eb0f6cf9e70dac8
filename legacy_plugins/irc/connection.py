"""One IRC connection's protocol state, without I/O: registration, CAP, SASL and events.

`IrcConnectionState` is fed parsed messages (`protocol.parse_line`) and answers with
neutral events (`events`) plus the lines to send, in the manner of h11's `Connection`:
the caller (`client.IrcClient`) owns the socket, the clock and flood control. It never
raises on what the server sends; a message a handler cannot use becomes `Unhandled`.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Literal

from . import events as ev
from .events import Channel, Event, ISupport, Member, MessageKind, Nick, Prefix
from .protocol import DEFAULT_CAPS, LocalProtocolError, Message, serialize

__all__ = ["IrcConnectionState", "Phase", "message_time", "nick_candidate", "who_query"]

_NICK_ERRORS = {"432": "erroneous", "433": "in use", "436": "collision", "437": "unavailable"}
_NICK_ATTEMPTS = 11  # nick_, nick__, then nick1 ... nick9
_SASL_CHUNK = 400
_CTCP_MAX = 300  # bytes of a CTCP PING token we echo back
_BATCHES_MAX = 64
WHOX_TOKEN = "271"  # noqa: S105 (a query tag, no secret)
"""Marks the replies (354) to the client's own WHOX query (`who_query`)."""
HISTORY_BATCHES = frozenset({"chathistory", "draft/chathistory"})
"""Batch types whose messages are history (InspIRCd 3's chanhistory uses `chathistory`)."""
Phase = Literal["cap-ls", "cap-req", "sasl", "registering", "registered", "closed"]
_Handler = Callable[["IrcConnectionState", Message, Prefix], list[Event]]


def nick_candidate(nick: str, attempt: int) -> str:
    """The nick to try after `attempt` refusals (1-based): nick_, nick__, nick1..."""
    return nick + "_" * attempt if attempt <= 2 else f"{nick}{attempt - 2}"


def who_query(channel: str, isupport: ISupport) -> tuple[str, ...]:
    """The parameters of the WHO the client sends after joining `channel`: with WHOX
    (when the server offers it) the fields that also give each member's services
    account: token, channel, user, host, nick, flags, account, real name."""
    if "WHOX" in isupport.raw:
        return (channel, f"%tcuhnfar,{WHOX_TOKEN}")
    return (channel,)


def message_time(tags: Mapping[str, str]) -> datetime | None:
    """The IRCv3 `server-time` tag as an aware datetime, or None."""
    try:
        value = datetime.fromisoformat(tags["time"])
    except (KeyError, ValueError):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class IrcConnectionState:
    """Registration, CAP negotiation, SASL PLAIN and the stream of neutral events for
    one IRC connection, without I/O. Send `initial_lines()` once connected, then feed
    every parsed message to `receive()` and send what `data_to_send()` returns."""

    def __init__(
        self,
        nick: str,
        username: str,
        realname: str,
        *,
        password: str | None = None,
        sasl_plain: tuple[str, str] | None = None,
        wanted_caps: frozenset[str] = DEFAULT_CAPS,
        version: str = "Passerelle",
    ) -> None:
        self.nick = Nick(nick)
        self.isupport = ISupport()
        self.available_caps: dict[str, str] = {}
        self.enabled_caps: set[str] = set()
        self.phase: Phase = "cap-ls"
        self.server_name = ""
        self._wanted_nick, self._username, self._realname = nick, username, realname
        self._password, self._sasl, self._wanted_caps = password, sasl_plain, wanted_caps
        self._version = version
        self._pending_reqs = 0
        self._nick_attempts = 0
        self._names: dict[str, tuple[Channel, list[Member], list[Prefix]]] = {}
        self._batches: dict[str, str] = {}
        self._outbox: list[bytes] = []

    @property
    def registered(self) -> bool:
        return self.phase == "registered"

    def initial_lines(self) -> list[bytes]:
        """CAP LS 302, PASS, NICK and USER; raises LocalProtocolError on bad settings."""
        lines = [Message.of("CAP", "LS", "302")]
        if self._password is not None:
            lines.append(Message.of("PASS", self._password))
        lines.append(Message.of("NICK", self.nick))
        lines.append(Message.of("USER", self._username, "0", "*", self._realname))
        return [serialize(line) for line in lines]

    def data_to_send(self) -> list[bytes]:
        """Lines queued by `receive()`, oldest first; the queue is emptied."""
        out, self._outbox = self._outbox, []
        return out

    def casefold(self, name: str) -> str:
        return self.isupport.casefold(name)

    def is_own(self, nick: str) -> bool:
        return self.casefold(nick) == self.casefold(self.nick)

    def receive(self, msg: Message) -> list[Event]:
        """Interpret one message from the server. Never raises: a message a handler
        cannot use (too few params) becomes `Unhandled`."""
        sender = Prefix.parse(msg.source or self.server_name)
        if msg.command.isdigit():
            handler = _NUMERICS.get(msg.command, IrcConnectionState._on_numeric)
        else:
            handler = _COMMANDS.get(msg.command, IrcConnectionState._on_unknown)
        if len(msg.params) < _MIN_PARAMS.get(msg.command, 0):
            handler = IrcConnectionState._on_unknown
        return handler(self, msg, sender)

    def _send(self, command: str, *params: str) -> bool:
        try:
            self._outbox.append(serialize(Message.of(command, *params)))
        except LocalProtocolError:
            return False
        return True

    # registration

    def _on_cap(self, msg: Message, sender: Prefix) -> list[Event]:
        sub, events = msg.params[1].upper(), list[Event]()
        caps = msg.params[-1].split() if len(msg.params) > 2 else []
        if sub in {"LS", "NEW"}:
            for cap in caps:
                name, _, value = cap.partition("=")
                self.available_caps[name] = value
            more = len(msg.params) > 3 and msg.params[2] == "*"
            if sub == "LS" and not more and self.phase == "cap-ls":
                self._request_caps(events)
            elif sub == "NEW" and self.registered:
                self._req(sorted((self._wanted_caps & set(caps)) - self.enabled_caps))
        elif sub in {"ACK", "NAK", "DEL"}:
            for cap in caps:
                if sub == "DEL":
                    self.available_caps.pop(cap, None)
                if sub == "DEL" or cap.startswith("-"):
                    self.enabled_caps.discard(cap.removeprefix("-"))
                elif sub == "ACK":
                    self.enabled_caps.add(cap)
            if sub != "DEL" and self.phase == "cap-req":
                self._pending_reqs -= 1
                if self._pending_reqs <= 0:
                    self._after_caps(events)
            else:
                events.append(ev.CapsChanged(frozenset(self.enabled_caps)))
        return events

    def _request_caps(self, events: list[Event]) -> None:
        wanted = set(self._wanted_caps & self.available_caps.keys())
        mechanisms = self.available_caps.get("sasl")
        if self._sasl and mechanisms is not None:
            if not mechanisms or "PLAIN" in mechanisms.upper().split(","):
                wanted.add("sasl")
        self._pending_reqs = self._req(sorted(wanted))
        if self._pending_reqs:
            self.phase = "cap-req"
        else:
            self._after_caps(events)

    def _req(self, caps: Sequence[str]) -> int:
        """Send CAP REQ lines of at most ~400 bytes; return how many were sent."""
        lines: list[list[str]] = []
        for cap in caps:
            if not lines or len(" ".join([*lines[-1], cap])) > 400:
                lines.append([])
            lines[-1].append(cap)
        return sum(self._send("CAP", "REQ", " ".join(line)) for line in lines)

    def _after_caps(self, events: list[Event]) -> None:
        if self._sasl and "sasl" in self.enabled_caps:
            self.phase = "sasl"
            self._send("AUTHENTICATE", "PLAIN")
            return
        if self._sasl:
            events.append(ev.SaslResult(False, "", "the server offers no SASL PLAIN"))
        self._end_caps(events)

    def _end_caps(self, events: list[Event]) -> None:
        if self.phase in {"cap-ls", "cap-req", "sasl"}:
            self._send("CAP", "END")
            self.phase = "registering"
            events.append(ev.CapsChanged(frozenset(self.enabled_caps)))

    def _on_authenticate(self, msg: Message, sender: Prefix) -> list[Event]:
        if msg.params[0] != "+" or self.phase != "sasl" or self._sasl is None:
            return []
        user, password = self._sasl
        payload = base64.b64encode(f"{user}\0{user}\0{password}".encode()).decode()
        for start in range(0, len(payload), _SASL_CHUNK):
            self._send("AUTHENTICATE", payload[start : start + _SASL_CHUNK])
        if len(payload) % _SASL_CHUNK == 0:  # tells the server the payload is complete
            self._send("AUTHENTICATE", "+")
        return []

    def _on_sasl_done(self, msg: Message, sender: Prefix) -> list[Event]:
        events: list[Event] = []
        if self.phase == "sasl":
            ok = msg.command in {"903", "907"}
            events.append(ev.SaslResult(ok, msg.command, msg.params[-1]))
            self._end_caps(events)
        return events

    def _on_welcome(self, msg: Message, sender: Prefix) -> list[Event]:
        events: list[Event] = []
        if self._sasl and self.phase in {"cap-ls", "cap-req", "sasl"}:  # CAP ignored
            events.append(ev.SaslResult(False, "", "registered without CAP negotiation"))
        self.phase = "registered"
        self.nick = Nick(msg.params[0])
        self.server_name = sender.nick
        return [*events, ev.Registered(self.nick, self.server_name, msg.params[-1])]

    def _on_isupport(self, msg: Message, sender: Prefix) -> list[Event]:
        self.isupport = self.isupport.updated(msg.params[1:-1])
        return [ev.ISupportChanged(self.isupport)]

    def _on_nick_error(self, msg: Message, sender: Prefix) -> list[Event]:
        if self.registered:
            return self._on_numeric(msg, sender)
        rejected = Nick(msg.params[1] if len(msg.params) > 2 else self.nick)
        self._nick_attempts += 1
        if self._nick_attempts > _NICK_ATTEMPTS:
            return [ev.RegistrationFailed(f"nick {self._wanted_nick!r} and its variants refused")]
        retry = Nick(nick_candidate(self._wanted_nick, self._nick_attempts))
        self.nick = retry
        self._send("NICK", retry)
        return [ev.NickRetry(rejected, retry, msg.command, _NICK_ERRORS[msg.command])]

    # the event stream

    def _on_ping(self, msg: Message, sender: Prefix) -> list[Event]:
        self._send("PONG", *msg.params)
        return []

    def _on_pong(self, msg: Message, sender: Prefix) -> list[Event]:
        return [ev.PongReceived(msg.params[-1] if msg.params else "")]

    def _on_error(self, msg: Message, sender: Prefix) -> list[Event]:
        self.phase = "closed"
        return [ev.ServerError(msg.params[-1] if msg.params else "")]

    def _channel(self, target: str) -> Channel | None:
        """The channel a message went to, also when sent to its ops only (`@#chan`)."""
        if not self.isupport.is_channel(target):
            target = target.lstrip(self.isupport.statusmsg)
        return Channel(target) if self.isupport.is_channel(target) else None

    def _on_text(self, msg: Message, sender: Prefix) -> list[Event]:
        target, text = msg.params[0], msg.params[1]
        notice = msg.command == "NOTICE"
        kind: MessageKind = "notice" if notice else "privmsg"
        if text.startswith("\x01"):
            command, _, args = text[1:].removesuffix("\x01").partition(" ")
            if command.upper() != "ACTION":
                return self._ctcp(sender, target, command.upper(), args, notice)
            kind, text = "action", args
        own, tags = self.is_own(sender.nick), msg.tags
        channel, time = self._channel(target), message_time(tags)
        msgid, account = tags.get("msgid"), tags.get("account")
        history = self._batches.get(tags.get("batch", "")) in HISTORY_BATCHES
        return [
            ev.MessageReceived(
                sender, target, text, kind, channel, own, time, msgid, account, history
            )
        ]

    def _ctcp(
        self, sender: Prefix, target: str, command: str, args: str, notice: bool
    ) -> list[Event]:
        if notice:
            return [ev.CtcpReply(sender, command, args)]
        answer = {"VERSION": self._version, "PING": args}.get(command)
        answered = False
        if answer is not None and sender.user is not None and not self.is_own(sender.nick):
            answer = answer.encode(errors="ignore")[:_CTCP_MAX].decode(errors="ignore")
            answered = self._send("NOTICE", sender.nick, f"\x01{command} {answer}\x01")
        return [ev.CtcpRequest(sender, target, command, args, answered)]

    def _on_join(self, msg: Message, sender: Prefix) -> list[Event]:
        extended = len(msg.params) >= 3
        account = msg.params[1] if extended else msg.tags.get("account", "*")
        return [
            ev.Joined(
                Channel(channel),
                Nick(sender.nick),
                sender,
                account=None if account == "*" else account,
                realname=msg.params[2] if extended else None,
                own=self.is_own(sender.nick),
                time=message_time(msg.tags),
            )
            for channel in msg.params[0].split(",")
            if channel
        ]

    def _on_part(self, msg: Message, sender: Prefix) -> list[Event]:
        reason = msg.params[1] if len(msg.params) > 1 else ""
        own, time = self.is_own(sender.nick), message_time(msg.tags)
        return [
            ev.Parted(Channel(channel), Nick(sender.nick), reason, own, time)
            for channel in msg.params[0].split(",")
            if channel
        ]

    def _on_quit(self, msg: Message, sender: Prefix) -> list[Event]:
        reason = msg.params[0] if msg.params else ""
        return [
            ev.Quit(Nick(sender.nick), reason, self.is_own(sender.nick), message_time(msg.tags))
        ]

    def _on_kick(self, msg: Message, sender: Prefix) -> list[Event]:
        channel, victim = Channel(msg.params[0]), Nick(msg.params[1])
        reason = msg.params[2] if len(msg.params) > 2 else ""
        time = message_time(msg.tags)
        return [ev.Kicked(channel, victim, Nick(sender.nick), reason, self.is_own(victim), time)]

    def _on_nick(self, msg: Message, sender: Prefix) -> list[Event]:
        own = self.is_own(sender.nick)
        new = Nick(msg.params[0])
        if own:
            self.nick = new
        return [ev.NickChanged(Nick(sender.nick), new, own, message_time(msg.tags))]

    def _on_topic(self, msg: Message, sender: Prefix) -> list[Event]:
        text, time = msg.params[1], message_time(msg.tags)
        return [ev.Topic(Channel(msg.params[0]), text, sender.nick, live=True, time=time)]

    def _on_rpl_topic(self, msg: Message, sender: Prefix) -> list[Event]:
        return [ev.Topic(Channel(msg.params[1]), msg.params[2])]

    def _on_topic_who_time(self, msg: Message, sender: Prefix) -> list[Event]:
        set_at = None
        if len(msg.params) > 3 and msg.params[3].isdecimal() and len(msg.params[3]) < 12:
            set_at = datetime.fromtimestamp(int(msg.params[3]), UTC)
        by = Prefix.parse(msg.params[2]).nick
        return [ev.TopicSetBy(Channel(msg.params[1]), by, set_at)]

    def _on_names(self, msg: Message, sender: Prefix) -> list[Event]:
        channel = msg.params[-2]
        _, members, masks = self._names.setdefault(
            self.casefold(channel), (Channel(channel), [], [])
        )
        for entry in msg.params[-1].split():
            member = self.isupport.split_member(entry)
            members.append(member)
            if "!" in entry and "@" in entry:  # userhost-in-names
                masks.append(Prefix.parse(entry[len(member.prefixes) :]))
        return []

    def _on_end_of_names(self, msg: Message, sender: Prefix) -> list[Event]:
        key = self.casefold(msg.params[1])
        channel, members, masks = self._names.pop(key, (Channel(msg.params[1]), [], []))
        return [ev.ChannelMembers(channel, tuple(members), tuple(masks))]

    def _on_who_reply(self, msg: Message, sender: Prefix) -> list[Event]:
        # me channel user host server nick flags :hops realname
        _, channel, user, host, _, nick, flags = msg.params[:7]
        realname = msg.params[7].partition(" ")[2] if len(msg.params) > 7 else ""
        return [ev.WhoEntry(channel, Prefix(nick, user, host), flags.startswith("G"), realname)]

    def _on_whox_reply(self, msg: Message, sender: Prefix) -> list[Event]:
        # me token channel user host nick flags account :realname (fields of `who_query`)
        if msg.params[1] != WHOX_TOKEN or len(msg.params) < 9:
            return self._on_numeric(msg, sender)  # someone else's WHOX
        _, _, channel, user, host, nick, flags, account, realname = msg.params[:9]
        mask = Prefix(nick, user, host)
        account = "" if account == "0" else account  # "0": not logged in
        return [ev.WhoEntry(channel, mask, flags.startswith("G"), realname, account)]

    def _on_away(self, msg: Message, sender: Prefix) -> list[Event]:
        message = msg.params[0] if msg.params else None
        return [ev.AwayChanged(Nick(sender.nick), message, self.is_own(sender.nick))]

    def _on_batch(self, msg: Message, sender: Prefix) -> list[Event]:
        ref = msg.params[0]
        if ref.startswith("+") and len(msg.params) > 1:
            if len(self._batches) >= _BATCHES_MAX:  # a server that never closes them
                del self._batches[next(iter(self._batches))]
            self._batches[ref[1:]] = msg.params[1]
        elif ref.startswith("-"):
            self._batches.pop(ref[1:], None)
        return []

    def _on_mode(self, msg: Message, sender: Prefix) -> list[Event]:
        target = msg.params[0]
        modes = msg.params[1] if len(msg.params) > 1 else ""
        if not self.isupport.is_channel(target):
            return [ev.UserModeChanged(Nick(target), modes)]
        changes = self.isupport.parse_modes(modes, msg.params[2:])
        by = sender.nick or None
        return [ev.ChannelModeChanged(Channel(target), by, changes, message_time(msg.tags))]

    def _on_invite(self, msg: Message, sender: Prefix) -> list[Event]:
        return [ev.Invited(Channel(msg.params[1]), Nick(sender.nick), Nick(msg.params[0]))]

    def _on_numeric(self, msg: Message, sender: Prefix) -> list[Event]:
        return [ev.ServerReply(msg.command, msg.params[1:], msg.source)]

    def _on_unknown(self, msg: Message, sender: Prefix) -> list[Event]:
        return [ev.Unhandled(msg.command, msg.params, msg.source)]


_S = IrcConnectionState
_COMMANDS: dict[str, _Handler] = {
    "CAP": _S._on_cap,
    "AUTHENTICATE": _S._on_authenticate,
    "PING": _S._on_ping,
    "PONG": _S._on_pong,
    "ERROR": _S._on_error,
    "PRIVMSG": _S._on_text,
    "NOTICE": _S._on_text,
    "JOIN": _S._on_join,
    "PART": _S._on_part,
    "QUIT": _S._on_quit,
    "KICK": _S._on_kick,
    "NICK": _S._on_nick,
    "TOPIC": _S._on_topic,
    "MODE": _S._on_mode,
    "INVITE": _S._on_invite,
    "AWAY": _S._on_away,
    "BATCH": _S._on_batch,
}
_NUMERICS: dict[str, _Handler] = {
    "001": _S._on_welcome,
    "005": _S._on_isupport,
    "332": _S._on_rpl_topic,
    "333": _S._on_topic_who_time,
    "353": _S._on_names,
    "366": _S._on_end_of_names,
    "352": _S._on_who_reply,
    "354": _S._on_whox_reply,
    **dict.fromkeys(_NICK_ERRORS, _S._on_nick_error),
    **dict.fromkeys(("903", "904", "905", "906", "907"), _S._on_sasl_done),
}
# Fewer params than this and the handler cannot make sense of the message.
_MIN_PARAMS = {
    "CAP": 2, "AUTHENTICATE": 1, "PRIVMSG": 2, "NOTICE": 2, "JOIN": 1, "PART": 1,
    "KICK": 2, "NICK": 1, "TOPIC": 2, "MODE": 1, "INVITE": 2, "BATCH": 1, "001": 1,
    "332": 3, "333": 3, "352": 7, "354": 2, "353": 3, "366": 2, "432": 1, "433": 1, "436": 1,
    "437": 1, "903": 1, "904": 1, "905": 1, "906": 1, "907": 1,
}  # fmt: skip
