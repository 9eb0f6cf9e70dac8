"""IRC events turned into slidge calls: the IRC → XMPP half of a session.

`dispatch` is what `Session.on_irc_event` calls for each event the connection reports,
in wire order. A channel message becomes `participant.send_text`, a JOIN a new occupant,
a NICK an occupant rename (303), MODE a role change, KICK a 307; server notices, numerics
and errors become messages from the server contact (the MOTD as one message). Each
handler gets the channels the event concerns from the channel tracker, so QUIT and NICK
reach every room the nick was in.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import events as ev
from .client import JOIN_ERRORS, IrcClient
from .events import Channel
from .translate import AddressError, Affiliation, Role, irc_to_xmpp, muc_role_affiliation

if TYPE_CHECKING:
    from .group import Participant
    from .session import Session

MOTD_START, MOTD_LINE, MOTD_END, NO_MOTD = "375", "372", "376", "422"
QUIET_NUMERICS = frozenset(
    {"002", "003", "004", "250", "251", "252", "253", "254", "255", "265", "266", "329", "396"}
    | JOIN_ERRORS  # answered on the join presence instead
)
LIVE = timedelta(seconds=10)  # server-time tags closer to now than this are not delays

_Handler = Callable[["Session", IrcClient, Any, tuple[Channel, ...]], Awaitable[None]]


async def dispatch(
    session: Session, client: IrcClient, event: ev.Event, channels: tuple[Channel, ...]
) -> None:
    handler = _HANDLERS.get(type(event))
    if handler is not None:
        await handler(session, client, event, channels)


async def on_message(
    session: Session, client: IrcClient, event: ev.MessageReceived, _: tuple[Channel, ...]
) -> None:
    if event.own:
        return
    body = irc_to_xmpp(event.text, action=event.kind == "action")
    when = delay(event.time)
    if event.channel is not None:
        muc = await session.room(client, event.channel)
        if event.sender.user is None:  # a server notice to the channel
            muc.get_system_participant().send_text(body, when=when)
            return
        part = await session.participant(muc, client, event.sender.nick)
        part.send_text(body, legacy_msg_id=event.msgid, when=when)
    elif event.sender.user is None or not event.sender.nick:
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
    part = await session.participant(muc, client, event.nick)
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
            muc.remove_participant(part, kick=True, reason=reason)
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
    others = []
    for change in event.changes:
        if change.kind != "member" or change.arg is None:
            sign = "+" if change.adding else "-"
            others.append(f"{sign}{change.mode}" + (f" {change.arg}" if change.arg else ""))
            continue
        member = client.channels.member(event.channel, change.arg)
        prefixes = member.prefixes if member else ""
        role, affiliation = muc_role_affiliation(prefixes, client.state.isupport)
        if client.state.is_own(change.arg):
            part = await muc.get_user_participant()
        else:
            part = await session.participant(muc, client, change.arg)
        set_role(part, role, affiliation)
    if others:
        by = event.by or client.name
        muc.get_system_participant().send_text(f"{by} sets mode {' '.join(others)}")


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
        role, affiliation = muc_role_affiliation(member.prefixes, client.state.isupport)
        set_role(part, role, affiliation)


async def on_invited(
    session: Session, client: IrcClient, event: ev.Invited, _: tuple[Channel, ...]
) -> None:
    muc = await session.room(client, event.channel)
    session.send_gateway_invite(muc, reason=f"{event.by} invites you to {event.channel}")


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
        if not event.success:
            await session.tell(client, f"SASL authentication failed: {event.message}")
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
    else:
        part.role = role


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
    ev.NickRetry: on_nick_retry,
    ev.RegistrationFailed: on_failure,
    ev.ServerError: on_failure,
    ev.SaslResult: on_failure,
    ev.ServerReply: on_reply,
    ev.CtcpReply: on_ctcp,
}
