"""What the gateway remembers about a user's Matrix rooms, fed by sync events (no I/O).

`RoomTracker` keeps, per room, the state that decides how it shows on XMPP: its name,
topic, encryption, members and power levels, and the user's ``m.direct`` account data.
A room is a **direct chat** with user X, shown as the 1:1 contact X, when ``m.direct``
lists it for X, or when it has no name and exactly two members (joined or invited), X
and the user. Every other room is a group chat (a MUC).

`ReactionBook` remembers who reacted with what to which event and through which
reaction event, since XMPP (XEP-0444) sends the full set of a person's reactions while
Matrix sends one event per emoji and removes one by redacting it. It is bounded: the
oldest messages are forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .events import Membership, StateChange
from .ids import EventId, RoomId, UserId

__all__ = ["Member", "ReactionBook", "RoomState", "RoomTracker", "typing_changes"]


@dataclass(slots=True)
class Member:
    membership: str
    displayname: str | None = None
    avatar_url: str | None = None


def _power(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


@dataclass(slots=True)
class RoomState:
    """One room's state, as far as sync has shown it."""

    room_id: RoomId
    name: str | None = None
    topic: str | None = None
    canonical_alias: str | None = None
    avatar_url: str | None = None
    encrypted: bool = False
    members: dict[UserId, Member] = field(default_factory=dict)
    joined_count: int | None = None
    invited_count: int | None = None
    heroes: tuple[UserId, ...] = ()
    user_powers: dict[UserId, int] = field(default_factory=dict)
    users_default: int = 0
    creators: frozenset[UserId] = frozenset()
    creators_rule: bool = False
    """Room version 12 and later: the creators outrank everyone, whatever power levels say."""

    def apply(self, event: Membership | StateChange) -> None:
        """Take one state event into account."""
        if isinstance(event, Membership):
            self.members[event.user] = Member(event.membership, event.displayname, event.avatar_url)
            return
        content: Mapping[str, Any] = event.content
        if event.state_key != "":
            return
        if event.type == "m.room.name":
            name = content.get("name")
            self.name = name if isinstance(name, str) and name.strip() else None
        elif event.type == "m.room.topic":
            topic = content.get("topic")
            self.topic = topic if isinstance(topic, str) else None
        elif event.type == "m.room.canonical_alias":
            alias = content.get("alias")
            self.canonical_alias = alias if isinstance(alias, str) else None
        elif event.type == "m.room.avatar":
            url = content.get("url")
            self.avatar_url = url if isinstance(url, str) and url.startswith("mxc://") else None
        elif event.type == "m.room.encryption":
            self.encrypted = True
        elif event.type == "m.room.create":
            extra = content.get("additional_creators")
            others = [u for u in extra if isinstance(u, str)] if isinstance(extra, list) else []
            self.creators = frozenset({event.sender, *map(UserId, others)})
            version = content.get("room_version")
            self.creators_rule = (
                isinstance(version, str) and version.isdigit() and int(version) >= 12
            )
        elif event.type == "m.room.power_levels":
            users = content.get("users")
            self.user_powers = {
                UserId(u): _power(p, 0)
                for u, p in (users.items() if isinstance(users, Mapping) else ())
                if isinstance(u, str)
            }
            self.users_default = _power(content.get("users_default"), 0)

    def apply_summary(
        self, joined: int | None, invited: int | None, heroes: tuple[UserId, ...]
    ) -> None:
        if joined is not None:
            self.joined_count = joined
        if invited is not None:
            self.invited_count = invited
        if heroes:
            self.heroes = heroes

    def member_count(self) -> int:
        """Joined and invited members."""
        if self.joined_count is not None or self.invited_count is not None:
            return (self.joined_count or 0) + (self.invited_count or 0)
        return sum(1 for m in self.members.values() if m.membership in ("join", "invite"))

    def others(self, me: UserId) -> list[UserId]:
        """Members (joined or invited) other than ``me``, heroes first."""
        present = [
            u for u, m in self.members.items() if m.membership in ("join", "invite") and u != me
        ]
        heroes = [h for h in self.heroes if h != me and h not in present]
        return heroes + present

    def member_name(self, user: UserId) -> str | None:
        member = self.members.get(user)
        return member.displayname if member is not None else None

    def power(self, user: UserId) -> int:
        """The user's power level; creators count as 100 in room versions 12+ (where they
        are above all levels) and before the first power levels event."""
        if user in self.creators and (self.creators_rule or not self.user_powers):
            return 100
        return self.user_powers.get(user, self.users_default)

    def display_name(self, me: UserId) -> str:
        """The room's name as the spec's "calculating the display name" says."""
        if self.name:
            return self.name
        if self.canonical_alias:
            return self.canonical_alias
        names = [self.member_name(u) or u for u in self.others(me)[:5]]
        return ", ".join(names) if names else "Empty room"


