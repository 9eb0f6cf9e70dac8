"""The Matrix side of the end-to-end stories: a real Synapse, and people using it.

`shared_synapse` starts one Synapse for the whole test session (several test modules use
it) on loopback; `MatrixPeer` is a Matrix user ("bob") driving the client-server API
with plain aiohttp, as a Matrix client would. Its sync loop keeps every event it has seen
that no wait has consumed yet, so a wait never misses an event that arrived before it
started. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import nio  # type: ignore[import-untyped]
import pytest
from PIL import Image
from slixmpp import JID
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

from gateway.localservers.synapse import MatrixAccount, Synapse
from tests.e2e.conftest import MATRIX_JID, MATRIX_SECRET, PasserelleProcess
from tests.e2e.xmpp_client import Client, child, send_iq

WAIT = 20.0
PASSWORD = "matrix password for tests"
STARTED = r"^matrix \| .*Slidge has successfully started"
"""The Matrix network's line in Passerelle's output once its gateway is up."""
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00"
    b"\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xcf\xc0\xf0\x1f\x00\x05\x00\x01\xff"
    b"\x89\x99=\x1d\x00\x00\x00\x00IEND\xaeB`\x82"
)
"""A one-pixel PNG image."""
_names = itertools.count(1)
_SYNAPSE_KEY = pytest.StashKey[Synapse]()

Event = dict[str, Any]


def shared_synapse(request: pytest.FixtureRequest, factory: pytest.TempPathFactory) -> Synapse:
    """One Synapse per test session, whichever module asks first; stopped at the end."""
    stash = request.config.stash
    if _SYNAPSE_KEY not in stash:
        server = Synapse(factory.mktemp("synapse"), presence=True)
        server.start()
        request.config.add_cleanup(server.stop)
        stash[_SYNAPSE_KEY] = server
    return stash[_SYNAPSE_KEY]


def matrix_section(**extra: object) -> str:
    """A ``[networks.matrix]`` section that lets the gateway reach Synapse on loopback."""
    lines = [
        "[networks.matrix]",
        f'jid = "{MATRIX_JID}"',
        f'secret = "{MATRIX_SECRET}"',
        "allow_private_addresses = true",
        "allow_plain_http = true",
    ]
    for key, value in extra.items():
        shown = str(value).lower() if isinstance(value, bool) else json.dumps(value)
        lines.append(f"{key} = {shown}")
    return "\n".join(lines) + "\n"


async def start_matrix_gateway(
    start_passerelle: Callable[..., PasserelleProcess], **extra: object
) -> PasserelleProcess:
    """``passerelle run`` with the echo and Matrix networks, once Matrix's gateway is up."""
    process = start_passerelle(networks=matrix_section(**extra), wait=False)
    await process.wait_for(STARTED, timeout=90)
    return process


@contextlib.asynccontextmanager
async def peer_factory(synapse: Synapse) -> AsyncIterator[Callable[[str], Any]]:
    """``make(name)`` registers a fresh Matrix user and returns it as a syncing peer."""
    made: list[MatrixPeer] = []

    async def make(name: str) -> MatrixPeer:
        account = await asyncio.to_thread(new_account, synapse, name)
        peer = MatrixPeer(synapse, account)
        made.append(peer)
        await peer.start_sync()
        return peer

    try:
        yield make
    finally:
        for peer in made:
            await peer.close()


FEATURE_PLUGINS = ("xep_0066", "xep_0085", "xep_0333", "xep_0424", "xep_0444", "xep_0461")
"""slixmpp plugins that let the test client read out-of-band files, chat states,
markers, retractions, reactions and replies."""


def understand_features(client: Client) -> None:
    """Teach a test client the stanzas of the modern message features."""
    for plugin in FEATURE_PLUGINS:
        client.register_plugin(plugin)
    client.queue_bodyless_messages()


async def log_in(client: Client, synapse: Synapse, account: MatrixAccount) -> None:
    """Register with the Matrix gateway (password login) and wait until it is connected."""
    await client.register(
        MATRIX_JID, user_id=account.user_id, password=account.password, homeserver=synapse.url
    )
    await client.next_presence(MATRIX_JID, ptype="chat")


