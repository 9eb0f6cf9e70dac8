"""The occupants of an IRC channel's room, stored at the scale of IRC joins.

Every IRC JOIN is seen by every user in the channel, and slidge 0.4.2 makes each one
cost in proportion to the room: it merges the room, builds every occupant and its
contact as ORM objects and commits row by row. `Occupants` is mixed into `group.MUC`
before slidge's class and replaces those paths with the same results (the same rows,
nicknames, occupant ids and presences) from a few queries (`rows`):

- looking an occupant up by nick or by contact, and creating one, for a JOIN
  (`joined_occupant`, `get_participant_by_contact`, `get_participant`), with the role
  and affiliation of its channel modes (slidge's default "member" made every JOIN an
  affiliation change, a message to the room) and one presence;
- the room's member list when the first client joins (`fill_participants`, stored in
  one transaction by `_LegacyMUC__fill_participants`), with roles and affiliations
  from the channel's modes and the IRCv3 account hats;
- the affiliation version slidge computes for every join and part (`mav` data);
- slidge's "presence sent" flags of a join, written at once (`write_presence_sent`).

Detectors in ``tests/unit/test_irc_joins.py`` fail when the slidge code these replace
changes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal, overload

import sqlalchemy as sa
from slidge.contact import LegacyContact
from slidge.db.models import Contact as StoredContact
from slidge.db.models import Participant as StoredParticipant
from slidge.util.types import CachedPresence, Hat, MucAffiliation, MucRole
from slixmpp.jid import unescape_node
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm.attributes import set_committed_value

from gateway.rooms import forget_occupant_list

from . import accounts, rows
from .client import IrcClient
from .contact import Contact
from .events import Nick
from .participant import Participant
from .translate import AddressError, UserAddress

if TYPE_CHECKING:
    from slidge.db.models import Room
    from slidge.group import LegacyMUC

    from .events import Channel
    from .session import Session
    from .translate import ChannelAddress

    _Room = LegacyMUC[Participant]
else:  # at run time a plain mixin, placed before slidge's class by `group.MUC`
    _Room = object

__all__ = ["Occupants"]

_MAV_DATA = (
    sa.select(StoredParticipant.is_user, StoredContact.legacy_id, StoredParticipant.affiliation)
    .outerjoin(StoredContact, StoredParticipant.contact_id == StoredContact.id)
    .where(
        StoredParticipant.room_id == sa.bindparam("room"),
        StoredParticipant.affiliation != "none",
        StoredParticipant.is_user | StoredParticipant.contact_id.is_not(None),
    )
)
"""What slidge's affiliation version covers (`MUC._LegacyMUC__get_mav_data`)."""


_AVAILABLE = {"cached_presence": True, **CachedPresence()._asdict()}
"""What slidge records on a contact when it sends its occupant's plain "available"."""
_CACHE_AVAILABLE = (
    sa.update(StoredContact).where(StoredContact.id == sa.bindparam("contact")).values(**_AVAILABLE)
)


_OCCUPANTS: sa.Table = StoredParticipant.__table__  # type: ignore[assignment]
_PRESENCE_SENT = (
    sa.update(_OCCUPANTS).where(_OCCUPANTS.c.id == sa.bindparam("pk")).values(presence_sent=True)
)
"""slidge's flag on an occupant whose presence was sent (`MUC.write_presence_sent`)."""