class RoomTracker:
    """All of one user's rooms, and which of them are direct chats."""

    def __init__(self, me: UserId) -> None:
        self.me = me
        self.rooms: dict[RoomId, RoomState] = {}
        self.direct: dict[UserId, tuple[RoomId, ...]] = {}

    def room(self, room_id: RoomId) -> RoomState:
        state = self.rooms.get(room_id)
        if state is None:
            state = self.rooms[room_id] = RoomState(room_id)
        return state

    def forget(self, room_id: RoomId) -> None:
        self.rooms.pop(room_id, None)

    def set_direct(self, direct: Mapping[UserId, Iterable[RoomId]]) -> None:
        self.direct = {user: tuple(rooms) for user, rooms in direct.items()}

    def add_direct(self, user: UserId, room_id: RoomId) -> dict[UserId, list[RoomId]] | None:
        """Record ``room_id`` as a direct chat with ``user``; returns the new ``m.direct``
        content to store, or None if it already said so."""
        rooms = self.direct.get(user, ())
        if room_id in rooms:
            return None
        self.direct[user] = (*rooms, room_id)
        return {u: list(r) for u, r in self.direct.items()}

    def dm_partner(self, room_id: RoomId) -> UserId | None:
        """The other person, if ``room_id`` is a direct chat (see the module docstring)."""
        state = self.rooms.get(room_id)
        for user, rooms in self.direct.items():
            if room_id in rooms and user != self.me:
                if state is None or state.member_count() <= 2:
                    return user
        if state is None or state.name or state.member_count() != 2:
            return None
        others = state.others(self.me)
        return others[0] if len(others) == 1 else None

    def dm_room(self, user: UserId) -> RoomId | None:
        """The room to write to ``user`` in: the last one ``m.direct`` lists that is still
        a direct chat with them, or any joined direct chat with them."""
        for room_id in reversed(self.direct.get(user, ())):
            if room_id in self.rooms and self.dm_partner(room_id) == user:
                return room_id
        for room_id in self.rooms:
            if self.dm_partner(room_id) == user:
                return room_id
        return None

    def dm_partners(self) -> dict[RoomId, UserId]:
        partners = {r: self.dm_partner(r) for r in self.rooms}
        return {r: u for r, u in partners.items() if u is not None}


def typing_changes(
    before: frozenset[UserId], now: frozenset[UserId], me: UserId
) -> tuple[set[UserId], set[UserId]]:
    """Who started and who stopped typing between two ``m.typing`` events (not ``me``)."""
    return set(now - before - {me}), set(before - now - {me})


class ReactionBook:
    """Reactions per target event and person, with the Matrix event behind each one."""

    def __init__(self, max_targets: int = 10_000) -> None:
        self.max_targets = max_targets
        self._by_target: OrderedDict[EventId, dict[UserId, dict[str, EventId]]] = OrderedDict()
        self._by_event: dict[EventId, tuple[EventId, UserId, str]] = {}

    def add(self, target: EventId, sender: UserId, key: str, event_id: EventId) -> set[str]:
        """Record a reaction; returns ``sender``'s reactions to ``target`` now."""
        people = self._by_target.setdefault(target, {})
        self._by_target.move_to_end(target)
        people.setdefault(sender, {})[key] = event_id
        self._by_event[event_id] = (target, sender, key)
        while len(self._by_target) > self.max_targets:
            _old, gone = self._by_target.popitem(last=False)
            for keys in gone.values():
                for reaction in keys.values():
                    self._by_event.pop(reaction, None)
        return set(people[sender])

    def remove(self, event_id: EventId) -> tuple[EventId, UserId, set[str]] | None:
        """Forget the reaction event ``event_id`` (it was redacted); returns its target,
        its sender and the sender's remaining reactions, or None if it is unknown."""
        found = self._by_event.pop(event_id, None)
        if found is None:
            return None
        target, sender, key = found
        keys = self._by_target.get(target, {}).get(sender, {})
        if keys.get(key) == event_id:
            del keys[key]
        return target, sender, set(keys)

    def keys(self, target: EventId, sender: UserId) -> dict[str, EventId]:
        """``sender``'s reactions to ``target``: key → reaction event."""
        return dict(self._by_target.get(target, {}).get(sender, {}))

    def is_reaction(self, event_id: EventId) -> bool:
        return event_id in self._by_event