async def join_room_when_shown(client: Client, room_jid: str, nick: str) -> None:
    """Join the MUC as soon as the gateway has it (once its sync has seen the room)."""
    async with asyncio.timeout(30):
        while True:
            answer = await client.join_muc(room_jid, nick)
            if answer["type"] != "error":
                return
            await asyncio.sleep(0.3)


async def xmpp_upload(client: Client, upload_jid: str, data: bytes, name: str, ctype: str) -> str:
    """Put a file on the XMPP server's HTTP upload service (XEP-0363); returns its URL."""
    iq = client.make_iq_get(ito=upload_jid)
    ET.SubElement(
        iq.xml,
        "{urn:xmpp:http:upload:0}request",
        {"filename": name, "size": str(len(data)), "content-type": ctype},
    )
    slot = await send_iq(iq, WAIT)
    ns = "{urn:xmpp:http:upload:0}"
    put = child(slot, f"{ns}slot/{ns}put")
    get = child(slot, f"{ns}slot/{ns}get").get("url")
    headers = {"Content-Type": ctype}
    for header in put.findall(f"{ns}header"):
        headers[header.get("name", "")] = header.text or ""
    async with (
        aiohttp.ClientSession() as http,
        http.put(put.get("url", ""), data=data, headers=headers) as resp,
    ):
        assert resp.status in (200, 201), await resp.text()
    return str(get)


async def http_get(url: str) -> bytes:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200, url
        return await resp.read()


def jid_of(user_id: str) -> str:
    """The XMPP address of a Matrix user on a test Synapse (all lower case there)."""
    local, server = user_id[1:].split(":", 1)
    return f"{local}%{server}@{MATRIX_JID}"


def new_account(synapse: Synapse, name: str) -> MatrixAccount:
    return synapse.register_user(f"{name}{next(_names)}", PASSWORD)


