"""The Matrix client's end-to-end encryption requests: keys, to-device, backup, members.

`KeysApi` is a part of `MatrixClient` (a base class of it, not used alone): the
client-server API calls the encryption modules make — uploading, querying and claiming
device keys, sending to-device events, reading account data (secret storage), the key
backup, cross-signing signatures, and a room's whole member list (to encrypt for).
Each returns the homeserver's JSON answer as it is, or raises the errors of
:mod:`.errors`; the cryptography itself, and reading those answers, is :mod:`.crypto`'s
and its neighbours'.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from .events import Membership
from .ids import RoomId
from .net import CLIENT_V3
from .sync import ClientPart
from .translate import parse_members

__all__ = ["KeysApi"]


class KeysApi(ClientPart):
    """Encryption requests of `MatrixClient` (a base class of it; not used alone)."""

    async def keys_upload(self, body: Mapping[str, Any]) -> Any:
        path = f"{CLIENT_V3}/keys/upload"
        return await self._json("POST", path, "uploading encryption keys", body=dict(body))

    async def keys_query(self, users: Iterable[str]) -> Any:
        body: dict[str, Any] = {"device_keys": {user: [] for user in users}}
        return await self._json("POST", f"{CLIENT_V3}/keys/query", "reading device keys", body=body)

    async def keys_claim(self, devices: Mapping[str, Iterable[str]]) -> Any:
        body = {
            "one_time_keys": {
                user: {device: "signed_curve25519" for device in ids}
                for user, ids in devices.items()
            }
        }
        path = f"{CLIENT_V3}/keys/claim"
        return await self._json("POST", path, "claiming one-time keys", body=body)

    async def account_data(self, event_type: str) -> Any:
        """The user's account data ``event_type`` (`RequestFailed` M_NOT_FOUND if none)."""
        user, kind = quote(self.me, safe=""), quote(event_type, safe="")
        path = f"{CLIENT_V3}/user/{user}/account_data/{kind}"
        return await self._json("GET", path, f"reading {event_type}")

    async def key_backup_version(self) -> Any:
        """The current key backup version (`RequestFailed` M_NOT_FOUND if none)."""
        return await self._json("GET", f"{CLIENT_V3}/room_keys/version", "reading the key backup")

    async def key_backup_keys(self, version: str) -> Any:
        """Every key of the key backup ``version`` (a long answer: a longer timeout)."""
        return await self._json(
            "GET",
            f"{CLIENT_V3}/room_keys/keys",
            "reading the key backup",
            params={"version": version},
            timeout=max(self.cfg.request_timeout, 120.0),
        )

    async def put_key_backup_keys(self, version: str, rooms: Mapping[str, Any]) -> Any:
        """Add keys (``rooms``: room → ``{"sessions": …}``) to the backup ``version``."""
        path = f"{CLIENT_V3}/room_keys/keys"
        body = {"rooms": dict(rooms)}
        params = {"version": version}
        return await self._json("PUT", path, "backing up room keys", params=params, body=body)

    async def upload_signatures(self, signed: Mapping[str, Any]) -> Any:
        """Upload cross-signing signatures (``signed``: user → key ID → signed object)."""
        path = f"{CLIENT_V3}/keys/signatures/upload"
        return await self._json("POST", path, "uploading cross-signing signatures", body=signed)

    async def send_to_device(self, event_type: str, messages: Mapping[str, Any]) -> None:
        """Send to-device events (``messages``: user → device → content)."""
        path = f"{CLIENT_V3}/sendToDevice/{quote(event_type, safe='')}/{uuid.uuid4().hex}"
        await self._json("PUT", path, "sending keys to devices", body={"messages": dict(messages)})

    async def room_members(self, room_id: RoomId) -> list[Membership]:
        """Every member of the room, whatever sync's lazy loading has shown so far."""
        path = f"{CLIENT_V3}/rooms/{quote(room_id, safe='')}/members"
        data = await self._json("GET", path, f"members of {room_id}")
        return parse_members(room_id, data)
