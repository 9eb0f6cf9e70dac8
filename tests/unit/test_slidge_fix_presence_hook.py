"""slidge fix 50: a plugin's handler in front of slidge's presence handlers.

The detectors fail the day slidge stops refusing MUC nick changes, gives plugins a hook
for joins, or keeps its handlers elsewhere (then look again at fix 50 and the IRC
gateway). The e2e proof is the IRC nick change (``tests/e2e/test_irc.py``) and
``auto_register`` (``tests/e2e/test_irc_private.py``) stories.
"""

from __future__ import annotations

import inspect
from typing import Any

from slidge.core.dispatcher.muc.misc import MucMiscMixin
from slidge.core.dispatcher.presence import PresenceHandlerMixin
from slidge.core.dispatcher.session_dispatcher import SessionDispatcher
from slidge.core.gateway import BaseGateway
from slixmpp.xmlstream import XMLStream

from gateway import slidge_fixes


def test_bug50_slidge_keeps_its_presence_handlers_private_is_still_there() -> None:
    assert "self.__dispatcher = SessionDispatcher(self)" in inspect.getsource(BaseGateway.__init__)
    for event, method in slidge_fixes.SLIDGE_HANDLERS.items():
        assert hasattr(SessionDispatcher, method), "slidge changed: look again at fix 50"
        registration = f'add_event_handler("{event}", self.{method})'
        module = inspect.getmodule(getattr(SessionDispatcher, method))
        assert module is not None
        assert registration in inspect.getsource(module)


def test_bug50_slidge_refuses_muc_nick_changes_is_still_there() -> None:
    source = inspect.getsource(PresenceHandlerMixin.on_presence)
    assert "does not let you change your nickname in groups" in source


def test_bug50_join_of_an_unregistered_jid_is_refused_is_still_there() -> None:
    join = inspect.getsource(MucMiscMixin.on_groupchat_join)
    assert "get_muc_from_stanza(p)" in join
    lookup = inspect.getsource(MucMiscMixin.get_muc_from_stanza)
    assert "self._get_session(iq, logged=True)" in lookup
    assert 'raise XMPPError("registration-required")' in inspect.getsource(
        MucMiscMixin._get_session_from_jid
    )


class _Dispatcher:
    """slidge's two handlers, recording what reaches them."""

    def __init__(self, stream: XMLStream) -> None:
        self.seen: list[tuple[str, str]] = []
        stream.add_event_handler("presence", self.on_presence)
        stream.add_event_handler("groupchat_join", self.on_groupchat_join)

    async def on_presence(self, presence: str) -> None:
        self.seen.append(("slidge presence", presence))

    async def on_groupchat_join(self, presence: str) -> None:
        self.seen.append(("slidge join", presence))


class _Gateway(XMLStream):
    def __init__(self) -> None:
        super().__init__()
        self._BaseGateway__dispatcher = _Dispatcher(self)


async def test_handlers_stand_in_front_and_choose_to_hand_on() -> None:
    gateway = _Gateway()
    slidge: Any = gateway._BaseGateway__dispatcher

    async def nick_changes(presence: str, slidge_handler: slidge_fixes.SlidgeHandler) -> None:
        slidge.seen.append(("plugin presence", presence))
        if presence != "nick change":  # the plugin handles nick changes itself
            await slidge_handler(presence)

    async def auto_register(presence: str, slidge_handler: slidge_fixes.SlidgeHandler) -> None:
        slidge.seen.append(("plugin join", presence))
        await slidge_handler(presence)

    installed = slidge_fixes.handle_before_slidge(
        gateway, {"presence": nick_changes, "groupchat_join": auto_register}
    )
    assert installed
    await gateway.event_async("presence", "nick change")
    await gateway.event_async("presence", "away")
    await gateway.event_async("groupchat_join", "join")
    assert slidge.seen == [
        ("plugin presence", "nick change"),
        ("plugin presence", "away"),
        ("slidge presence", "away"),
        ("plugin join", "join"),
        ("slidge join", "join"),
    ]
    assert gateway.event_handled("presence") == gateway.event_handled("groupchat_join") == 1


async def test_without_slidges_dispatcher_nothing_changes() -> None:
    stream = XMLStream()
    seen: list[str] = []

    async def handler(presence: str, slidge_handler: slidge_fixes.SlidgeHandler) -> None:
        seen.append(presence)

    assert not slidge_fixes.handle_before_slidge(stream, {"presence": handler})
    await stream.event_async("presence", "away")
    assert seen == []
    assert stream.event_handled("presence") == 0
