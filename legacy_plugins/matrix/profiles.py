"""Profiles: names, avatars and presence of Matrix people and rooms on the XMPP side.

A contact's avatar is the person's Matrix avatar (their member event in the direct chat,
else their profile); a group chat's avatar is the room's ``m.room.avatar``. Both are
``mxc://`` URIs, downloaded from the user's homeserver (never from anywhere else) only
when they change: the URI is the avatar's unique ID on the slidge side, which publishes
it (XEP-0084, vCard-temp) and caches it. A failed download keeps the old avatar.

`SessionProfiles`, a part of the session, follows them: a direct-chat partner's name,
avatar and presence go to their contact, and the user's own XMPP avatar and presence
(all their clients merged) become their Matrix avatar and presence. A name is the one a
shared room shows, else the person's profile.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from slidge.util.types import Avatar, PseudoPresenceShow
from slixmpp import JID
from slixmpp.types import ResourceDict

from .contents import presence_for_xmpp_show
from .errors import MatrixError, as_xmpp_error
from .events import Membership, UserPresence
from .ids import UserId

if TYPE_CHECKING:
    from .client import MatrixClient
    from .contact import Contact
    from .rooms import RoomTracker

__all__ = ["AVATAR_MAX_BYTES", "SessionProfiles", "show_avatar"]

log = logging.getLogger(__name__)

AVATAR_MAX_BYTES = 10 * 1024 * 1024
"""Larger avatars are not fetched (slidge scales them down anyway)."""


class HasAvatar(Protocol):
    """A slidge contact or group chat."""

    @property
    def avatar(self) -> Avatar | None: ...

    async def set_avatar(self, avatar: Avatar | None = None, delete: bool = False) -> None: ...


async def show_avatar(matrix: MatrixClient, target: HasAvatar, mxc: str | None) -> None:
    """Give ``target`` the Matrix avatar ``mxc`` (None: no avatar)."""
    current = target.avatar
    if (current.unique_id if current is not None else None) == mxc:
        return
    if mxc is None:
        await target.set_avatar(None)
        return
    try:
        data, _type = await matrix.download(mxc, limit=AVATAR_MAX_BYTES)
    except MatrixError as e:
        log.info("Could not fetch the avatar %s: %s", mxc, e)
        return
    await target.set_avatar(Avatar(data=data, unique_id=mxc))


class SessionProfiles:
    """Names, avatars and presence for `Session` (a base class of it; not used alone)."""

    if TYPE_CHECKING:  # provided by Session and slidge's BaseSession
        matrix: MatrixClient
        rooms: RoomTracker

        @property
        def me(self) -> UserId: ...
        @property
        def user_jid(self) -> JID: ...
        async def _befriend(self, user: UserId) -> Contact: ...

    async def _on_presence(self, presence: UserPresence) -> None:
        """A Matrix user's presence, shown on their contact if they have one (a direct
        chat with the user)."""
        if presence.user == self.me or self.rooms.dm_room(presence.user) is None:
            return
        contact = await self._befriend(presence.user)
        if presence.state == "online":
            contact.online(presence.status)
            return
        seen = None
        if presence.last_active_ago is not None:
            seen = datetime.now(UTC) - timedelta(milliseconds=presence.last_active_ago)
        if presence.state == "unavailable":
            contact.away(presence.status, last_seen=seen)
        else:
            contact.offline(presence.status, last_seen=seen)

    async def on_presence(
        self,
        resource: str,
        show: PseudoPresenceShow,
        status: str,
        resources: dict[str, ResourceDict],
        merged_resource: ResourceDict | None,
    ) -> None:
        """The user's XMPP presence (all their clients merged) is their Matrix presence
        (if their *sync presence* preference is on, as it is by default)."""
        if not hasattr(self, "matrix"):
            return
        if merged_resource is None:
            state, text = presence_for_xmpp_show("unavailable"), None
        else:
            state = presence_for_xmpp_show(merged_resource["show"])
            text = merged_resource["status"] or None
        try:
            await self.matrix.set_presence(state, text)
        except MatrixError as e:
            log.warning("Could not set the Matrix presence of %s: %s", self.user_jid, e)

    async def on_avatar(
        self,
        bytes_: bytes | None,
        hash_: str | None,
        type_: str | None,
        width: int | None,
        height: int | None,
    ) -> None:
        """The user's XMPP avatar (XEP-0084, while *sync avatar* is on) is their Matrix
        avatar; none removes it."""
        try:
            mxc = await self.matrix.upload(bytes_, type_ or "image/png", "avatar") if bytes_ else ""
            await self.matrix.set_avatar_url(mxc)
        except MatrixError as e:
            raise as_xmpp_error(e) from e

    async def _partner_changed(self, partner: UserId, event: Membership) -> None:
        """The other person of a direct chat changed their name or avatar."""
        if event.membership != "join":
            return
        contact = await self._befriend(partner)
        if event.displayname:
            contact.name = event.displayname
        await show_avatar(self.matrix, contact, event.avatar_url)

    async def _avatar_of(self, user: UserId) -> str | None:
        """``user``'s avatar: in the direct chat with them if sync showed it, else from
        their profile."""
        room_id = self.rooms.dm_room(user)
        member = self.rooms.rooms[room_id].members.get(user) if room_id else None
        if member is not None and member.membership == "join":
            return member.avatar_url
        try:
            _name, avatar = await self.matrix.profile(user)
        except MatrixError as e:
            log.debug("No profile for %s: %s", user, e)
            return None
        return avatar

    def display_name(self, user: UserId) -> str | None:
        """The name ``user`` has in any room we share, if sync showed one."""
        for state in self.rooms.rooms.values():
            name = state.member_name(user)
            if name:
                return name
        return None

    async def profile_name(self, user: UserId) -> str | None:
        """``user``'s display name: from a room we share, or from their profile."""
        name = self.display_name(user)
        if name is None and hasattr(self, "matrix"):
            try:
                name, _avatar = await self.matrix.profile(user)
            except MatrixError as e:
                log.debug("No profile for %s: %s", user, e)
        return name
