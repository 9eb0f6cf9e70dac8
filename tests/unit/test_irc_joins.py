"""The IRC plugin's cheap paths for joins (`legacy_plugins/irc/rows.py`, the mav data of
`group.MUC`), on slidge's own tables in a SQLite file; the WHOX query on join and what
its replies teach; and detectors for the slidge
0.4.2 internals those paths replace: when one fails, slidge changed under us and the
override in `group.py` / `contact.py` must be checked against the new code."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from slidge.contact.roster import LegacyRoster
from slidge.db.meta import Base
from slidge.db.models import Contact, GatewayUser, Participant, Room
from slidge.group.room import LegacyMUC
from slixmpp import JID
from sqlalchemy.orm import Session, sessionmaker

from legacy_plugins.irc import events as ev
from legacy_plugins.irc import group, rows
from legacy_plugins.irc.channels import ChannelTracker
from legacy_plugins.irc.connection import WHOX_TOKEN, IrcConnectionState, who_query
from legacy_plugins.irc.events import Channel, ISupport, Member, Nick, Prefix
from legacy_plugins.irc.protocol import parse_line


@pytest.fixture
def orm(tmp_path: Path) -> Iterator[Session]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'slidge.sqlite'}")
    Base.metadata.create_all(engine)
    with sessionmaker(engine, expire_on_commit=False)() as session:
        yield session
    engine.dispose()


def _room(orm: Session) -> Room:
    user = GatewayUser(jid=JID("romeo@example.org"), legacy_module_data={})
    room = Room(user=user, legacy_id="#chan%irc", jid_localpart="#chan%irc")
    orm.add(room)
    orm.commit()
    return room


def _contact(orm: Session, room: Room, nick: str) -> Contact:
    contact = Contact(user_account_id=room.user_account_id, legacy_id=nick, jid_localpart=nick)
    orm.add(contact)
    orm.commit()
    return contact


def test_insert_gives_a_detached_loaded_row_with_slidges_defaults(orm: Session) -> None:
    room = _room(orm)
    contact = _contact(orm, room, "alice%irc")
    row = Participant(nickname="alice", occupant_id="alice@x", room_id=room.id)
    row.contact_id, row.resource, row.nickname_no_illegal = contact.id, "alice", "alice"
    rows.insert(orm, row, {"room": room, "contact": contact})
    orm.commit()

    assert row.id is not None and sa.inspect(row).detached
    # the flush defaults, on the object as a load would have them
    assert (row.role, row.affiliation, row.hats, row.is_user) == (
        "participant",
        "member",
        [],
        False,
    )
    assert row.room is room and row.contact is contact
    stored = orm.get(Participant, row.id, populate_existing=True)
    assert stored is not None
    assert (stored.nickname, stored.contact_id, stored.affiliation) == (
        "alice",
        contact.id,
        "member",
    )

    clash = Participant(nickname="alice", occupant_id="alice@x", room_id=room.id)
    clash.resource, clash.nickname_no_illegal = "alice", "alice"
    with pytest.raises(sa.exc.IntegrityError):  # slidge's unique constraints still hold
        rows.insert(orm, clash, {})
    orm.rollback()


def test_occupant_exists_matches_nickname_or_resource(orm: Session) -> None:
    room = _room(orm)
    row = Participant(nickname="Ali ce", occupant_id="o1", room_id=room.id)
    row.resource, row.nickname_no_illegal = "ali-ce", "Ali ce"
    rows.insert(orm, row, {})
    orm.commit()
    assert rows.occupant_exists(orm, room.id, "Ali ce")
    assert rows.occupant_exists(orm, room.id, "ali-ce")
    assert not rows.occupant_exists(orm, room.id, "bob")
    assert not rows.occupant_exists(orm, room.id + 1, "Ali ce")


def test_occupant_by_contact_finds_it_or_tells_a_nickname_clash(orm: Session) -> None:
    room = _room(orm)
    alice, bob = _contact(orm, room, "alice%irc"), _contact(orm, room, "bob%irc")
    row = Participant(nickname="alice", occupant_id="alice@x", room_id=room.id)
    row.contact_id, row.resource, row.nickname_no_illegal = alice.id, "alice", "alice"
    rows.insert(orm, row, {})
    orm.commit()

    found, clash = rows.occupant_by_contact(orm, room.id, alice.id, "alice")
    assert found is not None and found.id == row.id and not clash
    assert found.contact is not None and found.contact.id == alice.id  # loaded as slidge's
    assert rows.occupant_by_contact(orm, room.id, bob.id, "alice") == (None, True)
    assert rows.occupant_by_contact(orm, room.id, bob.id, "bob") == (None, False)


def _mav_version(data: list[tuple[str, str]]) -> str:
    """slidge's `__compute_mav_ver`, for comparing versions rather than lists."""
    affs = sorted(f"{id_}\0{aff}".encode() for id_, aff in data if aff != "none")
    return hashlib.sha256(b"\0".join(affs)).hexdigest()


