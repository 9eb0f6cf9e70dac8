"""Services accounts of the people in a channel, shown as a hat (XEP-0317) on occupants.

The server says who is logged in to which account four ways: the account of someone
joining (IRCv3 `extended-join`), the account of whoever sent a message (`account-tag`),
logins and logouts as they happen (`account-notify`'s ACCOUNT), and, for the people
already in a channel the user joins, the WHOX reply to the WHO the client sends after
joining when the server offers WHOX and accounts (`client.ACCOUNT_CAPS`). The channel
tracker keeps what it learnt (`ChannelTracker.account_of`); `observe` shows it on the
occupant as a hat titled "IRC account: NAME" — which tells a nick's owner apart from
someone who took the nick — and takes the hat off at logout. An occupant is only touched
when what it shows changes, not for every message. Without WHOX, nothing is known of
people already in the channel until they speak, log in or out, or join again.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from slidge.util.types import Hat

from . import events as ev
from .client import IrcClient
from .events import Channel, Prefix

if TYPE_CHECKING:
    from .group import Participant
    from .session import Session

__all__ = ["HAT_URI", "account_hats", "filled", "observe"]

HAT_URI = "urn:passerelle:irc:account:"
"""Followed by the account name: one hat per account, as XEP-0317 identifies hats by URI."""

# What each occupant shows: folded channel -> folded nick -> account, per connection
# (by channel, so that forgetting one room or one nick does not read every occupant of
# every room: `_forget` runs for every event).
_SHOWN: weakref.WeakKeyDictionary[IrcClient, dict[str, dict[str, str | None]]]
_SHOWN = weakref.WeakKeyDictionary()


def _shown(client: IrcClient, channel: str) -> dict[str, str | None]:
    """What the occupants of `channel` (folded) show, for `client`."""
    return _SHOWN.setdefault(client, {}).setdefault(channel, {})


def account_hats(account: str | None) -> list[Hat]:
    """The hats for an occupant logged in to `account` (none when not logged in)."""
    return [Hat(HAT_URI + account, f"IRC account: {account}")] if account else []


def _nick_of(event: ev.Event) -> str | None:
    """Whose account `event` may tell (or change)."""
    if isinstance(event, ev.Joined) and not event.own:
        return event.nick
    if isinstance(event, ev.MessageReceived) and not event.own and event.account is not None:
        return event.sender.nick
    if isinstance(event, ev.Unhandled) and event.command == "ACCOUNT" and event.source:
        return Prefix.parse(event.source).nick
    if isinstance(event, ev.WhoEntry) and event.account is not None:
        return event.mask.nick
    return None


def _forget(client: IrcClient, event: ev.Event) -> None:
    """What an occupant shows is checked again after it left or was renamed, and a whole
    room's after we (re)joined it or left it."""
    shown = _SHOWN.get(client)
    if not shown:
        return
    if isinstance(event, ev.Joined | ev.Parted | ev.Kicked) and event.own:
        shown.pop(client.fold(event.channel), None)
        return
    if isinstance(event, ev.Parted | ev.Kicked | ev.Quit):
        nick = client.fold(event.nick)
    elif isinstance(event, ev.NickChanged):
        nick = client.fold(event.old)
    else:
        return
    for nicks in shown.values():
        nicks.pop(nick, None)


async def observe(
    session: Session, client: IrcClient, event: ev.Event, channels: tuple[Channel, ...]
) -> None:
    """Update the hats of the occupant `event` tells an account of (before its JOIN
    shows it, so that the first presence carries the hat)."""
    _forget(client, event)
    nick = _nick_of(event)
    if nick is None or client.state.is_own(nick):
        return
    account = client.channels.account_of(nick)
    key = client.fold(nick)
    for channel in channels:
        shown = _shown(client, client.fold(channel))
        if key in shown and shown[key] == account:
            continue
        if account is None and key not in shown and isinstance(event, ev.Joined):
            continue  # a newcomer without an account: no hat to show, no occupant to read
        muc = await session.room(client, channel)
        if not muc.participants_filled:
            continue  # `filled` shows it when the user joins
        part = await session.participant(muc, client, nick)
        part.set_hats(account_hats(account))
        shown[key] = account


def filled(client: IrcClient, channel: str, part: Participant, nick: str) -> None:
    """An occupant made when the user joins the room: show what is known already."""
    account = client.channels.account_of(nick)
    part.set_hats(account_hats(account))
    _shown(client, client.fold(channel))[client.fold(nick)] = account


def on_new_occupant(client: IrcClient, channel: str, nick: str) -> list[Hat]:
    """The hats for the occupant about to be created for `nick` in `channel`, so that
    its first presence carries them (`MUC.get_participant_by_contact`)."""
    account = client.channels.account_of(nick)
    _shown(client, client.fold(channel))[client.fold(nick)] = account
    return account_hats(account)
