"""Rooms coming and going: the Matrix session's invitations, joins, leaves and direct chats.

`SessionJoins` is a part of `Session` (a base class of it, not used alone). An
invitation from sync is accepted at once (direct chats always, other rooms unless the
admin sets ``auto_accept_invites = false``: then the user gets a XEP-0249 invitation
and joining the MUC joins the room). A join from XMPP, or a room created by slidge's
*Create a group*, waits until sync has shown the room, so that its state is known and
its history is not taken for news. A room left on Matrix leaves the user's bookmarks.
What happens inside a room once joined is :mod:`.incoming`; which rooms are direct
chats is kept by :mod:`.rooms`, and a new one is made by `Session.dm_room`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from slixmpp import JID

from .contact import Contact
from .errors import MatrixError, as_xmpp_error
from .events import InvitedRoom
from .ids import RoomId, UserId

if TYPE_CHECKING:
    from slidge.db.meta import JSONSerializable
    from slidge.util.types import AnyMUC

    from .client import MatrixClient
    from .config import Config
    from .group import MUC
    from .rooms import RoomTracker

__all__ = ["SessionJoins"]

log = logging.getLogger(__name__)


class SessionJoins:
    """Invitations, joins, leaves and direct chats for `Session` (a base class of it;
    not used alone)."""

    if TYPE_CHECKING:  # provided by Session and slidge's BaseSession
        matrix: MatrixClient
        rooms: RoomTracker
        invites: dict[RoomId, InvitedRoom]
        _arrivals: dict[RoomId, asyncio.Event]
        user: Any
        xmpp: Any
        bookmarks: Any

        @property
        def cfg(self) -> Config: ...
        @property
        def me(self) -> UserId: ...

        def legacy_module_data_update(self, data: JSONSerializable) -> None: ...
        def send_gateway_invite(
            self, muc: AnyMUC, reason: str | None = None, password: str | None = None
        ) -> None: ...
        async def _muc(self, room_id: RoomId) -> MUC: ...
        async def _befriend(self, user: UserId) -> Contact: ...

    async def _invited(self, invite: InvitedRoom) -> None:
        if not (invite.is_direct or self.cfg.auto_accept_invites):
            await self._offer(invite)
            return
        room_id = await self.matrix.join(invite.room_id)
        log.info("%s joined %s (invited by %s)", self.me, room_id, invite.inviter)
        if invite.is_direct and invite.inviter is not None:
            content = self.rooms.add_direct(invite.inviter, room_id)
            if content is not None:
                await self.matrix.set_direct(content)

    async def _offer(self, invite: InvitedRoom) -> None:
        """An invitation the user decides on: a XEP-0249 invitation from the inviter
        (or the gateway); joining the MUC joins the Matrix room."""
        first = invite.room_id not in self.invites
        self.invites[invite.room_id] = invite
        if not first:
            return
        muc = await self._muc(invite.room_id)
        reason = f"{invite.inviter or 'Someone'} invites you to this Matrix room"
        if invite.inviter is not None:
            (await self._befriend(invite.inviter)).invite_to(muc, reason)
        else:
            self.send_gateway_invite(muc, reason)
        log.info("%s is invited to %s by %s", self.me, invite.room_id, invite.inviter)

    async def join_room(self, room_id: RoomId) -> None:
        """Join a room on Matrix and wait until sync has shown it, so that its state is
        known and its history is not taken for news."""
        if self.is_joined(room_id):
            return
        joined = await self.matrix.join(room_id)
        log.info("%s joined %s from XMPP", self.me, joined)
        await self._arrival(joined)
        self.invites.pop(room_id, None)

    async def _arrival(self, room_id: RoomId) -> None:
        """Wait until sync has shown a room we just joined or created."""
        arrival = self._arrivals.setdefault(room_id, asyncio.Event())
        if self.is_joined(room_id):  # no await since the join: sync cannot have run since
            self._arrivals.pop(room_id, None)
            return
        async with asyncio.timeout(self.cfg.sync_timeout + self.cfg.request_timeout):
            await arrival.wait()

    def is_joined(self, room_id: RoomId) -> bool:
        state = self.rooms.rooms.get(room_id)
        member = state.members.get(self.me) if state is not None else None
        return member is not None and member.membership == "join"

    def room_addresses(self) -> dict[str, str]:
        """Rooms the user joined by alias: room ID → the JID local part they used."""
        stored = self.user.legacy_module_data.get("room_addresses")
        if not isinstance(stored, dict):
            return {}
        return {str(k): str(v) for k, v in stored.items()}

    def remember_room_address(self, room_id: RoomId, local_part: str) -> None:
        self.legacy_module_data_update(
            {"room_addresses": {**self.room_addresses(), room_id: local_part}}
        )

    async def on_create_group(self, name: str, contacts: list[Contact]) -> str:
        """slidge's *Create a group* command: a new private Matrix room, the chosen
        contacts invited."""
        try:
            room_id = await self.matrix.create_room(name, [UserId(c.legacy_id) for c in contacts])
        except MatrixError as e:
            raise as_xmpp_error(e) from e
        await self._arrival(room_id)
        return room_id

    async def _left(self, room_id: RoomId) -> None:
        partner = self.rooms.dm_partner(room_id)
        self.invites.pop(room_id, None)
        self.rooms.forget(room_id)
        if partner is not None:
            return
        local = await self.bookmarks.legacy_id_to_jid_local_part(room_id)
        muc = self.bookmarks.by_jid_only_if_exists(JID(f"{local}@{self.xmpp.boundjid.bare}"))
        if muc is not None:
            await self.bookmarks.remove(muc, "You left this room (or were removed) on Matrix.")

    async def _show_room(self, room_id: RoomId) -> None:
        """A room we just joined: into the user's bookmarks, to be joined by clients."""
        muc = await self.bookmarks.by_legacy_id(room_id, create=False)
        if muc is None:
            return  # being joined from XMPP right now: the join adds it
        await muc.add_to_bookmarks(auto_join=True)
