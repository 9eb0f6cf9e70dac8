"""gateway.rooms: the rooms and recent speakers that IRC and Matrix keep as objects.

The mixins sit in front of slidge's `LegacyBookmarks` / `LegacyMUC`; here they sit in
front of small stand-ins that do what the mixins call on slidge's classes and count it,
with occupant and room rows that are real slidge rows in a SQLite store (whether a row is
stored, and its loaded occupant list, come from SQLAlchemy itself). The networks' own
use is proven end to end (tests/e2e/test_irc*.py, test_matrix*.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from slidge.db.models import Participant as StoredParticipant
from slidge.db.models import Room
from slixmpp import JID
from slixmpp.exceptions import XMPPError

from gateway.rooms import KEPT_OCCUPANTS, KeptOccupants, KeptRooms, forget_occupant_list
from tests.unit.slidge_db import slidge_store


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from slidge.core import config

    monkeypatch.setattr(config, "HOME_DIR", tmp_path, raising=False)  # SlidgeStore reads it
    with slidge_store(tmp_path / "slidge.sqlite") as store:
        yield store


def _room_row(store: Any, legacy_id: str = "#a") -> Room:
    with store.session(expire_on_commit=False) as orm:
        room = orm.scalars(sa.select(Room).where(Room.legacy_id == legacy_id)).one()
        room.updated = True
        orm.commit()
        return room  # type: ignore[no-any-return]


def _occupant_rows(store: Any, room: Room, nicks: list[str]) -> list[StoredParticipant]:
    rows = []
    with store.session(expire_on_commit=False) as orm:
        for i, nick in enumerate(nicks):
            row = StoredParticipant(nickname=nick, occupant_id=f"{nick}@x", room_id=room.id)
            row.resource = row.nickname_no_illegal = nick
            row.is_user = i == 0 and nick == "romeo"
            orm.add(row)
            rows.append(row)
        orm.commit()
    return rows


class Occupant:
    """What the mixin reads of slidge's `LegacyParticipant`."""

    def __init__(self, stored: StoredParticipant, is_system: bool = False) -> None:
        self.stored, self.is_system = stored, is_system


class SlidgeRoom:
    """Stands in for `LegacyMUC`: builds occupants from rows, counts the user's reads."""

    def __init__(self, session: Any, stored: Room) -> None:
        self.session, self.stored = session, stored
        self.user_nick = "romeo"
        self.user_row: StoredParticipant | None = None
        self.user_reads = 0
        self.removed: list[Any] = []

    def participant_from_store(self, stored: StoredParticipant, contact: Any = None) -> Any:
        return Occupant(stored)

    def remove_participant(
        self, p: Any, kick: bool = False, ban: bool = False, reason: str | None = None
    ) -> None:
        self.removed.append(p)

    async def echo(self, msg: Any, legacy_msg_id: str | None = None) -> str:
        user = await self.get_user_participant()  # what slidge's echo does
        return str(user.stored.occupant_id)

    async def get_user_participant(
        self, *, fill_first: bool = False, store: bool = True, occupant_id: str | None = None
    ) -> Any:
        self.user_reads += 1  # slidge: a query, a merge and a commit
        assert self.user_row is not None
        return self.participant_from_store(self.user_row)


# To mypy, KeptOccupants and KeptRooms are slidge's LegacyMUC and LegacyBookmarks (see
# gateway/rooms.py), abstract here; at run time they are plain mixins over these
# stand-ins: hence the ignore[abstract] where the stand-ins are made.
class Muc(KeptOccupants[Any], SlidgeRoom):
    pass


NO_MESSAGE: Any = None  # the stand-in's echo never reads the message


@pytest.fixture
def muc(store: Any) -> Muc:
    room = _room_row(store)
    muc = Muc(None, room)  # type: ignore[abstract]
    muc.user_row = _occupant_rows(store, room, ["romeo"])[0]
    return muc


def test_a_kept_speaker_is_found_again_as_the_same_object(store: Any, muc: Muc) -> None:
    (alice,) = _occupant_rows(store, muc.stored, ["alice"])
    part = muc.participant_from_store(alice)
    assert muc.kept("alice") is None
    muc.keep("alice", part)
    assert muc.kept("alice") is part
    assert muc.kept("alice") is part  # still kept after being found
    assert muc.kept("bob") is None


def test_a_row_slidge_reads_again_is_no_longer_trusted(store: Any, muc: Muc) -> None:
    alice, bob = _occupant_rows(store, muc.stored, ["alice", "bob"])
    muc.keep("alice", muc.participant_from_store(alice))
    muc.keep("bob", kept_bob := muc.participant_from_store(bob))
    muc.participant_from_store(alice)  # slidge is about to change alice (a role, a kick)
    assert muc.kept("alice") is None
    assert muc.kept("bob") is kept_bob
    muc.remove_participant(kept_bob)
    assert muc.kept("bob") is None


