"""The IRC plugin's cheap paths for joins (`legacy_plugins/irc/rows.py`, the mav data of
`group.MUC`), on slidge's own tables in a SQLite file; the WHOX query on join and what
its replies teach; and detectors for the slidge
0.4.2 internals those paths replace: when one fails, slidge changed under us and the
override in `group.py` / `contact.py` must be checked against the new code."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from slidge.contact.roster import LegacyRoster
from slidge.db.meta import Base
from slidge.db.models import Contact, GatewayUser, Participant, Room
from slidge.group.room import LegacyMUC
from slidge.util.types import Hat
from slixmpp import JID
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.state import AttributeState

from legacy_plugins.irc import events as ev
from legacy_plugins.irc import rows
from legacy_plugins.irc.channels import ChannelTracker
from legacy_plugins.irc.connection import WHOX_TOKEN, IrcConnectionState, who_query
from legacy_plugins.irc.contact import _ANY_OF, _THAT_ONE, _contact_legacy_id
from legacy_plugins.irc.events import Channel, ISupport, Member, Nick, Prefix
from legacy_plugins.irc.occupants import _MAV_DATA
from legacy_plugins.irc.protocol import parse_line
from legacy_plugins.irc.translate import AddressMapping


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


def _occupant(
    orm: Session, room: Room, contact: Contact, nickname: str, resource: str | None = None
) -> Participant:
    row = Participant(nickname=nickname, occupant_id=f"{nickname}@x", room_id=room.id)
    row.contact_id, row.resource = contact.id, resource or nickname
    row.nickname_no_illegal = nickname
    rows.insert(orm, row, {})
    orm.commit()
    return row


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
    row = _occupant(orm, room, alice, "alice")

    found, clash = rows.occupant_by_contact(orm, room.id, alice.id, "alice")
    assert found is not None and found.id == row.id and not clash
    assert found.contact is not None and found.contact.id == alice.id  # loaded as slidge's
    assert rows.occupant_by_contact(orm, room.id, bob.id, "alice") == (None, True)
    assert rows.occupant_by_contact(orm, room.id, bob.id, "bob") == (None, False)


def test_joined_occupant_answers_both_lookups_of_a_join_in_one_query(orm: Session) -> None:
    room = _room(orm)
    alice, bob, carol = (_contact(orm, room, f"{n}%irc") for n in ("alice", "bob", "carol"))
    row = _occupant(orm, room, alice, "alice", "ali-ce")

    # by nickname or resource first, as `occupant_exists` (then nobody asks further)
    assert rows.joined_occupant(orm, room.id, "alice", bob.id, "bob") == (True, None, False)
    assert rows.joined_occupant(orm, room.id, "ali-ce", bob.id, "bob") == (True, None, False)
    # else by contact, loaded as slidge's, or a clash on the nickname
    by_nick, found, clash = rows.joined_occupant(orm, room.id, "alice2", alice.id, "alice2")
    assert not by_nick and found is not None and found.id == row.id and not clash
    assert found.contact is not None and found.contact.id == alice.id
    for nick, contact, nickname in (("al", bob.id, "alice"), ("bob", bob.id, "bob")):
        assert rows.joined_occupant(orm, room.id, nick, contact, nickname) == (
            False,
            None,
            rows.occupant_by_contact(orm, room.id, contact, nickname)[1],
        )
    assert rows.joined_occupant(orm, room.id, "al", bob.id, "alice")[2]
    assert rows.joined_occupant(orm, room.id + 1, "alice", carol.id, "alice") == (
        False,
        None,
        False,
    )


def test_joined_occupant_of_a_contact_not_stored_yet_is_nobodys(orm: Session) -> None:
    # a JOIN's contact and occupant stored together: the lookup runs before either
    room = _room(orm)
    alice = _contact(orm, room, "alice%irc")
    _occupant(orm, room, alice, "alice")
    nobody = Participant(nickname="dave", occupant_id="dave@x", room_id=room.id)
    nobody.contact_id, nobody.resource, nobody.nickname_no_illegal = None, "dave", "dave"
    rows.insert(orm, nobody, {})
    orm.commit()

    # never an occupant without a contact taken for it; those still clash on the name
    assert rows.joined_occupant(orm, room.id, "dave2", None, "dave") == (False, None, True)
    assert rows.joined_occupant(orm, room.id, "al", None, "alice") == (False, None, True)
    assert rows.joined_occupant(orm, room.id, "erin", None, "erin") == (False, None, False)
    assert rows.joined_occupant(orm, room.id, "dave", None, "dave") == (True, None, False)


def _driver_row(orm: Session, table: str, pk: int) -> dict[str, Any]:
    """Row `pk` of `table` as SQLite stores it (no SQLAlchemy type on the way back)."""
    found = orm.connection().exec_driver_sql(f"SELECT * FROM {table} WHERE id = ?", (pk,))
    return dict(found.mappings().one())


def test_on_sqlite_a_joins_statements_run_on_the_driver_as_sqlalchemy_types_them(
    orm: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    room = _room(orm)
    alice = _contact(orm, room, "alice%irc")
    executed: list[str] = []
    sa.event.listen(orm.get_bind(), "before_cursor_execute", lambda *a: executed.append(a[2]))

    def occupant(nick: str) -> Participant:
        row = Participant(nickname=nick, occupant_id=f"{nick}@x", room_id=room.id)
        row.resource, row.nickname_no_illegal, row.is_user = nick, nick, True
        row.role, row.hats = "moderator", [Hat("acct", "Account: é", 0.5)]
        return row

    by_driver = occupant("a")
    rows.insert(orm, by_driver, {})
    bob = Contact(user_account_id=room.user_account_id, legacy_id="bob", jid_localpart="bob")
    rows.insert(orm, bob, {"avatar": None})
    assert rows.joined_occupant(orm, room.id, "a", alice.id, "al") == (True, None, False)
    assert rows.occupant_exists(orm, room.id, "a")
    assert rows.occupant_by_contact(orm, room.id, alice.id, "a") == (None, True)
    assert rows.fetch(orm, _THAT_ONE, {"user": room.user_account_id, "id": "bob"}) == [(bob.id,)]
    assert executed == []  # none through SQLAlchemy's execution
    orm.commit()

    # the same values through SQLAlchemy (no driver path): stored alike
    monkeypatch.setattr(rows, "_raw", lambda *_: None)
    by_sqlalchemy = occupant("b")
    rows.insert(orm, by_sqlalchemy, {})
    carol = Contact(user_account_id=room.user_account_id, legacy_id="carol", jid_localpart="c")
    rows.insert(orm, carol, {"avatar": None})
    orm.commit()
    assert len(executed) == 2
    ours, theirs = (_driver_row(orm, "participant", r.id) for r in (by_driver, by_sqlalchemy))
    differ = {"id", "occupant_id", "resource", "nickname", "nickname_no_illegal"}
    assert {k: v for k, v in ours.items() if k not in differ} == {
        k: v for k, v in theirs.items() if k not in differ
    }
    assert ours["hats"] == theirs["hats"] and ours["is_user"] == 1
    ours, theirs = (_driver_row(orm, "contact", c.id) for c in (bob, carol))
    assert {k: v for k, v in ours.items() if k not in {"id", "legacy_id", "jid_localpart"}} == {
        k: v for k, v in theirs.items() if k not in {"id", "legacy_id", "jid_localpart"}
    }


def test_the_driver_path_is_for_sqlite_and_typed_parameters_only() -> None:
    table: Any = Participant.__table__
    keys = tuple(c.key for c in table.columns if not c.primary_key)
    postgres: sa.Dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    lite: sa.Dialect = sqlite.dialect()
    assert rows._raw(rows._JOINED, postgres) is None
    assert rows._raw(rows._insert_statement(table), postgres, keys) is None
    assert rows._raw(_ANY_OF, lite) is None  # a list parameter (IN)
    raw = rows._raw(rows._OCCUPANT, lite)
    assert raw is not None and raw.names[:3] == ("room", "nick", "nick")
    assert dict(raw.constants) == {"param_1": 1, "param_2": 0}  # its LIMIT


def test_store_occupant_list_writes_what_slidges_merge_and_flush_wrote(orm: Session) -> None:
    room = _room(orm)
    alice, bob = _contact(orm, room, "alice%irc"), _contact(orm, room, "bob%irc")
    known = _occupant(orm, room, alice, "alice")
    orm.expunge_all()  # both rows detached and loaded, as the fill has them
    known.affiliation, known.hats = "none", [Hat("acct", "Account: alice", None)]
    new = Participant(room=room, nickname="bob", occupant_id="bob@x")  # slidge's way
    new.contact, new.resource, new.nickname_no_illegal = bob, "bob", "bob"
    new.role = "moderator"

    assert rows.store_occupant_list(orm, room, [known, new])
    orm.commit()

    assert new.id is not None and room.participants_filled
    assert not rows._changes(known) and not rows._changes(room)  # left as stored
    orm.expunge_all()
    stored = {p.nickname: p for p in orm.scalars(sa.select(Participant))}
    assert set(stored) == {"alice", "bob"}
    assert (stored["alice"].affiliation, stored["alice"].role) == ("none", "participant")
    # stored as JSON: read back as lists
    assert [list(hat) for hat in stored["alice"].hats] == [["acct", "Account: alice", None]]
    assert (stored["bob"].role, stored["bob"].affiliation) == ("moderator", "member")
    assert (stored["bob"].room_id, stored["bob"].contact_id) == (room.id, bob.id)
    filled = orm.scalar(sa.select(Room.participants_filled).where(Room.id == room.id))
    assert filled is True


def test_changes_asks_the_history_of_the_columns_set_only(
    orm: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    room = _room(orm)
    row = _occupant(orm, room, _contact(orm, room, "alice%irc"), "alice")
    asked: list[str] = []
    history = AttributeState.history

    def counted(attr: AttributeState) -> Any:
        asked.append(attr.key)
        return history.fget(attr)  # type: ignore[attr-defined]

    monkeypatch.setattr(AttributeState, "history", property(counted))
    assert rows._changes(row) == {} and asked == []  # 13 columns, none set: none asked
    row.role, row.affiliation = "moderator", "member"  # the latter as stored: no change
    assert rows._changes(row) == {"role": "moderator"}
    assert sorted(asked) == ["affiliation", "role"]


def test_store_occupant_list_leaves_a_row_it_cannot_store_to_slidge(orm: Session) -> None:
    room = _room(orm)
    orm.expunge_all()
    stranger = Contact(user_account_id=room.user_account_id, legacy_id="x", jid_localpart="x")
    row = Participant(room=room, nickname="x", occupant_id="x@x")
    row.contact, row.resource, row.nickname_no_illegal = stranger, "x", "x"
    assert not rows.store_occupant_list(orm, room, [row])  # its contact has no row yet
    orm.commit()
    assert orm.scalar(sa.select(sa.func.count()).select_from(Participant)) == 0
    assert not orm.scalar(sa.select(Room.participants_filled))


@pytest.mark.parametrize(
    ("username", "expected"),
    [
        ("Alice%irc.example.org", ("alice%irc.example.org", "")),
        ("irc.example.org", ("irc.example.org", "")),  # the server's contact
        ("#chan%irc.example.org", (None, "#chan is a channel: join it as a group chat")),
        ("a b%irc", (None, "invalid IRC nick 'a b'")),
    ],
)
def test_a_jid_username_is_a_contacts_legacy_id_or_why_not_parsed_once(
    username: str, expected: tuple[str | None, str]
) -> None:
    # slidge asks for the sender of every presence it sends, an occupant's room JID too
    mapping = AddressMapping()
    _contact_legacy_id.cache_clear()
    assert _contact_legacy_id(mapping, username) == expected
    assert _contact_legacy_id(AddressMapping(), username) == expected
    assert _contact_legacy_id.cache_info().hits == 1


def _mav_version(data: Sequence[tuple[str, str]]) -> str:
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

    found = orm.execute(_MAV_DATA, {"room": room.id}).all()
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


def test_slidge_still_fills_the_occupant_list_by_merging_every_row() -> None:
    """`MUC._LegacyMUC__fill_participants` reimplements it: the same rows (each resource
    once, the user's occupant added or flagged), stored by `rows.store_occupant_list`."""
    source = inspect.getsource(LegacyMUC.__dict__["_LegacyMUC__fill_participants"])
    for line in (
        "async for participant in self.fill_participants():",
        "if participant.stored.resource in resources:",
        "participant = await self.get_user_participant()",
        "p.is_user = True",
        'orm.refresh(self.stored, ["participants"])',
        "orm.merge(part)",
        "self.stored.participants_filled = True",
    ):
        assert line in source, line
    assert "self.__fill_participants()" in inspect.getsource(LegacyMUC.join)


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


class _Folding:
    """What `accounts._forget` uses of a connection: its case folding."""

    def fold(self, name: str) -> str:
        return name.lower()


def test_accounts_forget_a_room_on_our_join_a_nick_when_it_goes_and_nothing_else() -> None:
    from legacy_plugins.irc import accounts

    client: Any = _Folding()
    mask = Prefix.parse("dave!d@host")
    cases: list[tuple[ev.Event, dict[str, dict[str, str | None]]]] = [
        (  # someone else's join, a message: what is shown stays
            ev.Joined(Channel("#a"), Nick("Dave"), mask),
            {"#a": {"bob": "b", "carol": None}, "#b": {"bob": "b"}},
        ),
        (
            ev.MessageReceived(mask, "#a", "hi", "privmsg", Channel("#a")),
            {"#a": {"bob": "b", "carol": None}, "#b": {"bob": "b"}},
        ),
        (ev.Joined(Channel("#A"), Nick("me"), mask, own=True), {"#b": {"bob": "b"}}),
        (ev.Parted(Channel("#b"), Nick("me"), "", own=True), {"#a": {"bob": "b", "carol": None}}),
        (ev.Quit(Nick("BOB"), ""), {"#a": {"carol": None}, "#b": {}}),
        (ev.Parted(Channel("#a"), Nick("bob"), ""), {"#a": {"carol": None}, "#b": {}}),
        (ev.NickChanged(Nick("Carol"), Nick("c2")), {"#a": {"bob": "b"}, "#b": {"bob": "b"}}),
    ]
    for event, expected in cases:
        accounts._SHOWN[client] = {"#a": {"bob": "b", "carol": None}, "#b": {"bob": "b"}}
        accounts._forget(client, event)
        assert accounts._SHOWN[client] == expected, event
