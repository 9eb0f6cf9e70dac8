"""Who is in which channel, with which prefixes: state rebuilt from the event stream.

A `ChannelTracker` belongs to one IRC connection. `apply(event)` updates it and returns
the channels the event touched, so that a QUIT or a NICK (which name no channel) can be
shown in every room the nick was in. Names compare under the server's CASEMAPPING.
It also keeps what the rooms need beyond names: each channel's ban masks (MODE +b and
the ban list, 367), the `nick!user@host` of the people we share a channel with (JOIN,
userhost-in-names, WHO, their messages), so bans can be matched to occupants, who
is away (away-notify, WHO), and who is logged in to which services account
(extended-join, account-tag, account-notify's ACCOUNT, WHOX). Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import events as ev
from .events import Channel, ISupport, Member, Prefix
from .translate import Affiliation, Role, mask_matches, muc_role_affiliation

__all__ = ["ChannelState", "ChannelTracker"]


@dataclass(slots=True)
class ChannelState:
    """One joined channel. `members` maps folded nicks to members (our own included)."""

    name: Channel
    members: dict[str, Member] = field(default_factory=dict)
    topic: str = ""
    names_received: bool = False
    bans: set[str] = field(default_factory=set)
    """Ban masks (+b), as the server wrote them."""


class ChannelTracker:
    """The channels one connection is in. `isupport` is read at each call, so 005
    changes (CASEMAPPING, PREFIX) apply at once."""

    def __init__(self, isupport: Callable[[], ISupport]) -> None:
        self._isupport = isupport
        self._channels: dict[str, ChannelState] = {}
        self._masks: dict[str, Prefix] = {}
        self._away: dict[str, str] = {}
        self._accounts: dict[str, str] = {}

    def fold(self, name: str) -> str:
        return self._isupport().casefold(name)

    def __iter__(self) -> Iterator[ChannelState]:
        return iter(list(self._channels.values()))

    def __contains__(self, channel: str) -> bool:
        return self.fold(channel) in self._channels

    def get(self, channel: str) -> ChannelState | None:
        return self._channels.get(self.fold(channel))

    def member(self, channel: str, nick: str) -> Member | None:
        state = self.get(channel)
        return None if state is None else state.members.get(self.fold(nick))

    def channels_of(self, nick: str) -> tuple[Channel, ...]:
        key = self.fold(nick)
        return tuple(state.name for state in self._channels.values() if key in state.members)

    def clear(self) -> None:
        """The connection is gone: it is in no channel any more."""
        self._channels.clear()
        self._masks.clear()
        self._away.clear()
        self._accounts.clear()

    def mask_of(self, nick: str) -> Prefix:
        """`nick!user@host` if known, else just the nick."""
        return self._masks.get(self.fold(nick)) or Prefix(nick)

    def account_of(self, nick: str) -> str | None:
        """The services account `nick` is logged in to, if the server said so."""
        return self._accounts.get(self.fold(nick))

    def away_message(self, nick: str) -> str | None:
        """The away message of `nick` if they are away ("" when it is not known)."""
        return self._away.get(self.fold(nick))

    def bans_on(self, channel: str, nick: str) -> list[str]:
        """The ban masks of `channel` that match `nick` (as far as its mask is known)."""
        state = self.get(channel)
        if state is None:
            return []
        who, mapping = self.mask_of(nick), self._isupport().casemapping
        return [mask for mask in sorted(state.bans) if mask_matches(mask, who, mapping)]

    def banned(self, channel: str, nick: str) -> bool:
        return bool(self.bans_on(channel, nick))

    def standing(self, channel: str, nick: str) -> tuple[Role, Affiliation]:
        """The MUC role and affiliation of `nick` in `channel`: from their channel modes
        (`translate.muc_role_affiliation`), except that a ban matching someone without
        a mode makes them an outcast visitor (IRC does not let banned people speak)."""
        member = self.member(channel, nick)
        role, affiliation = muc_role_affiliation(
            member.prefixes if member else "", self._isupport()
        )
        if affiliation == "none" and self.banned(channel, nick):
            return "visitor", "outcast"
        return role, affiliation

    def _learn(self, mask: Prefix) -> None:
        if mask.user is not None and mask.host is not None and self.channels_of(mask.nick):
            self._masks[self.fold(mask.nick)] = mask

    def _forget_if_gone(self, nick: str) -> None:
        if not self.channels_of(nick):
            self._masks.pop(self.fold(nick), None)
            self._away.pop(self.fold(nick), None)
            self._accounts.pop(self.fold(nick), None)

    def apply(self, event: ev.Event) -> tuple[Channel, ...]:
        """Update from one event; return the channels it concerns (before the change,
        for QUIT and NICK)."""
        handler = _HANDLERS.get(type(event))
        return () if handler is None else handler(self, event)

    def _joined(self, event: ev.Joined) -> tuple[Channel, ...]:
        state = self.get(event.channel)
        if state is None:
            if not event.own:
                return ()
            state = self._channels[self.fold(event.channel)] = ChannelState(event.channel)
        state.members[self.fold(event.nick)] = Member(event.nick)
        self._learn(event.mask)
        if event.account is not None:
            self._accounts[self.fold(event.nick)] = event.account
        elif event.realname is not None:  # extended-join: "*" is logged out
            self._accounts.pop(self.fold(event.nick), None)
        return (state.name,)

    def _left(self, event: ev.Parted | ev.Kicked) -> tuple[Channel, ...]:
        state = self.get(event.channel)
        if state is None:
            return ()
        if event.own:
            del self._channels[self.fold(event.channel)]
            for key in [k for k in self._masks if not self.channels_of(k)]:
                self._forget_if_gone(key)
        else:
            state.members.pop(self.fold(event.nick), None)
            self._forget_if_gone(event.nick)
        return (state.name,)

    def _quit(self, event: ev.Quit) -> tuple[Channel, ...]:
        touched = self.channels_of(event.nick)
        for channel in touched:
            self._channels[self.fold(channel)].members.pop(self.fold(event.nick), None)
        self._forget_if_gone(event.nick)
        return touched

    def _nick(self, event: ev.NickChanged) -> tuple[Channel, ...]:
        touched = self.channels_of(event.old)
        for channel in touched:
            members = self._channels[self.fold(channel)].members
            old = members.pop(self.fold(event.old))
            members[self.fold(event.new)] = Member(event.new, old.prefixes)
        old_key, new_key = self.fold(event.old), self.fold(event.new)
        if (mask := self._masks.pop(old_key, None)) is not None:
            self._masks[new_key] = Prefix(event.new, mask.user, mask.host)
        if (away := self._away.pop(old_key, None)) is not None:
            self._away[new_key] = away
        if (account := self._accounts.pop(old_key, None)) is not None:
            self._accounts[new_key] = account
        return touched

    def _names(self, event: ev.ChannelMembers) -> tuple[Channel, ...]:
        state = self.get(event.channel)
        if state is None:
            return ()
        state.members = {self.fold(m.nick): m for m in event.members}
        state.names_received = True
        for mask in event.masks:
            self._learn(mask)
        return (state.name,)

    def _topic(self, event: ev.Topic) -> tuple[Channel, ...]:
        state = self.get(event.channel)
        if state is None:
            return ()
        state.topic = event.text
        return (state.name,)

    def _modes(self, event: ev.ChannelModeChanged) -> tuple[Channel, ...]:
        state = self.get(event.channel)
        if state is None:
            return ()
        order = self._isupport().prefix
        symbols = dict(order)
        for change in event.changes:
            if change.mode == "b" and change.kind == "list" and change.arg:
                if change.adding:
                    state.bans.add(change.arg)
                else:
                    state.bans.discard(change.arg)
            if change.kind != "member" or change.arg is None:
                continue
            key = self.fold(change.arg)
            member = state.members.get(key)
            symbol = symbols.get(change.mode)
            if member is None or symbol is None:
                continue
            have = set(member.prefixes) - {symbol}
            if change.adding:
                have.add(symbol)
            prefixes = "".join(sym for _, sym in order if sym in have)
            state.members[key] = Member(member.nick, prefixes)
        return (state.name,)

    def _message(self, event: ev.MessageReceived) -> tuple[Channel, ...]:
        self._learn(event.sender)
        if event.account is not None and self.channels_of(event.sender.nick):
            self._accounts[self.fold(event.sender.nick)] = event.account
        return () if event.channel is None else (event.channel,)

    def _unhandled(self, event: ev.Unhandled) -> tuple[Channel, ...]:
        # account-notify: `:nick!u@h ACCOUNT name` (logged in) or `ACCOUNT *` (out)
        if event.command != "ACCOUNT" or not event.params or event.source is None:
            return ()
        nick = Prefix.parse(event.source).nick
        touched = self.channels_of(nick)
        if touched and event.params[0] != "*":
            self._accounts[self.fold(nick)] = event.params[0]
        else:
            self._accounts.pop(self.fold(nick), None)
        return touched

    def _who(self, event: ev.WhoEntry) -> tuple[Channel, ...]:
        self._learn(event.mask)
        key = self.fold(event.mask.nick)
        if not self.channels_of(key):
            return ()
        if event.away:
            self._away.setdefault(key, "")
        else:
            self._away.pop(key, None)
        if event.account:  # WHOX: who is logged in to what, for people already there
            self._accounts[key] = event.account
        elif event.account is not None:
            self._accounts.pop(key, None)
        state = self.get(event.channel)
        return () if state is None else (state.name,)

    def _away_changed(self, event: ev.AwayChanged) -> tuple[Channel, ...]:
        touched = self.channels_of(event.nick)
        if touched and event.message is not None:
            self._away[self.fold(event.nick)] = event.message
        else:
            self._away.pop(self.fold(event.nick), None)
        return touched

    def _reply(self, event: ev.ServerReply) -> tuple[Channel, ...]:
        # RPL_BANLIST: channel mask [setter [time]]
        if event.code != "367" or len(event.params) < 2:
            return ()
        state = self.get(event.params[0])
        if state is None:
            return ()
        state.bans.add(event.params[1])
        return (state.name,)


_HANDLERS: dict[type, Callable[[ChannelTracker, Any], tuple[Channel, ...]]] = {
    ev.Joined: ChannelTracker._joined,
    ev.Parted: ChannelTracker._left,
    ev.Kicked: ChannelTracker._left,
    ev.Quit: ChannelTracker._quit,
    ev.NickChanged: ChannelTracker._nick,
    ev.ChannelMembers: ChannelTracker._names,
    ev.Topic: ChannelTracker._topic,
    ev.ChannelModeChanged: ChannelTracker._modes,
    ev.MessageReceived: ChannelTracker._message,
    ev.WhoEntry: ChannelTracker._who,
    ev.AwayChanged: ChannelTracker._away_changed,
    ev.ServerReply: ChannelTracker._reply,
    ev.Unhandled: ChannelTracker._unhandled,
}