class MatrixPeer:
    """A Matrix user with a session on the test Synapse."""

    def __init__(self, synapse: Synapse, account: MatrixAccount) -> None:
        self.synapse = synapse
        self.account = account
        self.user_id = account.user_id
        self.http = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {account.access_token}"},
            timeout=aiohttp.ClientTimeout(total=60),
        )
        self.since: str | None = None
        self.pending: list[Event] = []
        self._txn = itertools.count(1)

    async def close(self) -> None:
        await self.http.close()

    async def call(
        self,
        method: str,
        path: str,
        body: object = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        url = f"{self.synapse.url}/_matrix/client/v3{path}"
        async with self.http.request(method, url, json=body, params=params) as resp:
            data = await resp.json(content_type=None)
            if resp.status != 200:
                raise AssertionError(f"{method} {path} → HTTP {resp.status}: {data}")
            return data

    # -- rooms and events -------------------------------------------------------------

    async def create_dm(self, invitee: str) -> str:
        body = {"is_direct": True, "invite": [invitee], "preset": "trusted_private_chat"}
        return str((await self.call("POST", "/createRoom", body))["room_id"])

    async def create_room(self, name: str, invite: list[str] = ()) -> str:  # type: ignore[assignment]
        body = {"name": name, "invite": list(invite), "preset": "private_chat"}
        return str((await self.call("POST", "/createRoom", body))["room_id"])

    async def join(self, room_id: str) -> None:
        await self.call("POST", f"/join/{quote(room_id, safe='')}", {})

    async def create_public_room(self, name: str, alias: str | None = None) -> str:
        """A room anyone may join, published under ``#alias:server`` if given."""
        body: dict[str, Any] = {"name": name, "preset": "public_chat"}
        if alias:
            body["room_alias_name"] = alias
        return str((await self.call("POST", "/createRoom", body))["room_id"])

    async def leave(self, room_id: str) -> None:
        await self.call("POST", f"/rooms/{quote(room_id, safe='')}/leave", {})

    async def membership(self, room_id: str, action: str, user_id: str, reason: str = "") -> None:
        """``invite``, ``kick``, ``ban`` or ``unban`` ``user_id``."""
        body = {"user_id": user_id, **({"reason": reason} if reason else {})}
        await self.call("POST", f"/rooms/{quote(room_id, safe='')}/{action}", body)

    async def set_power(self, room_id: str, user_id: str, level: int) -> None:
        path = f"/rooms/{quote(room_id, safe='')}/state/m.room.power_levels/"
        levels = await self.call("GET", path)
        levels.setdefault("users", {})[user_id] = level
        await self.call("PUT", path, levels)

    async def send(self, room_id: str, event_type: str, content: dict[str, Any]) -> str:
        path = (
            f"/rooms/{quote(room_id, safe='')}/send/{event_type}/t{time.time_ns()}{next(self._txn)}"
        )
        return str((await self.call("PUT", path, content))["event_id"])

    async def send_text(self, room_id: str, body: str, **extra: Any) -> str:
        return await self.send(
            room_id, "m.room.message", {"msgtype": "m.text", "body": body, **extra}
        )

    async def react(self, room_id: str, target: str, key: str) -> str:
        content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}}
        return await self.send(room_id, "m.reaction", content)

    async def redact(self, room_id: str, event_id: str, reason: str = "") -> str:
        path = (
            f"/rooms/{quote(room_id, safe='')}/redact/{quote(event_id, safe='')}/r{time.time_ns()}"
        )
        content = {"reason": reason} if reason else {}
        return str((await self.call("PUT", path, content))["event_id"])

    async def typing(self, room_id: str, typing: bool) -> None:
        path = f"/rooms/{quote(room_id, safe='')}/typing/{quote(self.user_id, safe='')}"
        await self.call("PUT", path, {"typing": typing, "timeout": 30000})

    async def read(self, room_id: str, event_id: str) -> None:
        path = f"/rooms/{quote(room_id, safe='')}/receipt/m.read/{quote(event_id, safe='')}"
        await self.call("POST", path, {})

    async def upload(self, data: bytes, content_type: str, filename: str) -> str:
        url = f"{self.synapse.url}/_matrix/media/v3/upload"
        headers = {"Content-Type": content_type}
        async with self.http.post(
            url, data=data, params={"filename": filename}, headers=headers
        ) as resp:
            return str((await resp.json())["content_uri"])

    async def download(self, mxc: str) -> bytes:
        server_media = mxc.removeprefix("mxc://")
        url = f"{self.synapse.url}/_matrix/client/v1/media/download/{server_media}"
        async with self.http.get(url) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.read()

    # -- waiting for what happens -------------------------------------------------------

    async def start_sync(self) -> None:
        """Remember "now": waits see what happens from here on."""
        data = await self.call(
            "GET", "/sync", params={"filter": '{"room":{"timeline":{"limit":1}}}'}
        )
        self.since = data["next_batch"]

    async def _sync_once(self) -> None:
        params = {"timeout": "1000"}
        if self.since:
            params["since"] = self.since
        data = await self.call("GET", "/sync", params=params)
        self.since = data["next_batch"]
        rooms = data.get("rooms", {})
        for room_id in rooms.get("invite", {}):
            self.pending.append({"type": "invite", "room_id": room_id})
        for room_id, room in rooms.get("join", {}).items():
            for event in room.get("timeline", {}).get("events", []):
                self.pending.append({**event, "room_id": room_id})
            for event in room.get("ephemeral", {}).get("events", []):
                self.pending.append({**event, "room_id": room_id})

    async def wait_for(self, match: Callable[[Event], bool], timeout: float = WAIT) -> Event:
        """The first unconsumed event that ``match`` accepts (it is consumed)."""
        async with asyncio.timeout(timeout):
            while True:
                for n, event in enumerate(self.pending):
                    if match(event):
                        del self.pending[n]
                        return event
                await self._sync_once()

    async def wait_for_message(
        self, room_id: str, body: str | None = None, timeout: float = WAIT
    ) -> Event:
        def match(e: Event) -> bool:
            return (
                e.get("room_id") == room_id
                and e.get("type") == "m.room.message"
                and e.get("sender") != self.user_id
                and (body is None or e.get("content", {}).get("body") == body)
            )

        return await self.wait_for(match, timeout)

    async def wait_for_invite(self, timeout: float = WAIT) -> str:
        event = await self.wait_for(lambda e: e.get("type") == "invite", timeout)
        return str(event["room_id"])

    async def wait_for_member(self, room_id: str, user_id: str, membership: str = "join") -> Event:
        return await self.wait_for(
            lambda e: (
                e.get("room_id") == room_id
                and e.get("type") == "m.room.member"
                and e.get("state_key") == user_id
                and e.get("content", {}).get("membership") == membership
            )
        )


