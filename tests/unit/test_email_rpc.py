"""The asyncio JSON-RPC client of the email plugin, against a fake server on a pipe.

The fake speaks the same line protocol as ``deltachat-rpc-server``: one JSON request per
line on stdin, one response per line on stdout; ``get_next_event`` waits for an event.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from legacy_plugins.email.rpc import DeltaChatRpc, RpcError, RpcServerGone, find_server

FAKE = r"""
import json, os, sys, threading, time
lock = threading.Lock()
def answer(msg):
    with lock:
        sys.stdout.write(json.dumps(msg) + "\n"); sys.stdout.flush()
def handle(req):
    method, params, rid = req["method"], req["params"], req["id"]
    if method == "echo":
        answer({"jsonrpc": "2.0", "id": rid, "result": params})
    elif method == "slow":
        time.sleep(params[0]); answer({"jsonrpc": "2.0", "id": rid, "result": "late"})
    elif method == "fail":
        answer({"jsonrpc": "2.0", "id": rid, "error": {"code": -1, "message": "no such chat"}})
    elif method == "get_next_event":
        time.sleep(0.05)
        answer({"jsonrpc": "2.0", "id": rid,
                "result": {"contextId": 1, "event": {"kind": "ImapInboxIdle"}}})
    elif method == "die":
        sys.stdout.write("not json\n"); sys.stdout.flush(); os._exit(3)
for line in sys.stdin:
    threading.Thread(target=handle, args=(json.loads(line),), daemon=True).start()
"""


@pytest.fixture
async def rpc(tmp_path: Path) -> AsyncIterator[DeltaChatRpc]:
    script = tmp_path / "fake_server.py"
    script.write_text(FAKE)
    client = DeltaChatRpc(tmp_path / "accounts", command=[sys.executable, str(script)])
    await client.start()
    yield client
    await client.close()


async def test_answers_are_matched_to_requests(rpc: DeltaChatRpc) -> None:
    slow = asyncio.create_task(rpc.call("slow", 0.3))
    assert await rpc.call("echo", 1, "two", {"three": 3}) == [1, "two", {"three": 3}]
    assert await slow == "late"


async def test_errors_and_timeouts_are_rpc_errors(rpc: DeltaChatRpc) -> None:
    with pytest.raises(RpcError, match="no such chat") as err:
        await rpc.call("fail")
    assert err.value.method == "fail"
    with pytest.raises(RpcError, match="no answer within"):
        await rpc.call("slow", 2, timeout=0.1)


async def test_events(rpc: DeltaChatRpc) -> None:
    event = await rpc.next_event()
    assert event == {"contextId": 1, "event": {"kind": "ImapInboxIdle"}}


async def test_a_dead_server_fails_pending_and_later_calls(rpc: DeltaChatRpc) -> None:
    pending = asyncio.create_task(rpc.call("slow", 5))
    await asyncio.sleep(0.1)
    with pytest.raises(RpcServerGone):
        await rpc.call("die")
    with pytest.raises(RpcServerGone):
        await pending
    with pytest.raises(RpcServerGone):
        await rpc.call("echo")
    assert not rpc.running


async def test_close_is_idempotent(rpc: DeltaChatRpc) -> None:
    await rpc.close()
    await rpc.close()
    with pytest.raises(RpcServerGone):
        await rpc.call("echo")


def test_the_pinned_server_is_installed() -> None:
    assert Path(find_server()).name == "deltachat-rpc-server"