class Occupants(_Room):
    """Mixin for `group.MUC`: its occupants looked up, created and stored cheaply."""

    if TYPE_CHECKING:
        session: Session

        @property
        def address(self) -> ChannelAddress: ...

        @property
        def channel(self) -> Channel: ...

    def __init__(self, session: Any, stored: Room) -> None:
        super().__init__(session, stored)
        self._presence_sent: set[int] | None = None
        """While a client joins: the occupants shown to it, stored at once after."""

    def _LegacyMUC__get_mav_data(self) -> list[tuple[str, MucAffiliation]]:
        """slidge's data for the room's affiliation version (XEP-0463-style `mav`),
        recomputed for every occupant who joins or leaves: slidge merged the room and
        built every occupant (and its contact) as ORM objects, so a channel's joins cost
        its members squared. The same (id, affiliation) pairs, read as columns in one
        query (ids: the user's JID, else the contact's legacy id; nobody without a
        contact; nobody with affiliation none)."""
        if self.stored.id is None:
            return []
        with self.xmpp.store.session() as orm:
            found = orm.connection().execute(_MAV_DATA, {"room": self.stored.id}).all()
        user = str(self.user_jid)
        return [(user if is_user else str(legacy_id), aff) for is_user, legacy_id, aff in found]

    @overload  # type: ignore[override]
    async def get_participant(
        self, nickname: str, *, create: Literal[False]
    ) -> Participant | None: ...

    @overload
    async def get_participant(self, nickname: str | None = None, **kwargs: Any) -> Participant: ...

    async def get_participant(self, nickname: str | None = None, **kwargs: Any) -> Any:
        """slidge's lookup by nickname, which builds an ORM query with the occupant's
        room and contact joined in: for a nick nobody has (every JOIN every user sees
        asks first), one small query says so and nothing is built."""
        if (
            nickname is not None
            and kwargs.get("create") is False
            and len(kwargs) == 1
            and self.stored.id is not None
        ):
            with self.xmpp.store.session() as orm:
                if not rows.occupant_exists(orm, self.stored.id, nickname):
                    return None
        base: Any = super()
        return await base.get_participant(nickname, **kwargs)

    @overload  # type: ignore[override]
    async def get_participant_by_contact(
        self, c: LegacyContact, *, occupant_id: str | None = None
    ) -> Participant: ...

    @overload
    async def get_participant_by_contact(
        self, c: LegacyContact, *, create: bool, occupant_id: str | None = None
    ) -> Participant | None: ...

    async def get_participant_by_contact(
        self, c: LegacyContact, *, create: bool = True, occupant_id: str | None = None
    ) -> Participant | None:
        """slidge's occupant for contact `c`, found or created with one query and, when
        created, one INSERT: slidge merged the room, queried the occupant, queried the
        nickname's availability and merged the new row with its room (and whatever
        occupant list that room object had loaded) for every JOIN every user saw. What
        a client sees is unchanged: the nickname (with slidge's suffix on a clash), the
        occupant id (the contact's JID), the affiliation change, the presence — which
        now carries the occupant's account hat (IRCv3) from the first one."""
        if occupant_id is not None or self.stored.id is None or c.stored.id is None:
            base: Any = super()
            return await base.get_participant_by_contact(  # type: ignore[no-any-return]
                c, create=create, occupant_id=occupant_id
            )
        await self.session.contacts.ready
        nickname = c.name or unescape_node(c.jid.node)
        with self.xmpp.store.session(expire_on_commit=False) as orm:
            stored, clash = rows.occupant_by_contact(orm, self.stored.id, c.stored.id, nickname)
        if stored is not None:
            return self.participant_from_store(stored=stored, contact=c)
        if not create:
            return None
        return await self._create_occupant(c, nickname, clash, online=False)

    async def joined_occupant(self, legacy_id: str, nick: str) -> Participant | None:
        """`get_participant_by_contact` for IRC nick `nick` (contact `legacy_id`) who has
        just JOINed and whose "available" the caller sends at once (`Participant.online`),
        in one transaction: a JOIN asked for the contact (a query, and for a nick new to
        the user an INSERT and commit), then for the occupant by nick and by contact (one
        query), then INSERTed it and committed again. A new occupant's row is INSERTed as
        slidge leaves it after that presence (its `presence_sent` flag, the contact's
        cached "available"). None when an occupant already has the nick or a row is
        missing or clashes: the caller looks it up slidge's way then."""
        if self.stored.id is None:
            return None
        roster: Any = self.session.contacts
        await roster.ready
        c: Contact | None = roster.kept_contact(legacy_id)
        if c is None:
            with self.xmpp.store.session(expire_on_commit=False) as orm:
                if (c := roster.new_contact(orm, legacy_id, nick)) is not None:
                    return await self._joined(orm, c, [c], nick)
            c = await roster.by_legacy_id(legacy_id)  # stored before: read as slidge does
            if c.stored.id is None:
                return None
        with self.xmpp.store.session(expire_on_commit=False) as orm:
            return await self._joined(orm, c, [], nick)

    async def _joined(
        self, orm: OrmSession, c: Contact, new: list[Contact], nick: str
    ) -> Participant | None:
        """`joined_occupant` in `orm`'s transaction, where `new` (`c` or nothing) is a
        contact not stored yet."""
        assert self.stored.id is not None
        roster: Any = self.session.contacts
        nickname = c.name or unescape_node(c.jid.node)
        by_nick, stored, clash = rows.joined_occupant(
            orm, self.stored.id, nick, c.stored.id, nickname
        )
        together = not (by_nick or stored is not None or self._filling())
        if together:
            # Its presence follows the commit: the "available" slidge would record on
            # a new contact with an UPDATE (`_new_occupant`) goes in with its INSERT.
            for contact in new:
                contact.stored.cached_presence = True
        part: Participant | None = None
        alone = False  # the contact stored without the occupant
        try:
            roster.insert_new(orm, new)
            roster.keep_new(new)  # kept before any presence: slidge looks its sender up
            if together:
                part = await self._create_occupant(c, nickname, clash, online=True, orm=orm)
            else:
                orm.commit()  # as `Session.contact` would have stored it
                alone = True
        except IntegrityError:  # a contact row made meanwhile
            orm.rollback()
        finally:
            if part is None and not alone:
                roster.forget(new)
        if not alone:
            return part  # None: nothing written, the caller's way
        if by_nick:
            return None
        if stored is not None:
            return self.participant_from_store(stored=stored, contact=c)
        return await self._create_occupant(c, nickname, clash, online=True)

    def _filling(self) -> bool:
        """Whether slidge is filling the occupant list or history (it stores the list at
        the end)."""
        return bool(self.get_lock("fill participants") or self.get_lock("fill history"))

    @overload
    async def _create_occupant(
        self, c: LegacyContact, nickname: str, clash: bool, *, online: bool
    ) -> Participant: ...

    @overload
    async def _create_occupant(
        self, c: LegacyContact, nickname: str, clash: bool, *, online: bool, orm: OrmSession
    ) -> Participant | None: ...

    async def _create_occupant(
        self,
        c: LegacyContact,
        nickname: str,
        clash: bool,
        *,
        online: bool,
        orm: OrmSession | None = None,
    ) -> Participant | None:
        """A new occupant for `c` (see `get_participant_by_contact`); `online`: the
        caller sends its plain "available" right after. `orm`: its row goes in that
        session's transaction, committed here, and a clash returns None with nothing
        written (the caller's transaction rolled back) instead of slidge's fallback."""
        if clash:  # someone else has the nickname (slidge's rule)
            nickname = f"{nickname} ({unescape_node(c.jid.node)})"
        filling = self._filling()
        filled = self.participants_filled and not filling
        if filling:  # slidge stores the whole list at the end of the fill
            return self._new_occupant(c, nickname, stored=False)
        # Whether the presence below is a plain "available", which the JOIN handler's
        # `online()` would repeat: read before the INSERT, which records one on the
        # contact when it has none (a nick seen for the first time); or the contact
        # has one already (the nick joined another of the user's rooms before).
        cached = c._get_last_presence()
        plain = cached is None or cached == CachedPresence()
        part = self._new_occupant(
            c,
            nickname,
            stored=True,
            presence_sent=filled,
            online=online and not filled,
            orm=orm,
        )
        if part is None:
            if orm is not None:
                return None
            # a clash slidge knows how to report: its own way
            fallback: Any = super()
            return await fallback.get_participant_by_contact(c, create=True)  # type: ignore[no-any-return]
        heard = bool(self.get_user_resources())
        if filled:
            # Announced to the room: the row's flag and the contact's cached presence
            # that this stores went in with the row. In a room no client is in (a
            # persistent one while the user is away) nobody would get the presence or
            # the affiliation change, and neither stores anything: not built.
            if heard:
                self.send_affiliation_change(part)
                part.send_last_presence(force=True, no_cache_online=True)
            part.announced = plain
        elif online and plain and not heard:
            # Its "available" went in with the row and nobody would get one: what
            # `Participant._unheard` would find out by reading the contact's back.
            part.announced = True
        return part

    @overload
    def _new_occupant(
        self, c: LegacyContact, nickname: str, *, stored: Literal[False]
    ) -> Participant: ...

    @overload
    def _new_occupant(
        self,
        c: LegacyContact,
        nickname: str,
        *,
        stored: Literal[True],
        presence_sent: bool,
        online: bool = False,
        orm: OrmSession | None = None,
    ) -> Participant | None: ...

    def _new_occupant(
        self,
        c: LegacyContact,
        nickname: str,
        *,
        stored: bool,
        presence_sent: bool = False,
        online: bool = False,
        orm: OrmSession | None = None,
    ) -> Participant | None:
        """A new occupant for contact `c`, its row INSERTed (`stored`) without merging
        anything; None if the row clashes with one slidge did not show us.
        `presence_sent`: its last presence is sent at once (`send_last_presence`);
        `online`: its plain "available" is (`online()`, which always flags the row).
        `orm`: INSERTed and committed in that session's transaction (rolled back on a
        clash), else in a new one."""
        row = StoredParticipant(nickname=nickname, occupant_id=str(c.jid))
        row.room_id, row.contact_id = self.stored.id, c.stored.id
        row.is_user, row.extra_attributes = False, None
        row.presence_sent = False
        set_committed_value(row, "contact", c.stored)
        if stored:
            set_committed_value(row, "room", self.stored)
        else:
            row.room = self.stored  # as slidge builds them while filling
        contact: Any = c
        part = self._participant_cls(self, row, contact=contact)  # also its resource
        row.hats = self._account_hats(c)
        if stored and (standing := self._standing(c)) is not None:
            row.role, row.affiliation = standing
        if not stored:
            # slidge merges the list at the end of the fill: with the contact row
            # unloaded (contact_id says who it is), without a SELECT of each contact.
            row.__dict__.pop("contact", None)
            return part
        first = False
        if presence_sent:  # the presence follows at once; slidge would UPDATE the row for it
            cached = c._get_last_presence()
            row.presence_sent = cached is None or cached.ptype != "unavailable"
            # and it would record a plain "available" on a contact that has none yet
            first = cached is None and c.stored.id is not None
        elif online:
            row.presence_sent = True
            first = c._get_last_presence() is None and c.stored.id is not None
        own = contextlib.nullcontext(orm) if orm is not None else self.xmpp.store.session()
        try:
            with own as writing:
                rows.insert(writing, row, {"contact": c.stored, "room": self.stored})
                if first:
                    writing.connection().execute(_CACHE_AVAILABLE, {"contact": c.stored.id})
                writing.commit()
        except IntegrityError:
            if orm is not None:
                orm.rollback()
            return None
        if first:
            for key, value in _AVAILABLE.items():
                set_committed_value(c.stored, key, value)
        return part

    def _account_hats(self, c: LegacyContact) -> list[Hat]:
        """The hats of the IRC nick behind `c` as its occupant is created (IRCv3)."""
        client = self.session.clients.get(self.address.server)
        address = c.address if isinstance(c, Contact) else None
        if client is None or not isinstance(address, UserAddress):
            return []
        return accounts.on_new_occupant(client, self.channel, address.nick)

    def _standing(self, c: LegacyContact) -> tuple[MucRole, MucAffiliation] | None:
        """The role and affiliation of the IRC nick behind `c` from its channel modes,
        for an occupant created while the nick is in the channel (a JOIN: a plain
        member's "none", as the member list gives it): slidge's defaults ("member")
        made every newcomer an affiliation change, announced to the room with a
        message and an affiliation version read from the whole occupant list."""
        client = self.session.clients.get(self.address.server)
        address = c.address if isinstance(c, Contact) else None
        if client is None or not isinstance(address, UserAddress):
            return None
        if client.channels.member(self.channel, address.nick) is None:
            return None
        return client.channels.standing(self.channel, address.nick)

    def write_presence_sent(self) -> None:
        """Store which occupants have had a presence sent (see `Participant`), with
        one executemany and one commit: slidge commits one UPDATE per occupant shown
        to a joining client."""
        pending, self._presence_sent = self._presence_sent, None
        if not pending:
            return
        with self.xmpp.store.session() as orm:
            orm.connection().execute(_PRESENCE_SENT, [{"pk": pk} for pk in pending])
            orm.commit()

    async def fill_participants(self) -> AsyncIterator[Participant]:
        client = self.session.clients.get(self.address.server)
        state = client.channels.get(self.address.channel) if client else None
        if client is None or state is None:
            return
        members = list(state.members.values())
        # The whole member list at once: its contacts in one query and one transaction,
        # the occupants already stored (people seen joining before the user's client
        # joined, a persistent room) in one query; new occupants are stored by slidge
        # in one transaction once the fill is over.
        names: dict[str, str] = {}
        for member in members:
            if not client.state.is_own(member.nick):
                with contextlib.suppress(AddressError):
                    address = UserAddress(client.name, Nick(member.nick))
                    names[self.session.mapping.render(address)] = member.nick
        roster: Any = self.session.contacts
        await roster.prefetch(names, present=True)  # all shown to the joining client
        stored = self._stored_occupants()
        by_nick = {row.nickname: row for row in stored} | {row.resource: row for row in stored}
        by_contact = {row.contact_id: row for row in stored if row.contact_id is not None}
        for member in members:
            role, affiliation = client.channels.standing(state.name, member.nick)
            if client.state.is_own(member.nick):
                part = await self.get_user_participant()
            else:
                part = await self._fill_occupant(client, member.nick, by_nick, by_contact)
                accounts.filled(client, state.name, part, member.nick)  # IRCv3 accounts
            part.role, part.affiliation = role, affiliation
            yield part

    async def _LegacyMUC__fill_participants(self) -> None:
        """slidge's fill of the occupant list (when the first client joins): the same
        rows from `fill_participants`, each resource once, the user's occupant added
        if missing; then slidge merged every row into a session holding the room's
        list and let the ORM flush them (its unit of work was a tenth of the CPU of 50
        users joining 5 channels at once). Here `rows.store_occupant_list` writes them
        in one transaction. One difference: an occupant deleted (parted) while the
        list was being filled stays deleted, where slidge's merge stored it again."""
        if self.participants_filled:
            return
        async with self.lock("fill participants"):
            with self.xmpp.store.session(expire_on_commit=False) as orm:
                orm.add(self.stored)
                with orm.no_autoflush:
                    orm.refresh(self.stored, ["participants_filled"])
            if self.participants_filled:
                return
            parts: list[StoredParticipant] = []
            resources: set[str] = set()
            user_found = False
            async for participant in self.fill_participants():
                user_found = user_found or participant.is_user
                if participant.stored.resource not in resources:
                    parts.append(participant.stored)
                    resources.add(participant.stored.resource)
            if not user_found:
                participant = await self.get_user_participant()
                if participant.stored.resource in resources:
                    for row in parts:
                        if row.resource == participant.jid.resource:
                            row.is_user = True
                else:
                    parts.append(participant.stored)
        with self.xmpp.store.session() as orm:
            if rows.store_occupant_list(orm, self.stored, parts):
                orm.commit()
                forget_occupant_list(self.stored)
                return
        with self.xmpp.store.session(expire_on_commit=False) as orm:  # slidge's way
            orm.add(self.stored)
            with orm.no_autoflush:
                orm.refresh(self.stored, ["participants"])
                for row in parts:
                    orm.merge(row)
            self.stored.participants_filled = True
            orm.commit()

    def _stored_occupants(self) -> list[StoredParticipant]:
        """The room's stored occupants (the user's included, as slidge's lookups by
        nickname find it too)."""
        if self.stored.id is None:
            return []
        with self.xmpp.store.session(expire_on_commit=False) as orm:
            return list(
                orm.scalars(
                    sa.select(StoredParticipant).where(StoredParticipant.room_id == self.stored.id)
                ).all()
            )

    async def _fill_occupant(
        self,
        client: IrcClient,
        nick: str,
        by_nick: dict[str, StoredParticipant],
        by_contact: dict[int, StoredParticipant],
    ) -> Participant:
        """`Session.participant` for the member list: by nickname, else by contact,
        else a new occupant, from the rows read once for the whole list."""
        row = by_nick.get(nick)
        if row is not None:
            return self.participant_from_store(row)
        try:
            contact = await self.session.contact(client, nick)
        except AddressError:
            return await self.get_participant(nick)
        row = by_contact.get(contact.stored.id) if contact.stored.id is not None else None
        if row is not None:
            return self.participant_from_store(row, contact)
        nickname = contact.name or unescape_node(contact.jid.node)
        if nickname in by_nick:  # someone else has it (slidge's rule)
            nickname = f"{nickname} ({unescape_node(contact.jid.node)})"
        part = self._new_occupant(contact, nickname, stored=False)
        by_nick[part.stored.nickname] = by_nick[part.stored.resource] = part.stored
        return part
