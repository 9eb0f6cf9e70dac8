"""A real XMPP client for the end-to-end tests: slixmpp, logged in to the test Prosody.

It does what a person does in Gajim or Conversations: registers with a gateway (XEP-0077
or the ad-hoc command), watches its roster, sends and corrects messages, unregisters.
Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import slixmpp
from slixmpp import JID
from slixmpp.stanza import Message

WAIT = 20.0


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid: str, password: str) -> None:
        super().__init__(jid, password)
        self.enable_direct_tls = False
        self.enable_starttls = False
        self.enable_plaintext = True
        self.plugin["feature_mechanisms"].unencrypted_scram = True
        self.plugin["feature_mechanisms"].unencrypted_plain = True
        for plugin in ("xep_0004", "xep_0030", "xep_0050", "xep_0077", "xep_0199", "xep_0308"):
            self.register_plugin(plugin)
        self.messages: asyncio.Queue[Message] = asyncio.Queue()
        self.roster_pushes: asyncio.Queue[JID] = asyncio.Queue()
        self.presences: asyncio.Queue[slixmpp.Presence] = asyncio.Queue()
        self.add_event_handler("message", self.messages.put_nowait)
        self.add_event_handler("message_error", self.messages.put_nowait)
        self.add_event_handler("presence", self.presences.put_nowait)
        self.add_event_handler("roster_update", self._on_roster_update)
        self.add_event_handler("session_start", self._on_start)
        self._started: asyncio.Future[None] = asyncio.get_event_loop().create_future()

    def _on_roster_update(self, iq: slixmpp.Iq) -> None:
        for jid in iq["roster"]["items"]:
            self.roster_pushes.put_nowait(JID(jid))

    async def _on_start(self, _event: object) -> None:
        await self.get_roster()
        self.send_presence()
        if not self._started.done():
            self._started.set_result(None)

    async def start(self, port: int) -> None:
        self.connect("127.0.0.1", port)
        async with asyncio.timeout(WAIT):
            await self._started

    async def stop(self) -> None:
        self.disconnect()
        try:
            async with asyncio.timeout(5):
                await self.disconnected
        except TimeoutError:
            self.abort()
        # slixmpp leaves these running after a disconnect; end them while the loop lives.
        for task in (self._run_out_filters, self._current_connection_attempt):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def register(self, gateway: str, **fields: str) -> slixmpp.Iq:
        """XEP-0077 with a data form, as Gajim does."""
        form_iq = await self.plugin["xep_0077"].get_registration(jid=gateway, timeout=WAIT)
        assert form_iq["register"]["form"]["fields"], "the gateway offered no form"
        submit = self.plugin["xep_0004"].make_form(ftype="submit")
        submit.add_field("FORM_TYPE", value="jabber:iq:register", ftype="hidden")
        for var, value in fields.items():
            submit.add_field(var, value=value)
        iq = self.make_iq_set(ito=gateway)
        iq["register"].append(submit)
        return await iq.send(timeout=WAIT)  # type: ignore[no-any-return]

    async def unregister(self, gateway: str) -> slixmpp.Iq:
        iq = self.make_iq_set(ito=gateway)
        iq["register"]["remove"] = True
        return await iq.send(timeout=WAIT)  # type: ignore[no-any-return]

    async def run_command(self, jid: str, node: str, **fields: str) -> slixmpp.Iq:
        """Execute an ad-hoc command (XEP-0050) as a person would: fill in ``fields`` where
        a form asks for them, keep every other default, and go on until it completes."""
        result = await self.plugin["xep_0050"].send_command(jid, node, timeout=WAIT)
        for _ in range(5):
            command = result["command"]
            if command["status"] != "executing":
                return result  # type: ignore[no-any-return]
            submit = self.plugin["xep_0004"].make_form(ftype="submit")
            for var, field in command["form"].get_fields().items():
                if field["type"] == "fixed" or not var:
                    continue
                submit.add_field(var, value=fields.get(var, field["value"]))
            iq = self.make_iq_set(ito=jid)
            iq["command"]["node"] = node
            iq["command"]["sessionid"] = command["sessionid"]
            iq["command"]["action"] = "complete" if "complete" in command["actions"] else "next"
            iq["command"].append(submit)
            result = await iq.send(timeout=WAIT)
        raise AssertionError(f"command {node} did not complete in 5 steps")

    def send_chat(self, to: str, body: str, **extra: Any) -> Message:
        msg = self.make_message(mto=to, mbody=body, mtype="chat")
        msg["id"] = self.new_id()
        if replace := extra.get("replace"):
            msg["replace"]["id"] = replace
        msg.send()
        return msg

    async def next_message(
        self, sender: str, *, with_body: bool = True, timeout: float = WAIT
    ) -> Message:
        """The next message from bare JID ``sender`` (others are skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.messages.get()
                if msg["from"].bare == sender and (msg["body"] or not with_body):
                    return msg

    async def next_roster_push(self, jid: str, timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout):
            while (await self.roster_pushes.get()).bare != jid:
                pass

    async def next_presence(
        self, sender: str, ptype: str = "available", timeout: float = WAIT
    ) -> slixmpp.Presence:
        async with asyncio.timeout(timeout):
            while True:
                pres = await self.presences.get()
                if pres["from"].bare == sender and pres["type"] == ptype:
                    return pres
