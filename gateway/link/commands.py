"""Admin commands (XEP-0050 ad-hoc commands) on the link component's JID.

``list`` shows every link and its state; ``check`` asks each room what its owner must
still grant (members-only, moderated, no archive) and lists whom it refused; ``add``
links an existing room to an IRC channel (kept in the database, so it survives
restarts); ``remove`` deletes a link an admin added (links from ``gateway.toml`` are
removed there); ``pause`` stops a link — it leaves the room and the channel — or resumes
it. Only the bare JIDs in ``admins`` may run them; anyone else gets ``forbidden``.
Problems are reported as the command's notes, in words for the admin (``LinkError``).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from slixmpp import Iq
from slixmpp.exceptions import XMPPError

from gateway.config import LinkConfig

from .service import LinkError, LinkService

__all__ = ["register_commands"]

Session = dict[str, Any]
Handler = Callable[[LinkService, Iq, Session], Awaitable[Session]]


def register_commands(service: LinkService) -> None:
    adhoc = service.component.plugin["xep_0050"]
    commands: dict[str, tuple[str, Handler]] = {
        "list": ("List channel links", _list),
        "check": ("Check what the linked rooms must grant", _check),
        "add": ("Link an IRC channel to a room", _add),
        "remove": ("Remove a channel link", _remove),
        "pause": ("Pause or resume a channel link", _pause),
    }
    for node, (name, handler) in commands.items():
        adhoc.add_command(
            jid=service.component.boundjid,
            node=node,
            name=name,
            handler=functools.partial(_admins_only, service, handler),
        )


async def _admins_only(service: LinkService, handler: Handler, iq: Iq, session: Session) -> Session:
    if not service.is_admin(iq["from"].bare):
        raise XMPPError(
            "forbidden", text="Only the admins of this Passerelle may manage links", etype="auth"
        )
    return await handler(service, iq, session)


def _done(session: Session, kind: str, text: str) -> Session:
    session.update(payload=None, next=None, has_next=False, notes=[(kind, text)])
    return session


def _form(service: LinkService, title: str, instructions: str) -> Any:
    form = service.component.plugin["xep_0004"].make_form(ftype="form", title=title)  # type: ignore[no-untyped-call]
    form["instructions"] = instructions
    return form


def _ask(
    session: Session, form: Any, then: Callable[[Any, Session], Awaitable[Session]]
) -> Session:
    session.update(payload=form, next=then, has_next=False, allow_complete=True)
    return session


def _truthy(value: object) -> bool:
    return value is True or str(value).lower() in ("1", "true")


# --- list ------------------------------------------------------------------------------


async def _list(service: LinkService, iq: Iq, session: Session) -> Session:
    lines = [info.describe() for info in service.list_links()]
    return _done(session, "info", "\n".join(lines) if lines else "There is no link yet.")


async def _check(service: LinkService, iq: Iq, session: Session) -> Session:
    return _done(session, "info", await service.check_links())


# --- add -------------------------------------------------------------------------------


async def _add(service: LinkService, iq: Iq, session: Session) -> Session:
    form = _form(
        service,
        "Link an IRC channel to a room",
        "The room must exist. Each IRC user who speaks appears in it under their nick; "
        "each XMPP user who speaks gets an IRC connection of their own.",
    )
    form.add_field(
        "muc", "text-single", label="Room (e.g. lounge@conference.example.org)", required=True
    )
    form.add_field(
        "irc", "text-single", label="IRC channel (ircs://irc.libera.chat/#lounge)", required=True
    )
    form.add_field(
        "irc_nick_template", "text-single", label="IRC nick of XMPP users", value="{nick}[x]"
    )
    form.add_field(
        "xmpp_nick_template", "text-single", label="Room nick of IRC users", value="{nick}"
    )
    form.add_field("double_puppet", "boolean", label="One IRC connection per XMPP user", value=True)
    form.add_field("relay_joins_parts", "boolean", label="Show every IRC user present", value=False)
    return _ask(session, form, functools.partial(_add_submit, service))


async def _add_submit(service: LinkService, payload: Any, session: Session) -> Session:
    values = payload.get_values() if payload else {}
    try:
        spec = LinkConfig(
            muc=str(values.get("muc") or ""),
            irc=str(values.get("irc") or ""),
            irc_nick_template=str(values.get("irc_nick_template") or "{nick}[x]"),
            xmpp_nick_template=str(values.get("xmpp_nick_template") or "{nick}"),
            double_puppet=_truthy(values.get("double_puppet", True)),
            relay_joins_parts=_truthy(values.get("relay_joins_parts", False)),
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        return _done(session, "error", f"Not linked: {problems}")
    try:
        warnings = await service.add_link(spec, session["from"].bare)
    except LinkError as exc:
        return _done(session, "error", f"Not linked: {exc}")
    text = f"Linked {spec.muc} and {spec.channel.channel} on {spec.channel.host}."
    if warnings:
        text += " Warning: " + "; ".join(warnings) + "."
    return _done(session, "info", text)


# --- remove and pause ----------------------------------------------------------------


def _choose(service: LinkService, title: str, ids: list[str]) -> Any:
    form = _form(service, title, "Choose a link.")
    options = [{"label": key, "value": key} for key in ids]
    form.add_field(
        "link", "list-single", label="Link", required=True, value=ids[0], options=options
    )
    return form


async def _remove(service: LinkService, iq: Iq, session: Session) -> Session:
    ids = [info.id for info in service.list_links() if info.source == "admin"]
    if not ids:
        return _done(
            session,
            "info",
            "No link was added by an admin; links from gateway.toml are removed there.",
        )
    return _ask(
        session, _choose(service, "Remove a link", ids), functools.partial(_remove_submit, service)
    )


async def _remove_submit(service: LinkService, payload: Any, session: Session) -> Session:
    key = str(payload.get_values().get("link") or "") if payload else ""
    try:
        await service.remove_link(key, session["from"].bare)
    except LinkError as exc:
        return _done(session, "error", f"Not removed: {exc}")
    return _done(session, "info", f"Removed {key}.")


async def _pause(service: LinkService, iq: Iq, session: Session) -> Session:
    ids = [info.id for info in service.list_links()]
    if not ids:
        return _done(session, "info", "There is no link yet.")
    form = _choose(service, "Pause or resume a link", ids)
    form.add_field("paused", "boolean", label="Paused (untick to resume)", value=True)
    return _ask(session, form, functools.partial(_pause_submit, service))


async def _pause_submit(service: LinkService, payload: Any, session: Session) -> Session:
    values = payload.get_values() if payload else {}
    key, paused = str(values.get("link") or ""), _truthy(values.get("paused", True))
    try:
        await service.set_paused(key, paused, session["from"].bare)
    except LinkError as exc:
        return _done(session, "error", f"Not changed: {exc}")
    return _done(session, "info", f"{'Paused' if paused else 'Resumed'} {key}.")
