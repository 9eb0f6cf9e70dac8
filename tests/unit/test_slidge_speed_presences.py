"""Slidge fix 32 (gateway/slidge_speed_presences.py): a detector (slidge still builds an
occupant's presence through its stanza plugins, in the order fix 32 copies), and a table
of occupants whose presence is built both ways and compared: same XML, same plugins."""

import copy
import inspect
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from slixmpp import JID, Presence
from slixmpp.xmlstream import XMLStream

from gateway import slidge_speed_presences as speed_presences


def _register_presence_plugins() -> None:
    """The Presence plugins slidge's XEP plugins register at start-up."""
    from slixmpp.plugins.xep_0045 import stanza as muc
    from slixmpp.plugins.xep_0153 import stanza as vcard_update
    from slixmpp.plugins.xep_0317 import stanza as hats
    from slixmpp.plugins.xep_0319 import stanza as idle
    from slixmpp.plugins.xep_0421 import stanza as occupant_id
    from slixmpp.xmlstream import register_stanza_plugin

    muc.register_plugins()
    register_stanza_plugin(Presence, vcard_update.VCardTempUpdate)
    register_stanza_plugin(Presence, hats.Hats)
    register_stanza_plugin(Presence, idle.Idle)
    register_stanza_plugin(Presence, occupant_id.OccupantId)


def test_bug32_presences_are_built_through_plugins_is_still_there() -> None:
    from slidge.group.participant import LegacyParticipant

    make = inspect.getsource(
        speed_presences._SLIDGE_MAKE_PRESENCE or LegacyParticipant._make_presence
    )
    # What fix 32 does by hand: if slidge's way changes, so must _participant_presence.
    for line in (
        "p = super()._make_presence(last_seen=last_seen, **presence_kwargs)",
        'p["muc"]["affiliation"] = self.affiliation',
        'p["muc"]["role"] = self.role',
        "if self.hats:",
        "codes = status_codes or set()",
        "if not self.muc.is_anonymous and not self.is_system:",
        "elif self.contact:",
        'p["muc"]["jid"] = self.contact.jid',
        "if a := self.contact.get_avatar():",
        'p["muc"]["status_codes"] = codes',
    ):
        assert line in make
    assert make.count('p["') == 9  # nothing else set on the presence


def _stream() -> Any:
    stream = XMLStream()
    stream.default_ns = "jabber:component:accept"
    return stream


def _mixin_presence(
    self: Any,
    *,
    last_seen: datetime | None = None,
    ptype: str | None = None,
    pstatus: str | None = None,
    pshow: str | None = None,
    **_: Any,
) -> Presence:
    """What slidge's ``PresenceMixin._make_presence`` gives (its cache left out: both
    ways call it alike), the same for both ways."""
    p = Presence(stream=self.xmpp.stream)
    p["from"] = self.jid
    if ptype:
        p["type"] = ptype
    if pshow:
        p["show"] = pshow
    if pstatus:
        p["status"] = pstatus
    if last_seen:
        p["idle"]["since"] = last_seen
    return p


def _occupant(kind: str) -> Any:
    """A LegacyParticipant whose stored row, room, contact and session are stand-ins."""
    from slidge.group.participant import LegacyParticipant

    occupant: Any = object.__new__(LegacyParticipant)
    avatar = SimpleNamespace(id="f00d") if kind == "avatar" else None
    occupant.muc = SimpleNamespace(
        is_anonymous=kind == "anonymous",
        jid=JID("#chan%irc@irc.example.org"),
        get_user_resources=lambda: iter(["gajim"]),
    )
    occupant.session = SimpleNamespace(
        user=SimpleNamespace(avatar_hash=None), user_jid=JID("romeo@example.org")
    )
    occupant.xmpp = SimpleNamespace(stream=_stream())
    occupant.is_system = kind == "system"
    occupant.contact = (
        None
        if kind == "system"
        else SimpleNamespace(jid=JID("juliet%irc@irc.example.org"), get_avatar=lambda: avatar)
    )
    occupant.stored = SimpleNamespace(
        is_user=kind == "user",
        resource="juliet",
        affiliation="" if kind == "no affiliation" else "member",
        role="moderator" if kind == "op" else "participant",
        hats=[["urn:h", "Op", 0.5]] if kind == "hats" else None,
    )
    return occupant


_KINDS = ["contact", "op", "anonymous", "system", "no affiliation", "user", "hats", "avatar"]
_BUILT_AS_XML = {"contact", "op", "anonymous", "system"}
_WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
_CALLS: list[dict[str, Any]] = [
    {},
    {"status_codes": set()},
    {"status_codes": {210}},
    {"status_codes": {110, 210, 100}},
    {"pshow": "away", "pstatus": "gone <fishing> & back"},
    {"last_seen": _WHEN, "pstatus": "x"},
    {"ptype": "unavailable", "status_codes": {303}},
    {"user_full_jid": JID("romeo@example.org/gajim")},
]


@pytest.mark.parametrize("kind", _KINDS)
def test_fix32_builds_what_slidge_builds(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from slidge.core.mixins.presence import PresenceMixin
    from slidge.group.participant import LegacyParticipant

    _register_presence_plugins()
    speed_presences.participant_presences_from_xml()
    assert LegacyParticipant._make_presence is speed_presences._participant_presence
    slidge = speed_presences._SLIDGE_MAKE_PRESENCE
    assert slidge is not None
    monkeypatch.setattr(PresenceMixin, "_make_presence", _mixin_presence)
    monkeypatch.setattr(speed_presences, "_MIXIN_MAKE_PRESENCE", _mixin_presence)
    for call in _CALLS:
        went_slidges_way: list[bool] = []

        def spy(*args: Any, _seen: list[bool] = went_slidges_way, **kwargs: Any) -> Any:
            _seen.append(True)
            return slidge(*args, **kwargs)

        slow = slidge(_occupant(kind), **copy.deepcopy(call))
        monkeypatch.setattr(speed_presences, "_SLIDGE_MAKE_PRESENCE", spy)
        fast = speed_presences._participant_presence(_occupant(kind), **copy.deepcopy(call))
        monkeypatch.setattr(speed_presences, "_SLIDGE_MAKE_PRESENCE", slidge)
        assert went_slidges_way == ([] if kind in _BUILT_AS_XML else [True]), call
        assert str(fast) == str(slow), call
        assert fast.loaded_plugins == slow.loaded_plugins, call
        assert fast["muc"]["affiliation"] == slow["muc"]["affiliation"]
        assert fast["muc"]["role"] == slow["muc"]["role"]
        assert fast["muc"]["jid"] == slow["muc"]["jid"]
        assert fast["muc"]["status_codes"] == slow["muc"]["status_codes"]
        fast["occupant-id"]["id"] = slow["occupant-id"]["id"] = "o1"  # as slidge's _send
        assert str(fast) == str(slow), call
        assert str(copy.copy(fast)) == str(copy.copy(slow)), call
