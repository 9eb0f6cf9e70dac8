"""Rooms and their recent speakers kept as objects across slidge 0.4.2's lookups.

slidge 0.4.2 builds a new room object from an SQL query every time it looks a room up
(about a third of the CPU of a message in a busy room), and a new occupant object, read,
merged and committed, for every message shown in a room and for every message the user
sends (its echo). Networks with rooms keep them instead, all the same way, by mixing
these in before slidge's classes (``class Bookmarks(KeptRooms[MUC], LegacyBookmarks[MUC])``,
``class MUC(KeptOccupants[Participant], LegacyMUC[Participant])``):

- :class:`KeptRooms`: every lookup of a room, slidge's own included, returns the same
  room object for the session's lifetime; when slidge reads the room from the database
  anyway (``from_store``), that object takes the fresh row.
- :class:`KeptOccupants`: the room's recent speakers, each under the network's name for
  it (an IRC nick, a Matrix user ID), found again without SQL, and the user's own
  occupant for slidge's echo of what the user sent (``echo``).

A kept occupant is only as fresh as its last read, so it only serves to show an event.
Whatever changes an occupant (a role, a nick, a kick) goes through slidge's
``participant_from_store``, which stops trusting the kept copy until a fresh one is kept.
The mixins are plain classes, not subclasses of slidge's: slidge allows one subclass of
each of its classes (``SubclassableOnce``), the plugin's.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

import sqlalchemy as sa
from slixmpp.exceptions import XMPPError
from sqlalchemy.orm.attributes import instance_state

if TYPE_CHECKING:
    from slidge.contact import LegacyContact
    from slidge.db.models import Participant as StoredParticipant
    from slidge.db.models import Room
    from slidge.group import LegacyBookmarks, LegacyMUC, LegacyParticipant
    from slixmpp import JID, Message

    _BookmarksBase = LegacyBookmarks
    _MucBase = LegacyMUC
else:  # at run time plain generic mixins, placed before slidge's class by the plugin
    _BookmarksBase = _MucBase = Generic

__all__ = ["KEPT_OCCUPANTS", "KeptOccupants", "KeptRooms", "forget_occupant_list"]

MucT = TypeVar("MucT", bound="LegacyMUC[Any]")
PartT = TypeVar("PartT", bound="LegacyParticipant[Any]")

KEPT_OCCUPANTS = 100
"""Occupants per room found without SQL (the recent speakers, the user's included)."""
_OCCUPANT_LIST = "participants"
"""slidge's ``Room.participants``, the room row's occupant list."""
_ECHOING: ContextVar[bool] = ContextVar("echoing", default=False)
"""Set while `KeptOccupants.echo` runs, in its task only."""


def forget_occupant_list(room: Room | None) -> None:
    """Unload a kept room row's occupant list (``Room.participants``), so the next reader
    loads it from the database. A stale list is dangerous, not only wrong: merging a
    room row (slidge commits rooms that way) makes the rows missing from it orphans, and
    its delete-orphan cascade deletes the occupants who joined since."""
    if room is None:
        return
    state: Any = instance_state(room)
    pending = state.__dict__.get("_pending_mutations")
    if (
        _OCCUPANT_LIST not in state.dict
        and _OCCUPANT_LIST not in state.committed_state
        and not (pending and _OCCUPANT_LIST in pending)
    ):
        return  # nothing loaded nor appended: nothing to forget (the common case)
    # What Session.expire(room, ["participants"]) does, for a row in no session: the
    # loaded list goes, and so do appends slidge made to it (each new occupant's row
    # carries its room_id: the list is not what stores them).
    state._expire_attributes(state.dict, [_OCCUPANT_LIST])


class KeptRooms(_BookmarksBase[MucT]):
    """Mixin for the plugin's bookmarks: one room object per room for the session."""

    def __init__(self, session: Any) -> None:
        super().__init__(session)
        self._rooms: dict[str, MucT] = {}

    def from_store(self, stored: Room) -> MucT:
        muc = self._rooms.get(stored.legacy_id)
        if muc is None:
            return super().from_store(stored)
        muc.stored = muc.archive.room = stored
        return muc

    def _kept_room(self, legacy_id: str | None) -> MucT | None:
        muc = self._rooms.get(legacy_id) if legacy_id is not None else None
        if muc is None:
            return None
        stored = muc.stored
        # Not loaded or not set (what `InstanceState.unloaded` would say, without
        # building the set of every column), or not stored: slidge refreshes it, or
        # fills in its details again.
        if not stored.__dict__.get("updated") or instance_state(stored).key is None:
            return None
        forget_occupant_list(stored)
        return muc

    def _keep_room(self, muc: MucT | None) -> None:
        if muc is not None and muc.stored.id is not None:
            self._rooms[muc.legacy_id] = muc

    async def known_legacy_id(self, local_part: str) -> str | None:
        """The legacy id of the room at JID local part `local_part`, if it can be told
        without asking the network; None lets slidge resolve it (and raise)."""
        try:
            return await self.jid_local_part_to_legacy_id(local_part)
        except XMPPError:
            return None

    @overload
    async def by_legacy_id(self, legacy_id: str) -> MucT: ...

    @overload
    async def by_legacy_id(self, legacy_id: str, create: Literal[False]) -> MucT | None: ...

    @overload
    async def by_legacy_id(self, legacy_id: str, create: Literal[True]) -> MucT: ...

    async def by_legacy_id(self, legacy_id: str, create: bool = False) -> MucT | None:
        muc = self._kept_room(legacy_id)
        if muc is None:
            base: Any = super()
            muc = await base.by_legacy_id(legacy_id, create)
            self._keep_room(muc)
        return muc

    async def by_jid(self, jid: JID) -> MucT:
        """(Kept too: the user's join goes through here, and a second object for the
        room would miss the resources the join adds.)"""
        muc = self._kept_room(await self.known_legacy_id(jid.node))
        if muc is None:
            muc = await super().by_jid(jid)
            self._keep_room(muc)
        return muc

    async def remove(self, muc: Any, *args: Any, **kwargs: Any) -> None:
        self._rooms.pop(muc.legacy_id, None)
        await super().remove(muc, *args, **kwargs)


class KeptOccupants(_MucBase[PartT]):
    """Mixin for the plugin's room: its recent speakers, found again without SQL."""

    USER_KEY = "\0user"
    """The key of the user's own occupant among the kept ones (see `user_key`)."""

    def __init__(self, session: Any, stored: Room) -> None:
        super().__init__(session, stored)
        self._kept: dict[str, tuple[PartT, int, str]] = {}
        """key → (kept occupant, its row id, its nickname then), least recent first."""
        self._trusted: set[int] = set()
        """Row ids of the kept occupants slidge has not read again since."""

    def user_key(self) -> str:
        """The key the user's own occupant is kept under: a network whose events name
        the user (Matrix: the user's ID) overrides it to share the one copy."""
        return self.USER_KEY

    def kept(self, key: str) -> PartT | None:
        """The occupant kept for `key` (see `keep`), or None: not kept, or stale (read
        again by slidge or renamed since)."""
        found = self._kept.pop(key, None)
        if found is None:
            return None
        part, row, nickname = found
        if row not in self._trusted or part.stored.nickname != nickname:
            return None
        self._kept[key] = found  # the most recent now
        forget_occupant_list(part.stored.__dict__.get("room"))
        return part

    def keep(self, key: str, part: PartT) -> None:
        """Keep `part`, a stored occupant, for `key`'s next event to show (only that:
        what changes an occupant reads it again); at most `KEPT_OCCUPANTS`. Not an
        occupant slidge has yet to store (while it fills the occupant list it stores
        copies, not these objects)."""
        state: Any = sa.inspect(part.stored)
        if part.is_system or not state.has_identity:
            return
        self._kept[key] = (part, part.stored.id, part.stored.nickname)
        self._trusted.add(part.stored.id)
        while len(self._kept) > KEPT_OCCUPANTS:
            _, row, _ = self._kept.pop(next(iter(self._kept)))
            self._trusted.discard(row)

    def forget_kept(self, key: str) -> None:
        """`key`'s membership or profile changed: read the occupant again next time."""
        found = self._kept.pop(key, None)
        if found is not None:
            self._trusted.discard(found[1])

    def participant_from_store(
        self, stored: StoredParticipant, contact: LegacyContact | None = None
    ) -> PartT:
        """slidge builds occupants from rows here, for whatever it is about to do with
        one (a role, a nick, a kick): from then on the kept copy is not trusted, the next
        event reads the row again."""
        self._trusted.discard(stored.id)
        return super().participant_from_store(stored, contact)

    def remove_participant(
        self,
        p: PartT,
        kick: bool = False,
        ban: bool = False,
        reason: str | None = None,
    ) -> None:
        super().remove_participant(p, kick, ban, reason)
        self._trusted.discard(p.stored.id)

    async def echo(self, msg: Message, legacy_msg_id: str | None = None) -> str:
        """slidge's echo of what the user sent, which reads the user's occupant only for
        its occupant id and the archive's role and affiliation. slidge 0.4.2 looks it up
        and stores it again (a read, a merge and a commit) for every message; here the
        user's kept occupant stands in while trusted."""
        token = _ECHOING.set(True)
        try:
            return await super().echo(msg, legacy_msg_id)
        finally:
            _ECHOING.reset(token)

    async def get_user_participant(
        self, *, fill_first: bool = False, store: bool = True, occupant_id: str | None = None
    ) -> PartT:
        for_echo = _ECHOING.get() and store and not fill_first and occupant_id is None
        key = self.user_key()
        kept = self.kept(key) if for_echo else None
        if kept is not None and kept.stored.nickname == self.user_nick:
            return kept  # read-only use (see echo): never changed through this copy
        part = await super().get_user_participant(
            fill_first=fill_first, store=store, occupant_id=occupant_id
        )
        if for_echo:
            self.keep(key, part)
        return part
