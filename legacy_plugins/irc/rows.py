"""slidge's rows written and probed with SQLAlchemy Core, for the paths taken at every JOIN.

slidge 0.4.2 stores a new occupant or contact through the ORM (a merge, a flush of the
unit of work, a commit) and looks occupants up with ORM queries that eagerly load their
room and contact. With many users in a channel that runs for every JOIN every user sees.
`insert` writes one new row with one cached INSERT and leaves the object as if it had
been loaded (detached, every column set); `occupant_exists` answers "is there an
occupant with this nick", `occupant_by_contact` "is there one for this contact, or
with this nickname", and `joined_occupant` both at once for a JOIN, without building
any ORM object unless there is. All keep slidge's rules: the same column defaults, the
same match on nickname or resource. `store_occupant_list` writes a room's whole
occupant list when a client joins it, as slidge's merge of every row and the ORM's flush
did, with an INSERT per new row and one UPDATE per set of changed columns. All run on
the session's connection (in its transaction), past the ORM's execution layer: a third
of the CPU of a small query. On SQLite the statements of a JOIN go further down, to the
driver's connection itself (`fetch`, `insert`): each compiled once, its parameters typed
as SQLAlchemy types them, errors raised as SQLAlchemy raises them; SQLAlchemy's execution
of a compiled statement (cache lookup, parameter processing, execution context, result
object) was two thirds of these statements' CPU, sqlite3 the other third.

Nothing here is queued for later: each write is committed by its caller before the
presence or message it is for goes out, as slidge's were, so a SIGKILL loses nothing
slidge would have kept (and slidge deletes every occupant row when it starts).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import sqlalchemy as sa
from slidge.db.models import Participant, Room
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

__all__ = [
    "fetch",
    "insert",
    "joined_occupant",
    "occupant_by_contact",
    "occupant_exists",
    "store_occupant_list",
]


@cache
def _insert_statement(table: sa.Table) -> sa.Insert:
    return sa.insert(table)


def _column_values(row: Any, table: sa.Table) -> dict[str, Any]:
    """Every column of `row` but its primary key; an unset one takes the column's
    default (on the object too), as a flush would give it."""
    values: dict[str, Any] = {}
    for column in table.columns:
        if column.primary_key:
            continue
        if column.key in row.__dict__:
            value = row.__dict__[column.key]
        else:
            default: Any = column.default
            if default is None:
                value = None
            else:
                value = default.arg(None) if default.is_callable else default.arg
            setattr(row, column.key, value)
        values[column.key] = value
    return values


@dataclass(frozen=True, slots=True)
class _Raw:
    """A statement compiled for SQLite's driver: its SQL, the name of each parameter in
    order, and what SQLAlchemy does to each value on the way (its type's processing, or
    a constant of the statement: a LIMIT's)."""

    sql: str
    names: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]
    constants: Mapping[str, Any]

    def run(self, connection: sa.Connection, params: Mapping[str, Any]) -> Any:
        """Execute on `connection`'s driver connection, in its transaction; the sqlite3
        cursor. A driver error is raised as SQLAlchemy's (an `IntegrityError`...)."""
        constants = self.constants
        args = []
        for name, process in zip(self.names, self.processors, strict=True):
            value = params[name] if name in params else constants[name]
            args.append(value if process is None else process(value))
        dbapi: Any = connection.connection.dbapi_connection
        try:
            return dbapi.execute(self.sql, args)
        except connection.dialect.loaded_dbapi.Error as error:
            raise sa.exc.DBAPIError.instance(
                self.sql, args, error, connection.dialect.loaded_dbapi.Error
            ) from error


