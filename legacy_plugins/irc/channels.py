"""Who is in which channel, with which prefixes: state rebuilt from the event stream.

A `ChannelTracker` belongs to one IRC connection. `apply(event)` updates it and returns
the channels the event touched, so that a QUIT or a NICK (which name no channel) can be
shown in every room the nick was in. Names compare under the server's CASEMAPPING.
Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import events as ev
from .events import Channel, ISupport, Member

__all__ = ["ChannelState", "ChannelTracker"]


@dataclass(slots=True)
class ChannelState:
    """One joined channel. `members` maps folded nicks to members (our own included)."""

    name: Channel
    members: dict[str, Member] = field(default_factory=dict)
    topic: str = ""
    names_received: bool = False


class ChannelTracker:
    """The channels one connection is in. `isupport` is read at each call, so 005
    changes (CASEMAPPING, PREFIX) apply at once."""

    def __init__(self, isupport: Callable[[], ISupport]) -> None:
        self._isupport = isupport
        self._channels: dict[str, ChannelState] = {}

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
        return (state.name,)

    def _left(self, event: ev.Parted | ev.Kicked) -> tuple[Channel, ...]:
        state = self.get(event.channel)
        if state is None:
            return ()
        if event.own:
            del self._channels[self.fold(event.channel)]
        else:
            state.members.pop(self.fold(event.nick), None)
        return (state.name,)

    def _quit(self, event: ev.Quit) -> tuple[Channel, ...]:
        touched = self.channels_of(event.nick)
        for channel in touched:
            self._channels[self.fold(channel)].members.pop(self.fold(event.nick), None)
        return touched

    def _nick(self, event: ev.NickChanged) -> tuple[Channel, ...]:
        touched = self.channels_of(event.old)
        for channel in touched:
            members = self._channels[self.fold(channel)].members
            old = members.pop(self.fold(event.old))
            members[self.fold(event.new)] = Member(event.new, old.prefixes)
        return touched

    def _names(self, event: ev.ChannelMembers) -> tuple[Channel, ...]:
        state = self.get(event.channel)
        if state is None:
            return ()
        state.members = {self.fold(m.nick): m for m in event.members}
        state.names_received = True
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


_HANDLERS: dict[type, Callable[[ChannelTracker, Any], tuple[Channel, ...]]] = {
    ev.Joined: ChannelTracker._joined,
    ev.Parted: ChannelTracker._left,
    ev.Kicked: ChannelTracker._left,
    ev.Quit: ChannelTracker._quit,
    ev.NickChanged: ChannelTracker._nick,
    ev.ChannelMembers: ChannelTracker._names,
    ev.Topic: ChannelTracker._topic,
    ev.ChannelModeChanged: ChannelTracker._modes,
}
