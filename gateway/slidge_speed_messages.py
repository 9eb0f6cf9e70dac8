"""Slidge speed fixes for the messages slidge builds and sends in rooms: an occupant's
plain message and the user's echo built as XML, the archive's copy of a room message
made from its XML, a room message sent as itself to the user's first resource. Part of
:mod:`gateway.slidge_speed`, which installs them and says what they have in common.

16. slidge's archive copy of a room message (``MessageArchive.add``: a copy of the
    stanza, the MUC item set through its plugin, then ``HistoryMessage`` reads the
    stanza id and delay and deletes delay, markable and chat state through theirs) costs
    ~0.2 ms a message, ~25 % of an IRC line to XMPP and ~20 % of a line to IRC (its
    echo is archived too). :func:`archive_copy` makes the same XML from the message's
    XML (a C deep copy, three attributes, a namespace rename); messages with anything it
    does not handle the same way (a language, a delay, a chat state, no body...) take
    slidge's way. Fix 8 stores the :class:`ArchiveCopy` it returns.

17. slidge sends a room message to each of the user's resources as a copy of the one
    sent to the previous resource, the first one a copy of the message itself, which
    nothing uses after (the archive has its own copy, the caller gets the last one
    sent): ~10 % of an IRC line to XMPP for a user with one client.
    :func:`send_messages_uncopied` lets that first "copy" be the message itself; the
    others are copies as before.

30. slidge's echo of a message the user sent to a room (``LegacyMUC.echo``) sets its
    stanza id and occupant id through stanza plugins (each built and looked up on the
    message) and sends each of the user's resources a copy, the first a copy of the
    message itself, which nothing changes after: ~5 % of the CPU of a line to IRC
    (35 µs of slidge's echo, against 6 µs for this one).
    :func:`echo_directly` adds the two elements to the message's XML, as the plugins
    would, and sends the message itself to the first resource (copies to the others, as
    slidge does); a message that already holds either element goes slidge's way.

31. slidge builds each message an occupant says (``MessageMaker._make_message``) through
    stanza plugins: the body, the chat state, the ``markable`` hint and the stanza id
    (each plugin built and looked up, the chat state's removal of any other state
    first): ~38 µs of the ~400 µs an IRC line costs on its way to XMPP.
    :func:`participant_messages_from_xml` builds a plain one (a body, slidge's default
    hints, no reply, thread, link preview or carbon) as XML, then loads the plugins of
    its children as parsing it would (a copy of the message, which every further
    resource gets, is made that way): ~25 µs, the same stanza. Anything else goes
    slidge's way.
"""

from __future__ import annotations

import copy
import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from xml.etree import ElementTree as ET  # slixmpp's ET (``slixmpp.xmlstream.ET``)

from .slidge_speed_stanzas import _install

# --- fix 16: a room message's archive copy made from its XML ---------------------------

_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
_DELAY = "{urn:xmpp:delay}delay"
_MARKABLE = "{urn:xmpp:chat-markers:0}markable"
_STANZA_ID = "{urn:xmpp:sid:0}stanza-id"
_MUC_USER = "http://jabber.org/protocol/muc#user"
_CHAT_STATES = "{http://jabber.org/protocol/chatstates}"
_COMPONENT_NS = "{jabber:component:accept}"
_CLIENT_NS = "{jabber:client}"


@dataclass(frozen=True, slots=True)
class ArchiveCopy:
    """What the archive keeps of a room message (fix 8 writes it): the values of slidge's
    ``HistoryMessage`` (its id, its time and its stanza's XML, in the client namespace),
    and the sender's JID."""

    id: str
    when: Any  # datetime
    xml: Any  # ET.Element
    stream: Any  # the stanza's XML stream, for its namespaces
    author: Any  # JID

    @classmethod
    def of(cls, message: Any) -> ArchiveCopy:
        """From slidge's ``HistoryMessage``."""
        stanza = message.stanza
        return cls(message.id, message.when, stanza.xml, stanza.stream, stanza.get_from())

    def serialize(self) -> str:
        """The stanza as slixmpp's ``str(stanza)`` writes it (what slidge stores)."""
        stream = self.stream
        return _tostring()(
            self.xml,
            xmlns=stream.default_ns if stream is not None else "",
            stream=stream,
            top_level=stream is None,
        )


