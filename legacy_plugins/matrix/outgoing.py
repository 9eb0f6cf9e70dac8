"""What the XMPP user does, sent to Matrix: the XMPP → Matrix half of a session.

`SessionOutgoing` is a part of `Session` (a base class of it, not used alone); the
contacts and MUCs call it. A message becomes an ``m.room.message`` (an edit, a reply,
mentions: :mod:`.contents`), each attachment is fetched from the user's upload service
(within the size limit and address policy) and uploaded to the homeserver, encrypted
for an encrypted room (:mod:`.e2ee` encrypts and sends; a room that must be encrypted
while the device is not loaded refuses, saying why). One message at a time per room,
in the order written (:mod:`.outbox`). Reactions, retractions, chat states and read
markers go out as their Matrix counterparts. Finding or creating the direct chat to
send to is :mod:`.joins`; what comes back from Matrix is :mod:`.incoming`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from slidge.util.types import XMPPMessage

from .contents import edit_content, media_content, reaction_content, text_content
from .crypto import encrypt_file
from .errors import RequestFailed
from .ids import EventId, RoomId, UserId
from .net import fetch_url

if TYPE_CHECKING:
    from .client import MatrixClient
    from .config import Config
    from .outbox import Outbox
    from .rooms import ReactionBook

__all__ = ["SessionOutgoing"]

log = logging.getLogger(__name__)


class SessionOutgoing:
    """What the user sends, for `Session` (a base class of it; not used alone)."""

    if TYPE_CHECKING:  # provided by Session and its other parts
        matrix: MatrixClient
        reactions: ReactionBook
        outbox: Outbox
        _my_typing: set[RoomId]

        @property
        def cfg(self) -> Config: ...
        @property
        def me(self) -> UserId: ...
        def _encrypted(self, room_id: RoomId) -> bool: ...
        def _check_writable(self, room_id: RoomId) -> None: ...
        async def _send(
            self, room_id: RoomId, event_type: str, content: dict[str, Any]
        ) -> EventId: ...

    async def send_message(self, room_id: RoomId, message: XMPPMessage) -> str | None:
        """Send what the XMPP user wrote; returns the Matrix event ID (slidge maps it).

        One message at a time per room, in the order the user wrote them: the homeserver
        orders concurrent requests as they reach it (a 1,000-message burst from XMPP
        arrived with 583 out of order without this, see ``bench/matrix.py``). The event's
        content is made before the message joins the room's queue (:mod:`.outbox`), so
        that the request goes out the moment the one before it is answered."""
        self._check_writable(room_id)
        content = _message_content(message)
        attachments = [(a.url, a.content_type) for a in message.attachments]

        async def job() -> str | None:
            await self._stop_typing(room_id)
            last: EventId | None = None
            for url, content_type in attachments:
                last = await self._send_attachment(room_id, url, content_type)
            if content is None:
                return last
            return await self._send(room_id, "m.room.message", content)

        return await self.outbox.run(("send", room_id), job)

    async def _send_attachment(
        self, room_id: RoomId, url: str, content_type: str | None
    ) -> EventId:
        data, fetched_type, name = await self._fetch_xmpp_file(url)
        mimetype = content_type or fetched_type or "application/octet-stream"
        if self._encrypted(room_id):
            ciphertext, keys = encrypt_file(data)
            mxc = await self.matrix.upload(ciphertext, "application/octet-stream", name)
            content = media_content(mxc, name, mimetype, len(data), file=keys)
        else:
            mxc = await self.matrix.upload(data, mimetype, name)
            content = media_content(mxc, name, mimetype, len(data))
        return await self._send(room_id, "m.room.message", content)

    async def _fetch_xmpp_file(self, url: str) -> tuple[bytes, str | None, str]:
        """Download an attachment the user sent (an HTTP upload URL), within the size
        limit and the address policy."""
        return await fetch_url(self.cfg, url)

    async def react(self, room_id: RoomId, target: EventId, emojis: list[str]) -> None:
        self._check_writable(room_id)
        mine = self.reactions.keys(target, self.me)
        for key in emojis:
            if key not in mine:
                event_id = await self._send(room_id, "m.reaction", reaction_content(target, key))
                self.reactions.add(target, self.me, key, event_id)
        for key, event_id in mine.items():
            if key not in emojis:
                await self.matrix.redact(room_id, event_id)
                self.reactions.remove(event_id)

    async def retract(self, room_id: RoomId, target: EventId, reason: str | None = None) -> None:
        await self.matrix.redact(room_id, target, reason)

    async def chat_state(self, room_id: RoomId, state: str) -> None:
        if state == "composing":
            self._my_typing.add(room_id)
            await self.matrix.typing(room_id, True)
        else:
            await self._stop_typing(room_id)

    async def _stop_typing(self, room_id: RoomId) -> None:
        if room_id in self._my_typing:
            self._my_typing.discard(room_id)
            try:
                await self.matrix.typing(room_id, False)
            except RequestFailed as e:
                log.debug("Could not stop typing in %s: %s", room_id, e)

    async def displayed(self, room_id: RoomId, event_id: str) -> None:
        if event_id.startswith("$"):
            await self.matrix.read(room_id, EventId(event_id))


def _message_content(message: XMPPMessage) -> dict[str, Any] | None:
    """The ``m.room.message`` content of what the XMPP user wrote (None: no text)."""
    body = message.body or ""
    if not body.strip():
        return None
    if message.replace:
        return edit_content(EventId(message.replace), body)
    reply = EventId(message.reply.msg_id) if message.reply else None
    mentions = [UserId(m.contact.legacy_id) for m in message.mentions]
    return text_content(body, reply_to=reply, mentions=mentions)
