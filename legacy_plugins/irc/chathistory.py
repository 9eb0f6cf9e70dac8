"""IRCv3 `chathistory`: back-fill a room's archive from the server when joining.

When the server granted `chathistory` (or `draft/chathistory`), every JOIN of ours — the
first one, and each rejoin after a reconnection — is followed, once the member list has
arrived, by one `CHATHISTORY LATEST #chan <anchor> <n>`: the newest `n` messages
(`chathistory_count`, capped by the server's `CHATHISTORY=` limit), all of them if the
room's archive is empty (`*`), else only those after the archive's last message
(`timestamp=…`, a little earlier to allow for clock differences, or `msgid=…` where the
server takes no timestamps). LATEST rather than AFTER: when more was missed than the
count allows, the newest messages are the ones worth having. The server answers with a
`chathistory` batch; its messages carry their server-time and msgid (the connection
marks them `history`), and `Backfill.is_new` keeps out what the archive already holds
(same msgid; without a msgid, anything not newer than the archive's last message), so
nothing is shown twice — also for InspIRCd's `chanhistory` replays on rejoin. Ergo tells
clients that did not ask for `draft/event-playback` (we don't: its JOINs and PARTs would
read as live ones) of the joins, parts and such in the history as PRIVMSGs from its
`HistServ` ("bob joined the channel"): summaries of events, not anybody's messages, so
they are not shown either.

`Backfill` is sans-IO: fed the connection's events with lookups into the archive passed
in, it returns the lines to send. The slidge glue below it (`observe`, `is_new`) reads
the archive of the user's room.

No server in Debian bookworm offers chathistory (ngIRCd 26, InspIRCd 3.15, ircd-hybrid,
ircu, irc2); Ergo, packaged from trixie on, does: `tests/e2e/test_irc_ergo.py` runs
it (see `gateway.localservers.ergo`), `tests/unit/test_irc_chathistory.py` has the
cases as IRC lines in and out.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from . import events as ev
from .client import IrcClient, IrcClientError
from .events import Channel, ISupport
from .protocol import LocalProtocolError, Message

if TYPE_CHECKING:
    from .group import MUC
    from .session import Session

__all__ = ["CAPS", "Anchor", "Backfill", "is_new", "observe", "request", "summary"]

log = logging.getLogger(__name__)

CAPS = frozenset({"chathistory", "draft/chathistory"})
SUMMARY_SENDERS = frozenset({"histserv"})
"""Who sends a server's summaries of history events as PRIVMSGs (Ergo's `HistServ`)."""
CLOCK_MARGIN = timedelta(seconds=30)
"""The archive stamps live messages with our clock, the server with its own: ask from a
little earlier and let the msgids weed out what the archive has."""


@dataclass(frozen=True, slots=True)
class Anchor:
    """The archive's last message: its time, and its msgid if the server gave one."""

    time: datetime
    msgid: str | None = None


def offered(caps: Iterable[str]) -> bool:
    return not CAPS.isdisjoint(caps)


def server_limit(isupport: ISupport) -> int | None:
    """The most messages the server returns per request (`CHATHISTORY=`), None if it
    set no limit (absent or 0)."""
    value = isupport.raw.get("CHATHISTORY", "")
    return int(value) if value.isdecimal() and int(value) > 0 else None


def timestamp(when: datetime) -> str:
    """IRCv3 time: `2024-01-02T03:04:05.678Z`."""
    when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def request(
    channel: Channel, anchor: Anchor | None, count: int, isupport: ISupport
) -> Message | None:
    """The CHATHISTORY line for `channel`, or None when `count` is 0."""
    limit = min(count, server_limit(isupport) or count)
    if limit <= 0:
        return None
    kinds = isupport.raw.get("MSGREFTYPES")
    accepted = kinds.split(",") if kinds else ["timestamp", "msgid"]
    reference = "*"
    if anchor is not None and "timestamp" in accepted:
        reference = f"timestamp={timestamp(anchor.time - CLOCK_MARGIN)}"
    elif anchor is not None and _usable(anchor.msgid) and "msgid" in accepted:
        reference = f"msgid={anchor.msgid}"
    return Message.of("CHATHISTORY", "LATEST", channel, reference, str(limit))


def _usable(msgid: str | None) -> bool:
    """A msgid that fits in a middle parameter (ours may be UUIDs, which do too)."""
    return msgid is not None and msgid != "" and " " not in msgid and msgid[0] != ":"