_MUC_X, _MUC_ITEM = f"{{{_MUC_USER}}}x", f"{{{_MUC_USER}}}item"


@functools.cache
def _tostring() -> Callable[..., str]:
    """slixmpp's ``tostring``, imported on first use (per message, an import statement
    costs more than this call; importing slixmpp with this module would load it before
    :mod:`gateway.lazy_imports` is installed)."""
    from slixmpp.xmlstream.tostring import tostring

    return tostring


def _archive_shape(msg: Any) -> dict[str, int] | None:
    """Fix 16: where the body, stanza-id, markable, chat state and MUC ``<x/>`` of `msg`
    are (each at most once; one body, with text and the message's language), or None if
    `msg` has what :func:`archive_copy` leaves to slidge's way."""
    xml = msg.xml
    body_tag = f"{{{msg.namespace}}}body"
    watched = {body_tag: "body", _STANZA_ID: "stanza_id", _MARKABLE: "markable", _MUC_X: "muc"}
    shape: dict[str, int] = {}
    for index, child in enumerate(xml):
        tag = child.tag
        if not isinstance(tag, str) or tag == _DELAY:
            return None
        name = "chat_state" if tag.startswith(_CHAT_STATES) else watched.get(tag)
        if name is not None:
            if name in shape:
                return None
            shape[name] = index
    body = xml[shape["body"]] if "body" in shape else None
    if body is None or not body.text or body.get(_XML_LANG) is not None:
        return None
    if "muc" in shape and len(xml[shape["muc"]].findall(_MUC_ITEM)) > 1:
        return None
    return shape


def archive_copy(msg: Any, item: tuple[str, str, str] | None) -> ArchiveCopy | None:
    """Fix 16: the archive's copy of a room message, as slidge's ``MessageArchive.add``
    makes it, from the XML: a copy of the message with a MUC ``<x><item/></x>`` (`item` is
    its role, affiliation and JID; None in an anonymous room), without ``markable`` and
    chat state, with a ``stanza-id`` (added empty, with a new id, if missing), in the
    client namespace. slidge builds it through stanza objects (a copy, three plugin
    lookups, four deletions): ~25 % of the CPU of an IRC line to XMPP. None when the
    message has anything this does not handle the same way (no body or an empty one, a
    body in another language, several bodies or chat states, a delay, several MUC items):
    the caller takes slidge's way then."""
    shape = _archive_shape(msg)
    if shape is None:
        return None
    new = copy.deepcopy(msg.xml)
    if item is not None:
        role, affiliation, jid = item
        x = new[shape["muc"]] if "muc" in shape else ET.SubElement(new, _MUC_X)
        attributes = x.find(_MUC_ITEM)
        if attributes is None:
            attributes = ET.SubElement(x, _MUC_ITEM)
        attributes.set("role", role)  # in slidge's order; an existing one keeps its place
        attributes.set("affiliation", affiliation)
        attributes.set("jid", jid)
    for index in sorted((shape.get("markable", -1), shape.get("chat_state", -1)), reverse=True):
        if index >= 0:
            del new[index]
    for element in new.iter():
        tag = element.tag
        if isinstance(tag, str) and tag.startswith(_COMPONENT_NS):
            element.tag = _CLIENT_NS + tag[len(_COMPONENT_NS) :]
    id_ = None
    if "stanza_id" in shape:
        id_ = msg.xml[shape["stanza_id"]].get("id")
    else:
        ET.SubElement(new, _STANZA_ID)
    return ArchiveCopy(
        id_ or uuid.uuid4().hex, datetime.now(tz=UTC), new, msg.stream, msg.get_from()
    )


# --- fix 17: a room message sent as itself to the user's first resource --------------

_SENDABLE: list[Any] = []
"""Fix 17: the messages a participant's ``_send`` is sending, each of which its loop may
send as itself once instead of copying it first."""
_SLIDGE_PARTICIPANT_SEND: Callable[..., Any] | None = None
_MESSAGE: type[Any] = type(None)
"""slixmpp's ``Message``, set when fix 17 is installed."""