@cache
def _raw(
    statement: sa.Select[*tuple[Any, ...]] | sa.Insert,
    dialect: sa.Dialect,
    keys: tuple[str, ...] | None = None,
) -> _Raw | None:
    """`statement` (with bind parameters for columns `keys`: an INSERT's) compiled for
    the driver, if it is SQLite's and the statement needs nothing more than typed
    parameters: no list parameter (IN), no result value SQLAlchemy would convert."""
    if dialect.name != "sqlite" or dialect.paramstyle != "qmark":
        return None
    compiled: Any = statement.compile(dialect=dialect, column_keys=keys)
    names = tuple(compiled.positiontup or ())
    binds = [compiled.binds[name] for name in names]
    if any(bind.expanding or bind.callable is not None for bind in binds):
        return None
    for column in compiled._result_columns:  # (name, key, objects, type)
        if column[3].dialect_impl(dialect).result_processor(dialect, None) is not None:
            return None
    return _Raw(
        sql=compiled.string,
        names=names,
        processors=tuple(bind.type.dialect_impl(dialect).bind_processor(dialect) for bind in binds),
        constants={
            name: bind.value
            for name, bind in zip(names, binds, strict=True)
            if not bind.required and name not in (keys or ())
        },
    )


def fetch(
    orm: Session, statement: sa.Select[*tuple[Any, ...]], params: Mapping[str, Any]
) -> list[Sequence[Any]]:
    """The rows of `statement` with `params`, run in `orm`'s transaction: on SQLite by
    the driver (`_raw`), else by SQLAlchemy's connection."""
    connection = orm.connection()
    raw = _raw(statement, connection.dialect)
    if raw is None:
        return list(connection.execute(statement, params).all())
    rows: list[Sequence[Any]] = raw.run(connection, params).fetchall()
    return rows


def insert(orm: Session, row: Any, loaded: dict[str, Any]) -> None:
    """INSERT the new (transient) ORM object `row` in `orm`'s transaction (the caller
    commits), give it its primary key and make it a detached, loaded object; `loaded`
    are the values its eagerly loaded relationships take (the objects slidge's loads
    would have put there: without them, reading one on a detached row raises)."""
    table: sa.Table = row.__table__
    values = _column_values(row, table)
    connection = orm.connection()
    statement = _insert_statement(table)
    raw = _raw(statement, connection.dialect, tuple(values))
    if raw is None:
        result: Any = connection.execute(statement, values)
        row.id = result.inserted_primary_key[0]
    else:
        row.id = raw.run(connection, values).lastrowid
    make_transient_to_detached(row)
    for key, value in loaded.items():
        set_committed_value(row, key, value)


_OCCUPANT = (
    sa.select(Participant.id)
    .where(
        Participant.room_id == sa.bindparam("room"),
        (Participant.nickname == sa.bindparam("nick"))
        | (Participant.resource == sa.bindparam("nick")),
    )
    .limit(1)
)


_BY_CONTACT_OR_NICK = sa.select(Participant.id, Participant.contact_id).where(
    Participant.room_id == sa.bindparam("room"),
    (Participant.contact_id == sa.bindparam("contact"))
    | (Participant.nickname == sa.bindparam("nick")),
)


def occupant_by_contact(
    orm: Session, room_id: int, contact_id: int, nickname: str
) -> tuple[Participant | None, bool]:
    """The occupant of room `room_id` for contact `contact_id` (loaded as slidge loads
    one), and whether another occupant has `nickname`; one small query when neither."""
    found = fetch(
        orm, _BY_CONTACT_OR_NICK, {"room": room_id, "contact": contact_id, "nick": nickname}
    )
    mine = next((pk for pk, contact in found if contact == contact_id), None)
    clash = any(contact != contact_id for _, contact in found)
    if mine is None:
        return None, clash
    return orm.get(Participant, mine), clash


def occupant_exists(orm: Session, room_id: int, nick: str) -> bool:
    """Whether room `room_id` has an occupant whose nickname or resource is `nick`
    (what `LegacyMUC.get_participant` looks for)."""
    return bool(fetch(orm, _OCCUPANT, {"room": room_id, "nick": nick}))


_JOINED = sa.select(
    Participant.id, Participant.contact_id, Participant.nickname, Participant.resource
).where(
    Participant.room_id == sa.bindparam("room"),
    (Participant.nickname == sa.bindparam("nick"))
    | (Participant.resource == sa.bindparam("nick"))
    | (Participant.contact_id == sa.bindparam("contact"))
    | (Participant.nickname == sa.bindparam("nickname")),
)


