"""Room state, direct chats and reactions bookkeeping (legacy_plugins.matrix.rooms)."""

from __future__ import annotations

from typing import Any

from legacy_plugins.matrix.events import Membership, StateChange
from legacy_plugins.matrix.ids import EventId, RoomId, UserId
from legacy_plugins.matrix.rooms import ReactionBook, RoomTracker, typing_changes

ME = UserId("@alice:x.org")
BOB = UserId("@bob:x.org")
CAROL = UserId("@carol:x.org")
R1, R2, R3 = RoomId("!r1:x.org"), RoomId("!r2:x.org"), RoomId("!r3:x.org")


def member(
    room: RoomId, user: UserId, membership: str = "join", name: str | None = None
) -> Membership:
    return Membership(room, user, user, membership, displayname=name)


def state(room: RoomId, etype: str, content: dict[str, Any], sender: UserId = BOB) -> StateChange:
    return StateChange(room, sender, etype, "", content)


def tracker_with(room: RoomId, *users: UserId) -> RoomTracker:
    tracker = RoomTracker(ME)
    for user in (ME, *users):
        tracker.room(room).apply(member(room, user))
    return tracker


def test_two_members_without_a_name_is_a_direct_chat() -> None:
    tracker = tracker_with(R1, BOB)
    assert tracker.dm_partner(R1) == BOB
    assert tracker.dm_room(BOB) == R1
    tracker.room(R1).apply(state(R1, "m.room.name", {"name": "Project"}))
    assert tracker.dm_partner(R1) is None


def test_invited_counts_and_three_members_make_a_group() -> None:
    tracker = tracker_with(R1)
    tracker.room(R1).apply(member(R1, BOB, "invite"))
    assert tracker.dm_partner(R1) == BOB
    tracker.room(R1).apply(member(R1, CAROL))
    assert tracker.dm_partner(R1) is None


def test_m_direct_wins_and_the_latest_room_is_used() -> None:
    tracker = tracker_with(R1, BOB)
    tracker.room(R2).apply(member(R2, ME))
    tracker.room(R2).apply_summary(2, 0, (BOB,))
    tracker.room(R2).apply(state(R2, "m.room.name", {"name": "named DM"}))
    assert tracker.dm_partner(R2) is None
    content = tracker.add_direct(BOB, R2)
    assert content == {BOB: [R2]}
    assert tracker.add_direct(BOB, R2) is None
    assert tracker.dm_partner(R2) == BOB
    tracker.set_direct({BOB: (R1, R2)})
    assert tracker.dm_room(BOB) == R2
    assert tracker.dm_partners() == {R1: BOB, R2: BOB}


def test_summary_counts_with_lazy_loaded_members() -> None:
    tracker = RoomTracker(ME)
    tracker.room(R3).apply_summary(2, 0, (CAROL,))
    assert tracker.dm_partner(R3) == CAROL
    tracker.room(R3).apply_summary(5, None, ())
    assert tracker.dm_partner(R3) is None


def test_display_name_and_power() -> None:
    tracker = tracker_with(R1, BOB, CAROL)
    room = tracker.room(R1)
    room.apply(member(R1, BOB, name="Bob B."))
    assert room.display_name(ME) == "Bob B., @carol:x.org"
    room.apply(state(R1, "m.room.canonical_alias", {"alias": "#r:x.org"}))
    assert room.display_name(ME) == "#r:x.org"
    room.apply(state(R1, "m.room.create", {"room_version": "10"}))
    assert room.power(BOB) == 100  # no power levels yet: the creator
    room.apply(
        state(R1, "m.room.power_levels", {"users": {BOB: 100, CAROL: 50}, "users_default": 0})
    )
    assert (room.power(BOB), room.power(CAROL), room.power(ME)) == (100, 50, 0)
    v12 = tracker.room(R2)
    v12.apply(state(R2, "m.room.create", {"room_version": "12", "additional_creators": [CAROL]}))
    v12.apply(state(R2, "m.room.power_levels", {"users": {ME: 50}}))
    assert (v12.power(BOB), v12.power(CAROL), v12.power(ME)) == (100, 100, 50)


def test_state_apply_ignores_garbage() -> None:
    room = RoomTracker(ME).room(R1)
    room.apply(state(R1, "m.room.name", {"name": 5}))
    room.apply(state(R1, "m.room.power_levels", {"users": "nope", "users_default": "x"}))
    room.apply(StateChange(R1, BOB, "m.room.name", "not-empty", {"name": "ignored"}))
    assert room.name is None and room.power(BOB) == 0


def test_typing_changes() -> None:
    before = frozenset({BOB, ME})
    assert typing_changes(before, frozenset({CAROL}), ME) == ({CAROL}, {BOB})


def test_reaction_book() -> None:
    book = ReactionBook(max_targets=2)
    t1, t2, t3 = EventId("$t1"), EventId("$t2"), EventId("$t3")
    assert book.add(t1, BOB, "👍", EventId("$r1")) == {"👍"}
    assert book.add(t1, BOB, "🎉", EventId("$r2")) == {"👍", "🎉"}
    assert book.keys(t1, BOB) == {"👍": "$r1", "🎉": "$r2"}
    assert book.remove(EventId("$r1")) == (t1, BOB, {"🎉"})
    assert book.remove(EventId("$unknown")) is None
    book.add(t2, BOB, "x", EventId("$r3"))
    book.add(t3, BOB, "y", EventId("$r4"))  # t1 is the oldest: forgotten
    assert book.keys(t1, BOB) == {} and not book.is_reaction(EventId("$r2"))
    assert book.is_reaction(EventId("$r4"))