class EncryptedPeer:
    """A Matrix user on matrix-nio with end-to-end encryption and a store of its own, as
    a user of Element would be: it decrypts what it receives and encrypts what it sends
    to encrypted rooms (trusting every device, as a fresh client does)."""

    def __init__(self, synapse: Synapse, account: MatrixAccount, store: Path) -> None:
        store.mkdir(parents=True, exist_ok=True)
        config = nio.AsyncClientConfig(
            encryption_enabled=True, store_sync_tokens=True, request_timeout=60
        )
        self.client = nio.AsyncClient(
            synapse.url, account.user_id, store_path=str(store), config=config
        )
        self.account = account
        self.user_id = account.user_id
        self.pending: list[tuple[str, Any]] = []
        """(room ID, nio event) seen and not consumed yet; events are decrypted."""

    async def start(self) -> None:
        """Log in (a new device), publish its keys, and remember "now"."""
        answer = await self.client.login(self.account.password, device_name="peer")
        assert isinstance(answer, nio.LoginResponse), answer
        await self._sync_once(full_state=True)
        self.pending.clear()

    async def close(self) -> None:
        await self.client.close()

    async def _sync_once(self, full_state: bool = False) -> None:
        answer = await self.client.sync(timeout=1000, full_state=full_state)
        assert isinstance(answer, nio.SyncResponse), answer
        if self.client.should_upload_keys:
            await self.client.keys_upload()
        if self.client.should_query_keys:
            await self.client.keys_query()
        if self.client.should_claim_keys:
            await self.client.keys_claim(self.client.get_users_for_key_claiming())
        await self.client.send_to_device_messages()
        for room_id in answer.rooms.invite:
            self.pending.append((room_id, "invite"))
        for room_id, room in answer.rooms.join.items():
            self.pending.extend((room_id, event) for event in room.timeline.events)

    async def wait_for(self, match: Callable[[str, Any], bool], timeout: float = WAIT) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                for n, (room_id, event) in enumerate(self.pending):
                    if match(room_id, event):
                        del self.pending[n]
                        return event
                await self._sync_once()

    async def wait_for_text(self, room_id: str, body: str, timeout: float = WAIT) -> Any:
        """The message ``body`` from someone else in ``room_id``, decrypted."""
        return await self.wait_for(
            lambda r, e: (
                r == room_id
                and isinstance(e, nio.RoomMessageText)
                and e.sender != self.user_id
                and e.body == body
            ),
            timeout,
        )

    async def wait_for_member(self, room_id: str, user_id: str) -> None:
        await self.wait_for(
            lambda r, e: (
                r == room_id
                and isinstance(e, nio.RoomMemberEvent)
                and e.state_key == user_id
                and e.membership == "join"
            )
        )

    async def create_encrypted_room(self, invite: list[str], *, direct: bool) -> str:
        answer = await self.client.room_create(
            is_direct=direct,
            invite=invite,
            name=None if direct else "Secret lounge",
            preset=nio.RoomPreset.trusted_private_chat if direct else nio.RoomPreset.private_chat,
            initial_state=[nio.EnableEncryptionBuilder().as_dict()],
        )
        assert isinstance(answer, nio.RoomCreateResponse), answer
        return str(answer.room_id)

    async def join(self, room_id: str) -> None:
        answer = await self.client.join(room_id)
        assert isinstance(answer, nio.JoinResponse), answer

    async def send_text(self, room_id: str, body: str) -> str:
        """Send ``body``, encrypted, once the room's members are known to this client."""
        answer = await self.client.room_send(
            room_id,
            "m.room.message",
            {"msgtype": "m.text", "body": body},
            ignore_unverified_devices=True,
        )
        assert isinstance(answer, nio.RoomSendResponse), answer
        return str(answer.event_id)

    async def send_text_key_later(self, room_id: str, body: str) -> Callable[[], Any]:
        """Send ``body`` encrypted with a new Megolm session whose key is held back;
        returns the coroutine function that sends the key (a late key, as when a
        to-device message is delayed)."""
        client, olm = self.client, self.client.olm
        users = list(client.rooms[room_id].users)
        missing = client.get_missing_sessions(room_id)
        if missing:
            await client.keys_claim(missing)
        olm.outbound_group_sessions.pop(room_id, None)
        held = list(olm.share_group_session_parallel(room_id, users, True))
        olm.outbound_group_sessions[room_id].shared = True
        await self.send_text(room_id, body)

        async def send_key() -> None:
            for _sharing_with, to_device in held:
                path = f"/sendToDevice/m.room.encrypted/k{time.time_ns()}"
                url = f"{client.homeserver}/_matrix/client/v3{path}"
                headers = {"Authorization": f"Bearer {client.access_token}"}
                async with (
                    aiohttp.ClientSession() as http,
                    http.put(url, json=to_device, headers=headers) as resp,
                ):
                    assert resp.status == 200, await resp.text()

        return send_key

    async def react(self, room_id: str, target: str, key: str) -> None:
        content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}}
        answer = await self.client.room_send(
            room_id, "m.reaction", content, ignore_unverified_devices=True
        )
        assert isinstance(answer, nio.RoomSendResponse), answer

    async def send_file(
        self, room_id: str, data: bytes, name: str, mimetype: str = "image/png"
    ) -> str:
        """Upload ``data`` encrypted and send it as an encrypted ``m.image`` (or
        ``m.file``, for another type)."""
        upload, keys = await self.client.upload(
            io.BytesIO(data),
            content_type="application/octet-stream",
            filename=name,
            encrypt=True,
            filesize=len(data),
        )
        assert isinstance(upload, nio.UploadResponse), upload
        content = {
            "msgtype": "m.image" if mimetype.startswith("image/") else "m.file",
            "body": name,
            "info": {"mimetype": mimetype, "size": len(data)},
            "file": {**keys, "url": upload.content_uri},
        }
        answer = await self.client.room_send(
            room_id, "m.room.message", content, ignore_unverified_devices=True
        )
        assert isinstance(answer, nio.RoomSendResponse), answer
        return str(answer.event_id)

    async def fetch_file(self, event: Any) -> bytes:
        """The clear bytes of an encrypted file event (``RoomEncryptedImage`` …)."""
        media = event.url.removeprefix("mxc://")
        url = f"{self.client.homeserver}/_matrix/client/v1/media/download/{media}"
        headers = {"Authorization": f"Bearer {self.client.access_token}"}
        async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            data = await resp.read()
        return bytes(
            nio.crypto.decrypt_attachment(data, event.key["k"], event.hashes["sha256"], event.iv)
        )

    async def device_key(self, user_id: str, device_id: str) -> str:
        """The ed25519 key the homeserver publishes for ``user_id``'s ``device_id``."""
        url = f"{self.client.homeserver}/_matrix/client/v3/keys/query"
        headers = {"Authorization": f"Bearer {self.client.access_token}"}
        body: dict[str, dict[str, list[str]]] = {"device_keys": {user_id: []}}
        async with (
            aiohttp.ClientSession() as http,
            http.post(url, json=body, headers=headers) as resp,
        ):
            data = await resp.json()
        return str(data["device_keys"][user_id][device_id]["keys"][f"ed25519:{device_id}"])


def png(color: tuple[int, int, int], size: int = 32) -> bytes:
    """A square PNG of one colour."""
    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, format="PNG")
    return out.getvalue()


async def wait_for_avatar(
    client: Client, jid: str, color: tuple[int, int, int], timeout: float = WAIT
) -> None:
    """Until the vCard-temp photo of ``jid`` (a contact or a room) is of ``color``."""
    if "xep_0054" not in client.plugin:
        client.register_plugin("xep_0054")
    seen: object = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    iq = await client.plugin["xep_0054"].get_vcard(
                        jid=JID(jid), local=False, cached=False, timeout=WAIT
                    )
                except IqError as e:  # the gateway is (re)starting the user's session
                    seen = e.iq["error"]["condition"]
                    await asyncio.sleep(0.3)
                    continue
                data = iq["vcard_temp"]["PHOTO"]["BINVAL"]
                if data:
                    seen = Image.open(io.BytesIO(bytes(data))).convert("RGB").getpixel((0, 0))
                    if seen == color:
                        return
                await asyncio.sleep(0.3)
    except TimeoutError:
        raise AssertionError(f"the avatar of {jid} is {seen}, not {color}") from None