def joined_occupant(
    orm: Session, room_id: int, nick: str, contact_id: int | None, nickname: str
) -> tuple[bool, Participant | None, bool]:
    """For IRC nick `nick` (contact `contact_id`, occupant nickname `nickname`) joining
    room `room_id`, in one query: whether an occupant has `nick` as nickname or resource
    (what `occupant_exists` answers), the occupant of the contact (loaded as slidge loads
    one; None when the first answer is yes, nobody asks then) and whether another
    occupant has `nickname` (`occupant_by_contact`'s answers). `contact_id` None: a
    contact not stored yet, which no occupant has."""
    query = {"room": room_id, "nick": nick, "contact": contact_id, "nickname": nickname}
    found = fetch(orm, _JOINED, query)
    if any(nick in (name, resource) for _, _, name, resource in found):
        return True, None, False
    mine = next((pk for pk, contact, _, _ in found if contact == contact_id), None)
    if contact_id is None:  # no occupant is a contact not stored yet
        mine = None
    clash = any(
        (contact is None or contact != contact_id) and name == nickname
        for _, contact, name, _ in found
    )
    return False, None if mine is None else orm.get(Participant, mine), clash


@cache
def _update_statement(table: sa.Table, keys: tuple[str, ...]) -> sa.Update:
    """UPDATE `keys` of one row of `table`, by primary key `pk`, values `v_<key>`."""
    values = {key: sa.bindparam(f"v_{key}", type_=table.c[key].type) for key in keys}
    return sa.update(table).where(table.c.id == sa.bindparam("pk")).values(values)


def _changes(row: Any) -> dict[str, Any]:
    """The columns of loaded `row` set to a new value since it was loaded or stored.
    Only an attribute set since has history (its value then, in `committed_state`):
    the others are not asked (a row of the fill has 13 columns and none or one set)."""
    state: Any = sa.inspect(row)
    if not state.committed_state:
        return {}
    columns = row.__table__.columns
    changes: dict[str, Any] = {}
    for key in list(state.committed_state):
        if key in columns and not columns[key].primary_key:
            if added := state.attrs[key].history.added:
                changes[key] = added[0]
    return changes


def store_occupant_list(orm: Session, room: Room, occupants: list[Participant]) -> bool:
    """In `orm`'s transaction (the caller commits): the filled occupant list of `room`,
    each new (transient) row INSERTed as `insert` does and each loaded row UPDATEd in
    the columns set since it was loaded, and the room's own changed columns with
    `participants_filled` set, as slidge's merge of the room and of every row then the
    ORM's flush wrote them. The rows are left stored (detached, as if loaded). False,
    with nothing written, when a row is not this room's or its contact has no row yet
    (slidge's way then)."""
    new: list[tuple[Participant, int | None]] = []
    for row in occupants:
        if sa.inspect(row).key is not None:
            continue
        values = row.__dict__
        room_id = values.get("room_id")
        if room_id is None and values.get("room") is not None:
            room_id = values["room"].id
        contact_id = values.get("contact_id")
        if contact_id is None and values.get("contact") is not None:
            contact_id = values["contact"].id
            if contact_id is None:
                return False
        if room_id is None or room_id != room.id:
            return False
        new.append((row, contact_id))
    for row, contact_id in new:
        row.room_id, row.contact_id = room.id, contact_id
        insert(orm, row, {})
    batches: dict[tuple[sa.Table, tuple[str, ...]], list[dict[str, Any]]] = {}
    changed: list[tuple[Any, dict[str, Any]]] = []
    room.participants_filled = True
    stored: Any
    for stored in [room, *occupants]:  # the new ones are stored: nothing changed since
        if changes := _changes(stored):
            batch = batches.setdefault((stored.__table__, tuple(sorted(changes))), [])
            batch.append({"pk": stored.id, **{f"v_{k}": v for k, v in changes.items()}})
            changed.append((stored, changes))
    connection = orm.connection()
    for (table, keys), params in batches.items():
        connection.execute(_update_statement(table, keys), params)
    for stored, changes in changed:
        for name, value in changes.items():
            set_committed_value(stored, name, value)
    return True
