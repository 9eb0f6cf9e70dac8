"""Avatars of Matrix people and rooms on the XMPP side.

A contact's avatar is the person's Matrix avatar (their member event in the direct chat,
else their profile); a group chat's avatar is the room's ``m.room.avatar``. Both are
``mxc://`` URIs, downloaded from the user's homeserver (never from anywhere else) only
when they change: the URI is the avatar's unique ID on the slidge side, which publishes
it (XEP-0084, vCard-temp) and caches it. A failed download keeps the old avatar.
"""

from __future__ import annotations

import logging
from typing import Protocol

from slidge.util.types import Avatar

from .client import MatrixClient
from .errors import MatrixError

__all__ = ["AVATAR_MAX_BYTES", "show_avatar"]

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