def _copy_unless_sendable(stanza: Any) -> Any:
    """Fix 17: ``copy`` as ``slidge.group.participant`` calls it (once per resource of
    the user, on the stanza sent to the previous one): the message being sent itself the
    first time, a copy after."""
    if _SENDABLE and _SENDABLE[-1] is stanza:
        _SENDABLE.pop()
        return stanza
    return copy.copy(stanza)


def _participant_send(self: Any, stanza: Any, *args: Any, **kwargs: Any) -> Any:
    """Fix 17: slidge's ``LegacyParticipant._send``, with a room message sent as itself to
    the user's first resource (and copied for each further one, as slidge does)."""
    assert _SLIDGE_PARTICIPANT_SEND is not None  # installed by send_messages_uncopied
    full_jid = args[0] if args else kwargs.get("full_jid")
    archive_only = args[1] if len(args) > 1 else kwargs.get("archive_only", False)
    if full_jid is not None or archive_only or not isinstance(stanza, _MESSAGE):
        return _SLIDGE_PARTICIPANT_SEND(self, stanza, *args, **kwargs)
    _SENDABLE.append(stanza)
    try:
        return _SLIDGE_PARTICIPANT_SEND(self, stanza, *args, **kwargs)
    finally:
        if _SENDABLE and _SENDABLE[-1] is stanza:
            _SENDABLE.pop()  # not sent: no resource of the user is in the room


def send_messages_uncopied() -> None:
    """Fix 17: install :func:`_participant_send` (idempotent)."""
    global _SLIDGE_PARTICIPANT_SEND, _MESSAGE  # noqa: PLW0603 - slidge's original, kept once
    from slidge.group import participant
    from slixmpp import Message

    _MESSAGE = Message
    participant.copy = _copy_unless_sendable  # type: ignore[assignment,attr-defined]
    cls = participant.LegacyParticipant
    _SLIDGE_PARTICIPANT_SEND = _install(cls, "_send", _participant_send) or (
        _SLIDGE_PARTICIPANT_SEND
    )


# --- fix 30: the echo of what the user sends to a room, without plugins and a copy -----

_OCCUPANT_ID = "{urn:xmpp:occupant-id:0}occupant-id"
_SLIDGE_ECHO: Callable[..., Any] | None = None


def _plugin_free(msg: Any, names: tuple[str, ...], tags: tuple[str, ...]) -> bool:
    """Whether `msg` has none of these plugins loaded and none of these elements."""
    if any(attrib in names for attrib, _lang in msg.plugins):
        return False
    return all(msg.xml.find(tag) is None for tag in tags)


async def _muc_echo(self: Any, msg: Any, legacy_msg_id: str | None = None) -> str:
    """Fix 30: slidge's ``LegacyMUC.echo``: the same stanza id and occupant id elements,
    the same archive row, the same stanzas to the user's resources."""
    assert _SLIDGE_ECHO is not None  # installed by echo_directly
    if not (legacy_msg_id is None or isinstance(legacy_msg_id, str)) or not _plugin_free(
        msg, ("stanza_id", "occupant-id"), (_STANZA_ID, _OCCUPANT_ID)
    ):
        result: str = await _SLIDGE_ECHO(self, msg, legacy_msg_id)
        return result
    msg.set_from(self.user_muc_jid)
    stanza_id = legacy_msg_id or str(uuid.uuid4())
    ET.SubElement(msg.xml, _STANZA_ID, {"id": stanza_id, "by": str(self.jid)})
    user_part = await self.get_user_participant()
    occupant_id = user_part.stored.occupant_id
    ET.SubElement(msg.xml, _OCCUPANT_ID, {"id": occupant_id} if occupant_id else {})
    self.archive.add(msg, user_part)
    first = True
    for user_full_jid in self.user_full_jids():
        self.log.debug("Echoing to %s", user_full_jid)
        if not first:
            msg = copy.copy(msg)
        first = False
        msg.set_to(user_full_jid)
        msg.send()
    return stanza_id