def test_a_renamed_or_forgotten_speaker_is_read_again(store: Any, muc: Muc) -> None:
    alice, bob = _occupant_rows(store, muc.stored, ["alice", "bob"])
    muc.keep("alice", part := muc.participant_from_store(alice))
    part.stored.nickname = "alice2"
    assert muc.kept("alice") is None
    muc.keep("bob", muc.participant_from_store(bob))
    muc.forget_kept("bob")
    assert muc.kept("bob") is None


def test_only_stored_non_system_occupants_are_kept(store: Any, muc: Muc) -> None:
    (alice,) = _occupant_rows(store, muc.stored, ["alice"])
    muc.keep("system", Occupant(alice, is_system=True))
    muc.keep("new", Occupant(StoredParticipant(nickname="new", occupant_id="new@x")))
    assert muc.kept("system") is None and muc.kept("new") is None


def test_at_most_kept_occupants_the_least_recent_go_first(store: Any, muc: Muc) -> None:
    nicks = [f"n{i}" for i in range(KEPT_OCCUPANTS + 1)]
    parts = [muc.participant_from_store(row) for row in _occupant_rows(store, muc.stored, nicks)]
    for nick, part in zip(nicks[:-1], parts[:-1], strict=True):
        muc.keep(nick, part)
    assert muc.kept("n0") is parts[0]  # n0 is now the most recent, n1 the least
    muc.keep(nicks[-1], parts[-1])
    assert muc.kept("n1") is None
    assert muc.kept("n0") is parts[0] and muc.kept(nicks[-1]) is parts[-1]


def test_finding_a_speaker_unloads_its_room_rows_occupant_list(store: Any, muc: Muc) -> None:
    (alice,) = _occupant_rows(store, muc.stored, ["alice"])
    with store.session(expire_on_commit=False) as orm:
        row = orm.get(StoredParticipant, alice.id)
        assert row is not None and len(row.room.participants) == 2  # romeo, alice: loaded
    muc.keep("alice", part := muc.participant_from_store(row))
    assert "participants" not in sa.inspect(row.room).unloaded
    assert muc.kept("alice") is part
    assert "participants" in sa.inspect(row.room).unloaded


async def test_the_echo_reads_the_users_occupant_once_while_trusted(muc: Muc) -> None:
    assert await muc.echo(NO_MESSAGE) == "romeo@x"
    assert await muc.echo(NO_MESSAGE) == "romeo@x"
    assert muc.user_reads == 1
    await muc.get_user_participant()  # not an echo: slidge's way, and not the kept copy
    assert muc.user_reads == 2
    assert await muc.echo(NO_MESSAGE) == "romeo@x"
    assert muc.user_reads == 3  # slidge read the row again meanwhile: not trusted
    assert await muc.echo(NO_MESSAGE) == "romeo@x"
    assert muc.user_reads == 3
    muc.user_nick = "romeo_"  # the user's nick changed: the kept copy has the old one
    await muc.echo(NO_MESSAGE)
    assert muc.user_reads == 4


async def test_a_network_can_share_the_users_copy_with_its_speakers(store: Any, muc: Muc) -> None:
    class MatrixLike(Muc):
        def user_key(self) -> str:
            return "@romeo:example.org"

    room = MatrixLike(None, muc.stored)  # type: ignore[abstract]
    room.user_row = muc.user_row
    await room.echo(NO_MESSAGE)
    assert room.kept("@romeo:example.org") is not None  # the user speaking from elsewhere
    room.forget_kept("@romeo:example.org")  # the user's profile changed on Matrix
    await room.echo(NO_MESSAGE)
    assert room.user_reads == 2


# --- KeptRooms ---------------------------------------------------------------------------


