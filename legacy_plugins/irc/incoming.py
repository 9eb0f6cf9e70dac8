"""IRC events turned into slidge calls: the IRC → XMPP half of a session.

`dispatch` is what `Session.on_irc_event` calls for each event the connection reports,
in wire order. A channel message becomes `participant.send_text` (a NOTICE with a
`[notice]` prefix, history played back on join with its original time), a JOIN a new
occupant, a NICK an occupant rename (303), MODE a role change, a ban that matches an
occupant the outcast affiliation, KICK a 307 (301 for a banned occupant), AWAY
(away-notify) an occupant's "away" presence; server notices, numerics and errors become
messages from the server contact (the MOTD as one message). Replies to the WHO and ban
list queries the client makes on join update the occupants quietly. Each handler gets
the channels the event concerns from the channel tracker, so QUIT and NICK reach every
room the nick was in.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import accounts, chathistory
from . import events as ev
from .client import JOIN_ERRORS, IrcClient
from .events import Channel
from .mentions import room_mentions
from .translate import AddressError, Affiliation, Role, irc_to_xmpp, mask_matches, notice_text

if TYPE_CHECKING:
    from .group import MUC, Participant
    from .session import Session

MOTD_START, MOTD_LINE, MOTD_END, NO_MOTD = "375", "372", "376", "422"
QUIET_NUMERICS = frozenset(
    {"002", "003", "004", "250", "251", "252", "253", "254", "255", "265", "266", "329", "396"}
    | JOIN_ERRORS  # answered on the join presence instead
)
BAN_LIST_END = "368"
AUTO_REPLIES = {"367": "bans", BAN_LIST_END: "bans", "482": "bans", "315": "who"}
"""Numerics that answer a query the client made itself on join (see `client.auto_queries`)."""
LIVE = timedelta(seconds=10)  # server-time tags closer to now than this are not delays

_Handler = Callable[["Session", IrcClient, Any, tuple[Channel, ...]], Awaitable[None]]


async def dispatch(
    session: Session, client: IrcClient, event: ev.Event, channels: tuple[Channel, ...]
) -> None:
    await chathistory.observe(session, client, event)  # IRCv3 back-fill on (re)join
    await accounts.observe(session, client, event, channels)  # hats, before the JOIN shows
    handler = _HANDLERS.get(type(event))
    if handler is not None:
        await handler(session, client, event, channels)


async def on_message(
    session: Session, client: IrcClient, event: ev.MessageReceived, _: tuple[Channel, ...]
) -> None:
    if event.own:
        return  # our own line (echo-message): the sender's client already shows it
    body = irc_to_xmpp(event.text, action=event.kind == "action")
    when = event.time if event.history else delay(event.time)
    from_server = event.sender.user is None or not event.sender.nick
    if event.kind == "notice" and not from_server:
        body = notice_text(body)
    if event.channel is not None:
        muc = await session.room(client, event.channel)
        if not chathistory.is_new(client, muc, event):
            return  # history the archive has already (a replay, a back-fill overlap)
        if from_server:  # a server notice to the channel
            muc.get_system_participant().send_text(body, when=when)
            return
        part = await session.participant(muc, client, event.sender.nick, keep=True)
        mentions = room_mentions(client, muc, event.channel, body)  # XEP-0372
        part.send_text(body, legacy_msg_id=event.msgid, when=when, mentions=mentions)
    elif from_server:
        await session.tell(client, body)
    else:
        try:
            contact = await session.contact(client, event.sender.nick)
        except AddressError:
            await session.tell(client, f"<{event.sender.nick}> {body}")
            return
        contact.send_text(body, legacy_msg_id=event.msgid, when=when)


async def on_joined(
    session: Session, client: IrcClient, event: ev.Joined, _: tuple[Channel, ...]
) -> None:
    if event.own:
        return
    muc = await session.room(client, event.channel)
    part = await session.participant(muc, client, event.nick, joined=True)
    part.online()


async def on_left(
    session: Session, client: IrcClient, event: ev.Parted | ev.Quit, channels: tuple[Channel, ...]
) -> None:
    if event.own:
        return
    for channel in channels:
        muc = await session.room(client, channel)
        part = await muc.get_participant(event.nick, create=False)
        if part is not None:
            muc.remove_participant(part, reason=event.reason or None)


async def on_kicked(
    session: Session, client: IrcClient, event: ev.Kicked, _: tuple[Channel, ...]
) -> None:
    muc = await session.room(client, event.channel)
    reason = f"Kicked by {event.by}" + (f": {event.reason}" if event.reason else "")
    if not event.own:
        part = await muc.get_participant(event.nick, create=False)
        if part is not None:
            banned = part.affiliation == "outcast"  # a ban and a kick: the MUC's "ban" (301)
            muc.remove_participant(part, kick=not banned, ban=banned, reason=reason)
        return
    muc.remove_participant(await muc.get_user_participant(), kick=True, reason=reason)
    for resource in muc.get_user_resources():
        muc.remove_user_resource(resource)
    await session._forget_occupants(muc)


async def on_nick(
    session: Session, client: IrcClient, event: ev.NickChanged, channels: tuple[Channel, ...]
) -> None:
    for channel in channels:
        muc = await session.room(client, channel)
        if event.own:
            me = await muc.get_user_participant()  # found by the old nick
            me.nickname = event.new
            muc.user_nick = event.new
            continue
        part = await muc.get_participant(event.old, create=False)
        if part is not None:
            part.nickname = event.new
    if event.own:
        await session.tell(client, f"You are now known as {event.new}.")


async def on_topic(
    session: Session, client: IrcClient, event: ev.Topic, _: tuple[Channel, ...]
) -> None:
    muc = await session.room(client, event.channel)
    if event.live:
        muc.subject_setter = event.by
        muc.subject_date = event.time
    muc.subject = event.text


async def on_topic_set_by(
    session: Session, client: IrcClient, event: ev.TopicSetBy, _: tuple[Channel, ...]
) -> None:
    muc = await session.room(client, event.channel)
    muc.subject_setter = event.by
    muc.subject_date = event.set_at


async def on_modes(
    session: Session, client: IrcClient, event: ev.ChannelModeChanged, _: tuple[Channel, ...]
) -> None:
    muc = await session.room(client, event.channel)
    others: list[str] = []
    nicks: list[str] = []
    masks: list[str] = []
    for change in event.changes:
        if change.kind == "member" and change.arg is not None:
            nicks.append(change.arg)
            continue
        sign = "+" if change.adding else "-"
        others.append(f"{sign}{change.mode}" + (f" {change.arg}" if change.arg else ""))
        if change.mode == "b" and change.kind == "list" and change.arg:
            masks.append(change.arg)
    if masks:  # occupants a ban (or its removal) concerns
        state = client.channels.get(event.channel)
        mapping = client.state.isupport.casemapping
        for member in state.members.values() if state else ():
            who = client.channels.mask_of(member.nick)
            if any(mask_matches(mask, who, mapping) for mask in masks):
                nicks.append(member.nick)
    await refresh_standing(session, client, muc, event.channel, nicks)
    if others:
        by = event.by or client.name
        muc.get_system_participant().send_text(f"{by} sets mode {' '.join(others)}")


async def refresh_standing(
    session: Session, client: IrcClient, muc: MUC, channel: str, nicks: Sequence[str]
) -> None:
    """Give occupants `nicks` the role and affiliation their modes and bans say."""
    for nick in dict.fromkeys(nicks):
        if client.channels.member(channel, nick) is None:
            continue
        role, affiliation = client.channels.standing(channel, nick)
        if client.state.is_own(nick):
            part = await muc.get_user_participant()
        else:
            part = await session.participant(muc, client, nick)
        set_role(part, role, affiliation)


async def on_members(
    session: Session, client: IrcClient, event: ev.ChannelMembers, _: tuple[Channel, ...]
) -> None:
    muc = await session.room(client, event.channel)
    if not muc.participants_filled:
        return  # MUC.fill_participants reads the member list
    present = {client.fold(m.nick) for m in event.members}
    async for part in muc.get_participants():
        if not part.is_user and client.fold(part.nickname) not in present:
            muc.remove_participant(part)
    for member in event.members:
        if client.state.is_own(member.nick):
            continue
        part = await session.participant(muc, client, member.nick)
        set_role(part, *client.channels.standing(event.channel, member.nick))


async def on_invited(
    session: Session, client: IrcClient, event: ev.Invited, _: tuple[Channel, ...]
) -> None:
    muc = await session.room(client, event.channel)
    session.send_gateway_invite(muc, reason=f"{event.by} invites you to {event.channel}")


async def on_away(
    session: Session, client: IrcClient, event: ev.AwayChanged, channels: tuple[Channel, ...]
) -> None:
    if event.own:
        return
    for channel in channels:
        muc = await session.room(client, channel)
        part = await muc.get_participant(event.nick, create=False)
        if part is None:
            part = await session.participant(muc, client, event.nick)
        if event.message is None:
            part.online()
        else:
            part.away(event.message or None)


async def on_who(
    session: Session, client: IrcClient, event: ev.WhoEntry, channels: tuple[Channel, ...]
) -> None:
    if ("who", client.fold(event.channel)) not in client.auto_queries:
        away = " (away)" if event.away else ""
        await session.tell(client, f"{event.channel} {event.mask}{away} {event.realname}")
        return
    if not event.away or client.state.is_own(event.mask.nick):
        return
    for channel in channels:  # the occupant shows "away" from the start
        muc = await session.room(client, channel)
        part = await session.participant(muc, client, event.mask.nick)
        part.away(client.channels.away_message(event.mask.nick) or None)


async def on_nick_retry(
    session: Session, client: IrcClient, event: ev.NickRetry, _: tuple[Channel, ...]
) -> None:
    await session.tell(
        client,
        f"IRC server {client.name!r} rejected nick {event.rejected!r} "
        f"({event.code} {event.reason}); retrying as {event.retry!r}",
    )


async def on_failure(
    session: Session,
    client: IrcClient,
    event: ev.RegistrationFailed | ev.ServerError | ev.SaslResult,
    _: tuple[Channel, ...],
) -> None:
    if isinstance(event, ev.SaslResult):
        if event.success:
            return
        if not event.code:  # no SASL here: the client identifies to NickServ instead
            await session.tell(
                client,
                f"No SASL login on {client.name} ({event.message}); sending your account "
                "password to NickServ instead",
            )
            return
        await session.tell(
            client,
            f"SASL login to {client.name} as {client.identity.nick} failed "
            f"({event.code} {event.message}); connected without logging in. Check your "
            "account password with the configure command on this server's JID.",
        )
    elif isinstance(event, ev.ServerError):
        await session.tell(client, f"ERROR from {client.name}: {event.message}")
    else:
        await session.tell(client, f"Could not register on {client.name}: {event.reason}")


async def on_reply(
    session: Session, client: IrcClient, event: ev.ServerReply, _: tuple[Channel, ...]
) -> None:
    code, text = event.code, event.text
    if code in (MOTD_START, MOTD_LINE):
        session.motd.setdefault(client.name, []).append(text.removeprefix("- "))
        return
    if code in (MOTD_END, NO_MOTD):
        lines = session.motd.pop(client.name, [])
        if lines:
            await session.tell(client, "\n".join(lines))
        return
    if code in QUIET_NUMERICS:
        return
    params = event.params
    asked = AUTO_REPLIES.get(code)
    if asked and params and (asked, client.fold(params[0])) in client.auto_queries:
        if code == BAN_LIST_END and params[0] in client.channels:
            muc = await session.room(client, params[0])
            if muc.participants_filled:  # a rejoin: occupants are there already
                state = client.channels.get(params[0])
                nicks = [m.nick for m in state.members.values()] if state and state.bans else []
                await refresh_standing(session, client, muc, params[0], nicks)
        return
    if params and client.state.isupport.is_channel(params[0]) and len(params) > 1:
        if params[0] in client.channels:
            muc = await session.room(client, params[0])
            muc.get_system_participant().send_text(f"{' '.join(params[1:])} ({code})")
            return
    await session.tell(client, " ".join(params) if len(params) > 1 else text)


async def on_ctcp(
    session: Session,
    client: IrcClient,
    event: ev.CtcpRequest | ev.CtcpReply,
    _: tuple[Channel, ...],
) -> None:
    if isinstance(event, ev.CtcpReply):
        await session.tell(
            client, f"CTCP {event.command} reply from {event.sender.nick}: {event.args}"
        )


def delay(time: datetime | None) -> datetime | None:
    """The IRCv3 server-time of a message if it is old enough to show as a delay
    (XEP-0203): history and replays, not live messages."""
    if time is None or datetime.now(UTC) - time < LIVE:
        return None
    return time


def set_role(part: Participant, role: Role, affiliation: Affiliation) -> None:
    """Change an occupant's role and affiliation with one presence, not two."""
    if affiliation != part.affiliation:
        part.stored.role = role  # sent along with the affiliation
        part.affiliation = affiliation
    elif role != part.role:
        part.role = role
        if part.is_user:  # slidge only announces it for occupants it sent presences of
            part.send_last_presence(force=True, no_cache_online=True)


_HANDLERS: dict[type, _Handler] = {
    ev.MessageReceived: on_message,
    ev.Joined: on_joined,
    ev.Parted: on_left,
    ev.Quit: on_left,
    ev.Kicked: on_kicked,
    ev.NickChanged: on_nick,
    ev.Topic: on_topic,
    ev.TopicSetBy: on_topic_set_by,
    ev.ChannelModeChanged: on_modes,
    ev.ChannelMembers: on_members,
    ev.Invited: on_invited,
    ev.AwayChanged: on_away,
    ev.WhoEntry: on_who,
    ev.NickRetry: on_nick_retry,
    ev.RegistrationFailed: on_failure,
    ev.ServerError: on_failure,
    ev.SaslResult: on_failure,
    ev.ServerReply: on_reply,
    ev.CtcpReply: on_ctcp,
}
