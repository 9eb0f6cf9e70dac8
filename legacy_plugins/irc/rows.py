"""slidge's rows written and probed with SQLAlchemy Core, for the paths taken at every JOIN.

slidge 0.4.2 stores a new occupant or contact through the ORM (a merge, a flush of the
unit of work, a commit) and looks occupants up with ORM queries that eagerly load their
room and contact. With many users in a channel that runs for every JOIN every user sees.
`insert` writes one new row with one cached INSERT and leaves the object as if it had
been loaded (detached, every column set); `occupant_exists` answers "is there an
occupant with this nick", and `occupant_by_contact` "is there one for this contact, or
with this nickname", without building any ORM object unless there is. Both keep slidge's rules: the
same column defaults, the same match on nickname or resource.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import sqlalchemy as sa
from slidge.db.models import Participant
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

__all__ = ["insert", "occupant_by_contact", "occupant_exists"]


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


def insert(orm: Session, row: Any, loaded: dict[str, Any]) -> None:
    """INSERT the new (transient) ORM object `row` in `orm`'s transaction (the caller
    commits), give it its primary key and make it a detached, loaded object; `loaded`
    are the values its eagerly loaded relationships take (the objects slidge's loads
    would have put there: without them, reading one on a detached row raises)."""
    table: sa.Table = row.__table__
    values = _column_values(row, table)
    result: Any = orm.execute(_insert_statement(table), values)
    row.id = result.inserted_primary_key[0]
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
    found = orm.execute(
        _BY_CONTACT_OR_NICK, {"room": room_id, "contact": contact_id, "nick": nickname}
    ).all()
    mine = next((pk for pk, contact in found if contact == contact_id), None)
    clash = any(contact != contact_id for _, contact in found)
    if mine is None:
        return None, clash
    return orm.get(Participant, mine), clash


def occupant_exists(orm: Session, room_id: int, nick: str) -> bool:
    """Whether room `room_id` has an occupant whose nickname or resource is `nick`
    (what `LegacyMUC.get_participant` looks for)."""
    return orm.execute(_OCCUPANT, {"room": room_id, "nick": nick}).first() is not None