def test_mav_data_is_what_slidge_reads_from_the_occupant_objects(orm: Session) -> None:
    room = _room(orm)
    occupants = [
        ("alice", "member", False, True),
        ("bob", "admin", False, True),
        ("carol", "none", False, True),  # no affiliation: not counted
        ("dave", "member", False, False),  # no contact: not counted
        ("romeo", "owner", True, False),  # the user, by JID
    ]
    for nick, affiliation, is_user, with_contact in occupants:
        contact = _contact(orm, room, f"{nick}%irc") if with_contact else None
        row = Participant(nickname=nick, occupant_id=nick, room_id=room.id, is_user=is_user)
        row.contact_id = contact.id if contact else None
        row.resource = row.nickname_no_illegal = nick
        row.affiliation = affiliation  # type: ignore[assignment]
        orm.add(row)
    orm.commit()

    found = orm.execute(group._MAV_DATA, {"room": room.id}).all()
    ours = [("romeo@example.org" if u else str(legacy_id), aff) for u, legacy_id, aff in found]
    # slidge's __get_mav_data, on ORM objects
    stored = orm.scalars(sa.select(Participant).where(Participant.room_id == room.id)).all()
    theirs = [
        ("romeo@example.org" if p.is_user else p.contact.legacy_id, p.affiliation)  # type: ignore[union-attr]
        for p in stored
        if (p.is_user or p.contact) and p.affiliation != "none"
    ]
    assert sorted(ours) == sorted(theirs)
    assert len(ours) == 3
    assert _mav_version(ours) == _mav_version(theirs)


# --- detectors -------------------------------------------------------------------------


def test_slidge_still_reads_mav_data_through_the_private_method() -> None:
    """`MUC._LegacyMUC__get_mav_data` replaces it by its mangled name."""
    assert "_LegacyMUC__get_mav_data" in LegacyMUC.__dict__
    assert "self.__get_mav_data()" in inspect.getsource(LegacyMUC.send_affiliation_change)
    body = inspect.getsource(LegacyMUC.__dict__["_LegacyMUC__get_mav_data"])
    assert "self.stored.participants" in body  # the O(occupants) ORM walk we avoid
    assert "part.contact.legacy_id" in inspect.getsource(
        LegacyMUC.__dict__["_LegacyMUC__get_part_mav_id"]
    )


def test_slidge_get_participant_by_contact_is_still_the_slow_one() -> None:
    """`MUC.get_participant_by_contact` reimplements it: same nickname clash rule, same
    occupant id, same announcement; check it again if slidge's changed."""
    source = inspect.getsource(LegacyMUC.get_participant_by_contact)
    assert "nick_available" in source and "self.__store_participant(p)" in source
    assert 'f"{nickname} ({unescape_node(c.jid.node)})"' in source
    assert "occupant_id=occupant_id or str(c.jid)" in source
    assert "p.send_last_presence(force=True, no_cache_online=True)" in source


def test_slidge_get_participant_still_matches_nickname_or_resource() -> None:
    source = inspect.getsource(LegacyMUC.get_participant)
    assert "(Participant.nickname == nickname)" in source
    assert "| (Participant.resource == nickname)" in source


def test_slidge_roster_still_queries_every_lookup() -> None:
    """`contact.Roster` keeps one object per nick; slidge builds one per lookup."""
    source = inspect.getsource(LegacyRoster.by_legacy_id)
    assert "orm.query(Contact)" in source and "self.__update_if_needed(stored)" in source
    assert "return self._contact_cls(self.session, stored=stored)" in inspect.getsource(
        LegacyRoster.from_store
    )


# --- WHOX on join: the accounts of the people already in a channel -----------------------


def test_who_query_asks_whox_only_of_a_server_that_offers_it() -> None:
    assert who_query("#c", ISupport()) == ("#c",)
    whox = ISupport().updated(["WHOX"])
    assert who_query("#c", whox) == ("#c", f"%tcuhnfar,{WHOX_TOKEN}")


def test_whox_replies_to_our_query_tell_the_account() -> None:
    state = IrcConnectionState("me", "user", "Real Name")
    lines = [
        f":srv 354 me {WHOX_TOKEN} #c ~dave h1 dave H@ dave-acct :Dave D",
        f":srv 354 me {WHOX_TOKEN} #c bob h2 bob G 0 :Bob",
        ":srv 354 me 999 #c carol h3 carol H carol :someone else's WHOX",
        f":srv 354 me {WHOX_TOKEN} #c",  # truncated: not ours to read
    ]
    events = [e for line in lines for e in state.receive(parse_line(line.encode()))]
    assert events[:2] == [
        ev.WhoEntry("#c", Prefix("dave", "~dave", "h1"), False, "Dave D", "dave-acct"),
        ev.WhoEntry("#c", Prefix("bob", "bob", "h2"), True, "Bob", ""),
    ]
    assert [type(e) for e in events[2:]] == [ev.ServerReply, ev.ServerReply]


def test_the_tracker_learns_and_forgets_accounts_from_whox() -> None:
    tracker = ChannelTracker(ISupport)
    tracker.apply(ev.Joined(Channel("#c"), Nick("me"), Prefix("me", "u", "h"), own=True))
    tracker.apply(ev.ChannelMembers(Channel("#c"), (Member(Nick("me")), Member(Nick("Dave")))))
    touched = tracker.apply(ev.WhoEntry("#c", Prefix("Dave", "d", "h"), False, "", "dacct"))
    assert touched == ("#c",) and tracker.account_of("dave") == "dacct"
    tracker.apply(ev.WhoEntry("#c", Prefix("Dave", "d", "h"), False, ""))  # plain WHO
    assert tracker.account_of("dave") == "dacct"  # says nothing of accounts
    tracker.apply(ev.WhoEntry("#c", Prefix("Dave", "d", "h"), False, "", ""))  # logged out
    assert tracker.account_of("dave") is None