class SlidgeBookmarks:
    """Stands in for `LegacyBookmarks`: every lookup reads the room row again."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.lookups: list[str] = []
        self.removed: list[Any] = []

    def from_store(self, stored: Room) -> Any:
        return SimpleNamespace(stored=stored, legacy_id=stored.legacy_id, archive=SimpleNamespace())

    async def by_legacy_id(self, legacy_id: str, create: bool = False) -> Any:
        self.lookups.append(legacy_id)
        return self.from_store(_room_row(self.session, legacy_id))

    async def by_jid(self, jid: JID) -> Any:
        return await SlidgeBookmarks.by_legacy_id(
            self, await self.jid_local_part_to_legacy_id(jid.node)
        )

    async def jid_local_part_to_legacy_id(self, local_part: str) -> str:
        if not local_part.startswith("#"):
            raise XMPPError("item-not-found", "not a room")
        return local_part

    async def remove(self, muc: Any, *args: Any, **kwargs: Any) -> None:
        self.removed.append(muc)


class Bookmarks(KeptRooms[Any], SlidgeBookmarks):  # type: ignore[misc]  # overloads vs stand-in
    pass


async def test_every_lookup_of_a_room_returns_one_object(store: Any) -> None:
    bookmarks = Bookmarks(store)  # type: ignore[abstract]
    muc = await bookmarks.by_legacy_id("#a")
    assert await bookmarks.by_legacy_id("#a") is muc
    assert await bookmarks.by_jid(JID("#a@irc.example.org/romeo")) is muc
    assert bookmarks.lookups == ["#a"]
    assert await bookmarks.by_legacy_id("#b") is not muc
    fresh = _room_row(store, "#a")  # slidge read the row anyway: the object takes it
    assert bookmarks.from_store(fresh) is muc and muc.stored is fresh and muc.archive.room is fresh


async def test_a_room_slidge_must_refresh_or_removed_is_looked_up_again(store: Any) -> None:
    bookmarks = Bookmarks(store)  # type: ignore[abstract]
    muc = await bookmarks.by_legacy_id("#a")
    stale = muc.stored
    stale.updated = False  # slidge fills in the room's details again
    assert await bookmarks.by_legacy_id("#a") is muc  # through slidge's from_store
    assert muc.stored is not stale and muc.stored.updated
    await bookmarks.remove(muc)
    assert bookmarks.removed == [muc]
    assert await bookmarks.by_legacy_id("#a") is not muc
    assert bookmarks.lookups == ["#a", "#a", "#a"]


async def test_an_address_that_is_no_room_goes_to_slidge(store: Any) -> None:
    bookmarks = Bookmarks(store)  # type: ignore[abstract]
    with pytest.raises(XMPPError):
        await bookmarks.by_jid(JID("alice@irc.example.org"))


def test_forget_occupant_list_unloads_only_a_loaded_list(store: Any) -> None:
    forget_occupant_list(None)
    with store.session(expire_on_commit=False) as orm:
        room = orm.scalars(sa.select(Room).where(Room.legacy_id == "#a")).one()
        assert room.participants == []
    assert "participants" not in sa.inspect(room).unloaded
    forget_occupant_list(room)
    assert "participants" in sa.inspect(room).unloaded


def test_forget_occupant_list_drops_appends_to_an_unloaded_list(store: Any) -> None:
    """A new occupant row given the room (slidge does that while filling) appends itself
    to the room's occupant list even when the list is not loaded: SQLAlchemy keeps the
    append and adds it to the list when it is loaded. Forgetting drops it too; an
    unloaded list with nothing appended is left as it is."""

    def room_with_an_append() -> tuple[Room, StoredParticipant]:
        with store.session(expire_on_commit=False) as orm:
            room = orm.scalars(sa.select(Room).where(Room.legacy_id == "#a")).one()
        assert "participants" in sa.inspect(room).unloaded
        forget_occupant_list(room)  # nothing to forget
        assert "participants" in sa.inspect(room).unloaded
        row = StoredParticipant(nickname="new", occupant_id="new@x")
        row.room = room  # its backref appends to the unloaded list
        return room, row

    def loaded_list(room: Room) -> list[StoredParticipant]:
        with store.session(expire_on_commit=False) as orm, orm.no_autoflush:
            orm.add(room)
            return list(room.participants)

    kept, appended = room_with_an_append()
    assert appended in loaded_list(kept)  # what forgetting protects from
    forgotten, row = room_with_an_append()
    forget_occupant_list(forgotten)
    assert row not in loaded_list(forgotten)


async def test_a_room_row_not_loaded_or_not_stored_is_looked_up_again(store: Any) -> None:
    bookmarks = Bookmarks(store)  # type: ignore[abstract]
    muc = await bookmarks.by_legacy_id("#a")
    sa.inspect(muc.stored)._expire_attributes(sa.inspect(muc.stored).dict, ["updated"])
    assert await bookmarks.by_legacy_id("#a") is muc  # through slidge's from_store
    assert muc.stored.__dict__.get("updated") is True
    assert await bookmarks.by_legacy_id("#a") is muc
    assert bookmarks.lookups == ["#a", "#a"]
    muc.stored = Room(legacy_id="#a", jid_localpart="#a", updated=True)  # never stored
    assert await bookmarks.by_legacy_id("#a") is muc
    assert bookmarks.lookups == ["#a", "#a", "#a"]