class Backfill:
    """The chathistory requests of one IRC connection, across its reconnections."""

    def __init__(self) -> None:
        self._pending: set[str] = set()
        self._anchors: dict[str, Anchor | None] = {}

    def on_event(
        self,
        event: ev.Event,
        *,
        caps: Iterable[str],
        isupport: ISupport,
        count: int,
        last_archived: Callable[[Channel], Anchor | None],
    ) -> list[Message]:
        """Lines to send after `event`: one request per JOIN of ours, when the member
        list is complete (`last_archived` is read at the JOIN, before anything new)."""
        if isinstance(event, ev.Joined) and event.own and count > 0 and offered(caps):
            key = isupport.casefold(event.channel)
            self._anchors[key] = last_archived(event.channel)
            self._pending.add(key)
        elif isinstance(event, ev.ChannelMembers):
            key = isupport.casefold(event.channel)
            if key in self._pending:
                self._pending.discard(key)
                line = request(event.channel, self._anchors.get(key), count, isupport)
                return [line] if line is not None else []
        elif isinstance(event, ev.Parted | ev.Kicked) and event.own:
            self._pending.discard(isupport.casefold(event.channel))
        return []

    def is_new(
        self, event: ev.MessageReceived, isupport: ISupport, archived: Callable[[str], bool]
    ) -> bool:
        """Whether a message belongs in the archive: live ones always; history when the
        archive lacks its msgid (without one: when newer than the archive's last), and
        it is not the server's summary of an event (`summary`)."""
        if not event.history or event.channel is None:
            return True
        if summary(event):
            return False
        if event.msgid:
            return not archived(event.msgid)
        anchor = self._anchors.get(isupport.casefold(event.channel))
        return anchor is None or event.time is None or event.time > anchor.time


def summary(event: ev.MessageReceived) -> bool:
    """Whether a history line is a server's summary of an event (Ergo's HistServ: "bob
    joined the channel") rather than somebody's message."""
    sender = event.sender
    return (
        event.history
        and sender.nick.casefold() in SUMMARY_SENDERS
        and (sender.user or "").casefold() in SUMMARY_SENDERS
    )


# --- slidge glue -----------------------------------------------------------------------

_BACKFILLS: weakref.WeakKeyDictionary[IrcClient, Backfill] = weakref.WeakKeyDictionary()


def _backfill(client: IrcClient) -> Backfill:
    backfill = _BACKFILLS.get(client)
    if backfill is None:
        backfill = _BACKFILLS[client] = Backfill()
    return backfill


async def observe(session: Session, client: IrcClient, event: ev.Event) -> None:
    """Send the chathistory request `event` calls for (see `Backfill.on_event`)."""
    if not isinstance(event, ev.Joined | ev.ChannelMembers | ev.Parted | ev.Kicked):
        return
    anchors: dict[Channel, Anchor | None] = {}
    if isinstance(event, ev.Joined) and event.own and offered(client.state.enabled_caps):
        anchors[event.channel] = last_archived(await session.room(client, event.channel))
    lines = _backfill(client).on_event(
        event,
        caps=client.state.enabled_caps,
        isupport=client.state.isupport,
        count=session.cfg.chathistory_count,
        last_archived=anchors.get,
    )
    for line in lines:
        log.debug("back-filling %s from %s", line.params[1], client.name)
        try:
            client.send(line.command, *line.params)
        except (IrcClientError, LocalProtocolError) as e:  # the next (re)join asks again
            log.info("no back-fill of %s from %s: %s", line.params[1], client.name, e)


def is_new(client: IrcClient, muc: MUC, event: ev.MessageReceived) -> bool:
    """Whether `event` is not in `muc`'s archive yet (history may repeat it)."""
    if not event.history:
        return True
    return _backfill(client).is_new(
        event, client.state.isupport, lambda msgid: archived(muc, msgid)
    )


def last_archived(muc: MUC) -> Anchor | None:
    """The last message of `muc`'s archive."""
    if muc.stored.id is None:
        return None
    store = muc.xmpp.store
    with store.session() as orm:
        last = store.mam.get_last(orm, muc.stored.id)
        if last is None:
            return None
        return Anchor(last.timestamp.replace(tzinfo=UTC), last.legacy_id)


def archived(muc: MUC, msgid: str) -> bool:
    """Whether `muc`'s archive holds the message with this legacy id (server msgid)."""
    if muc.stored.id is None:
        return False
    store = muc.xmpp.store
    with store.session() as orm:
        return store.mam.get_by_legacy_id(orm, muc.stored.id, msgid) is not None
