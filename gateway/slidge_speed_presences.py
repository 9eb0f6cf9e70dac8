"""Slidge speed fix for the presences slidge builds for room occupants: an occupant's
presence with its MUC user ``<x>`` built as XML. Part of :mod:`gateway.slidge_speed`,
which installs it and says what the fixes have in common.

32. slidge builds the MUC part of each occupant's presence
    (``LegacyParticipant._make_presence``: affiliation, role, the contact's JID and the
    status codes) through stanza plugins, each ``p["muc"][...]`` looking up and setting
    the item through ``__setitem__``, the status codes each a ``MUCStatus`` appended:
    an IRC JOIN sends one for the new nick, and a joining client gets one per occupant.
    :func:`_participant_presence` lets slidge's ``PresenceMixin`` make the presence (its
    cache of the last presence, show, status, idle: unchanged), then adds the ``<x>``
    with its item and status codes as XML and loads the plugin as parsing it would. The
    user's own presence, hats, a contact with an avatar, an occupant with neither a
    contact nor an anonymous room, or an affiliation or role that is not a plain word
    go slidge's way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from xml.etree import ElementTree as ET  # slixmpp's ET (``slixmpp.xmlstream.ET``)

from .slidge_speed_stanzas import _install

_MUC_USER = "http://jabber.org/protocol/muc#user"
_X = f"{{{_MUC_USER}}}x"
_ITEM = f"{{{_MUC_USER}}}item"
_STATUS = f"{{{_MUC_USER}}}status"

_SLIDGE_MAKE_PRESENCE: Callable[..., Any] | None = None
"""slidge's ``LegacyParticipant._make_presence``, set when fix 32 is installed."""
_MIXIN_MAKE_PRESENCE: Callable[..., Any] | None = None
"""The ``_make_presence`` slidge's calls first (``super()``: ``PresenceMixin``'s)."""


def _participant_presence(
    self: Any,
    *,
    last_seen: Any = None,
    status_codes: set[int] | None = None,
    user_full_jid: Any = None,
    **presence_kwargs: Any,
) -> Any:
    """Fix 32: slidge's ``LegacyParticipant._make_presence`` for another occupant with
    no hats and no avatar: the same XML, the ``muc`` plugin loaded as parsing would."""
    assert _SLIDGE_MAKE_PRESENCE is not None  # installed by participant_presences_from_xml
    assert _MIXIN_MAKE_PRESENCE is not None
    affiliation = self.affiliation
    role = self.role
    contact = None
    if (
        self.is_user
        or self.hats
        or not (isinstance(affiliation, str) and affiliation)
        or not (isinstance(role, str) and role)
        or not (
            self.muc.is_anonymous
            or self.is_system
            or ((contact := self.contact) is not None and not contact.get_avatar())
        )
    ):
        return _SLIDGE_MAKE_PRESENCE(
            self,
            last_seen=last_seen,
            status_codes=status_codes,
            user_full_jid=user_full_jid,
            **presence_kwargs,
        )
    p = _MIXIN_MAKE_PRESENCE(self, last_seen=last_seen, **presence_kwargs)
    x = ET.SubElement(p.xml, _X)
    item = {"affiliation": affiliation, "role": role}
    if contact is not None and not self.muc.is_anonymous and not self.is_system:
        item["jid"] = str(contact.jid)
    ET.SubElement(x, _ITEM, item)
    for code in set(status_codes or ()):  # the order slixmpp's set_status_codes gives
        ET.SubElement(x, _STATUS, {"code": str(code)})
    p.init_plugin("muc", existing_xml=x, reuse=False)
    return p


def participant_presences_from_xml() -> None:
    """Fix 32: install :func:`_participant_presence` for occupants (idempotent)."""
    global _SLIDGE_MAKE_PRESENCE, _MIXIN_MAKE_PRESENCE  # noqa: PLW0603 - slidge's, kept once
    from slidge.core.mixins.presence import PresenceMixin
    from slidge.group.participant import LegacyParticipant

    _MIXIN_MAKE_PRESENCE = PresenceMixin.__dict__["_make_presence"]
    _SLIDGE_MAKE_PRESENCE = (
        _install(LegacyParticipant, "_make_presence", _participant_presence)
        or _SLIDGE_MAKE_PRESENCE
    )