def echo_directly() -> None:
    """Fix 30: install :func:`_muc_echo` (idempotent)."""
    global _SLIDGE_ECHO  # noqa: PLW0603 - slidge's original, kept once
    from slidge.group.room import LegacyMUC

    _SLIDGE_ECHO = _install(LegacyMUC, "echo", _muc_echo) or _SLIDGE_ECHO


# --- fix 31: an occupant's plain message built as XML -------------------------------

_ACTIVE = f"{_CHAT_STATES}active"
_MARKABLE_HINT = frozenset({"markable"})
_PLAIN_MESSAGE_ARGUMENTS = frozenset(
    {
        "mbody",
        "hints",
        "legacy_msg_id",
        "when",
        "state",
        "reply_to",
        "carbon",
        "link_previews",
        "thread",
    }
)
"""What slidge's ``send_text`` passes; anything else (``mtype``, ``mto``...) goes its way."""
_SLIDGE_MAKE_MESSAGE: Callable[..., Any] | None = None
_STRIP_ILLEGAL_CHARS: Callable[[str, str], str] | None = None
"""slidge's ``strip_illegal_chars``, set when fix 31 is installed."""


def _participant_message(self: Any, *args: Any, **kwargs: Any) -> Any:
    """Fix 31: slidge's ``MessageMaker._make_message`` for an occupant: a message with a
    body, no chat state asked, slidge's default hints of a room message (``markable``)
    or none, and nothing else, built as XML; the same XML, and the same plugins loaded,
    as slidge's way. (Everything it uses is bound once: three imports here cost ~1 µs
    a message.)"""
    assert _SLIDGE_MAKE_MESSAGE is not None  # installed by participant_messages_from_xml
    assert _STRIP_ILLEGAL_CHARS is not None
    body = kwargs.get("mbody")
    hints = kwargs.get("hints", ())
    legacy_msg_id = kwargs.get("legacy_msg_id")
    if (
        args
        or not (legacy_msg_id is None or (isinstance(legacy_msg_id, str) and legacy_msg_id))
        or not kwargs.keys() <= _PLAIN_MESSAGE_ARGUMENTS
        or not isinstance(body, str)
        or not body
        or any(kwargs.get(name) for name in ("state", "reply_to", "carbon", "link_previews"))
        or kwargs.get("thread")
        or not self.USE_STANZA_ID
        or (hints and frozenset(hints) != _MARKABLE_HINT)
    ):
        return _SLIDGE_MAKE_MESSAGE(self, *args, **kwargs)
    msg = self.xmpp.Message(sfrom=self.jid, stype=self.mtype, sto=None)
    xml = msg.xml
    ET.SubElement(xml, f"{{{msg.namespace}}}body").text = _STRIP_ILLEGAL_CHARS(body, "\ufffd")
    children = [ET.SubElement(xml, _ACTIVE)]  # slidge's state of a message with a body
    if hints:
        children.append(ET.SubElement(xml, _MARKABLE))
    if legacy_msg_id is not None:
        msg.set_id(legacy_msg_id)
    stanza_id = legacy_msg_id if legacy_msg_id is not None else str(uuid.uuid4())
    children.append(ET.SubElement(xml, _STANZA_ID, {"id": stanza_id, "by": str(self.muc.jid)}))
    tags = msg.plugin_tag_map
    for child in children:  # as ElementBase.__init__ does for a parsed message
        msg.init_plugin(tags[child.tag].plugin_attrib, existing_xml=child, reuse=False)
    self._add_delay(msg, kwargs.get("when"))
    return msg


def participant_messages_from_xml() -> None:
    """Fix 31: install :func:`_participant_message` for occupants (idempotent)."""
    global _SLIDGE_MAKE_MESSAGE, _STRIP_ILLEGAL_CHARS  # noqa: PLW0603 - slidge's, kept once
    from slidge.core.mixins.message_maker import MessageMaker
    from slidge.group.participant import LegacyParticipant
    from slidge.util import strip_illegal_chars

    _STRIP_ILLEGAL_CHARS = strip_illegal_chars
    _SLIDGE_MAKE_MESSAGE = MessageMaker.__dict__["_make_message"]
    if LegacyParticipant.__dict__.get("_make_message") is not _participant_message:
        LegacyParticipant._make_message = _participant_message  # type: ignore[method-assign]
