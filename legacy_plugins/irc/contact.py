"""IRC users and servers as XMPP contacts: `nick%server@…` and `server@…`.

A contact's legacy id is its canonical JID local part (folded, XEP-0106-escaped), so
the mapping is one function each way and JIDs that differ only in case meet the same
contact. Private messages to a nick are PRIVMSGs; messages to a server JID are raw IRC
lines, one per line of the body (like Biboumi), each validated so that no CR, LF or NUL
can smuggle a second command. A raw PRIVMSG or NOTICE to a nick is also put into the
user's conversation with that nick, as a message the user sent (a carbon through the
XEP-0356 message privilege), so their server archives the private conversation whole.
The server JID also has the `configure` command (ad-hoc, or `contact SERVER configure`
in a chat with the gateway): the user's nick, port, TLS, passwords and after-connect
commands for that server. (slidge lists contact commands on every contact; on a nick it
answers that settings live on the server's JID.)
"""

from __future__ import annotations

import collections
import functools
import uuid
from typing import TYPE_CHECKING

import sqlalchemy as sa
from slidge.command import ContactCommand, FormField
from slidge.command.base import FormRecipient, FormValues
from slidge.contact import LegacyContact, LegacyRoster
from slidge.db.models import Contact as StoredContact
from slidge.util.types import XMPPMessage
from slixmpp import JID
from slixmpp.exceptions import XMPPError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as OrmSession

from gateway.runtime import network_config

from . import rows
from .config import Config, UserServerSettings
from .protocol import IrcProtocolError, LocalProtocolError, Message, parse_line, serialize
from .translate import (
    AddressError,
    AddressMapping,
    ChannelAddress,
    ServerAddress,
    UserAddress,
    irc_to_xmpp,
    nick_problem,
    notice_text,
)

if TYPE_CHECKING:
    from .client import IrcClient
    from .session import Session


KEPT_CONTACTS = 5000  # contact objects per session kept for lookups without SQL

_MINE = (StoredContact.user_account_id == sa.bindparam("user")) & StoredContact.legacy_id.in_(
    sa.bindparam("ids", expanding=True)
)
_ANY_OF = sa.select(StoredContact.id).where(_MINE).limit(1)
"""Whether the user has one of the contacts `ids` (`Roster.prefetch`)."""
_THAT_ONE = (
    sa.select(StoredContact.id)
    .where(
        StoredContact.user_account_id == sa.bindparam("user"),
        StoredContact.legacy_id == sa.bindparam("id"),
    )
    .limit(1)
)
"""Whether the user has the contact `id` (a JOIN's nick: `rows.fetch` runs it)."""
_ALL_OF = sa.select(StoredContact).where(_MINE)


@functools.lru_cache(maxsize=4096)
def _contact_legacy_id(mapping: AddressMapping, jid_username: str) -> tuple[str | None, str]:
    """The legacy id of the contact at JID local part `jid_username`, or None and why
    there is none (a channel's, or not an IRC address). Asked for the sender of every
    presence slidge sends (its capabilities filter), an occupant's too: a room's JID,
    parsed and refused each time (8-9 µs; a few hundred ns from here). `mapping` is the
    session's one object (`Session.mapping`)."""
    try:
        address = mapping.parse(jid_username)
        if isinstance(address, ChannelAddress):
            return None, f"{address.channel} is a channel: join it as a group chat"
        return mapping.render(address), ""
    except AddressError as e:
        return None, str(e)


class Roster(LegacyRoster["Contact"]):
    """The user's IRC contacts, one `Contact` object per nick (the most recently used kept).

    slidge 0.4.2 reads a contact from the database and builds a new object every time
    it is looked up: every JOIN every user sees looked the joining nick up. Here a
    lookup of a known contact returns the object without a query; when slidge reads a
    contact row anyway (`from_store`: an occupant's contact, the roster), the kept
    object takes the fresh row, so there is one object per nick and it carries what
    was last read or written (`Bookmarks` does the same for rooms).
    """

    session: Session

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self._kept: collections.OrderedDict[str, Contact] = collections.OrderedDict()

    def from_store(self, stored: StoredContact) -> Contact:
        contact = self._kept.get(stored.legacy_id)
        if contact is None or stored.id is None or stored.id != contact.stored.id:
            return super().from_store(stored)
        contact.stored = stored
        return contact

    async def by_legacy_id(self, legacy_id: str) -> Contact:
        if (contact := self.kept_contact(legacy_id)) is not None:
            return contact
        if legacy_id not in self._kept and legacy_id != self.user_legacy_id:
            # A nick: read or made (one INSERT) without slidge's per-contact round of
            # merges and queries; named as `Contact.update_info` names it.
            try:
                address = network_config(Config).address_mapping().parse(legacy_id)
            except AddressError:
                address = None
            if isinstance(address, UserAddress):
                name = self.session.display_nick(address.server, address.nick)
                await self.prefetch({legacy_id: name})
                if (contact := self._kept.get(legacy_id)) is not None:
                    return contact
        contact = await super().by_legacy_id(legacy_id)
        if contact.stored.id is not None and contact.stored.updated:
            self._keep(contact)
        return contact

    async def by_jid(self, contact_jid: JID) -> Contact:
        """The kept contact for `contact_jid` without a query (slidge looks the sender
        up this way for every presence it sends, to add its capabilities)."""
        username = contact_jid.node
        if username:
            contact = self._kept.get(await self.jid_username_to_legacy_id(username))
            if contact is not None and contact.stored.updated:
                return contact
        return await super().by_jid(contact_jid)

    async def prefetch(self, names: dict[str, str], *, present: bool = False) -> None:
        """Make sure the contacts `names` (legacy id → the nick as IRC writes it) are
        kept, with one query for the known ones and one transaction for the new ones
        (a channel's member list when the user joins; slidge reads, builds and commits
        them one by one). A new contact is named like one `by_legacy_id` makes.
        `present`: each is about to be shown as a plain "available" occupant, which
        slidge records on the contact (one UPDATE each): recorded in the INSERT."""
        wanted = [i for i in names if i not in self._kept and i != self.user_legacy_id]
        if not wanted:
            return
        with self.session.xmpp.store.session(expire_on_commit=False) as orm:
            known = self._known(orm, wanted)
        for row in known.values():
            if row.updated:
                self._keep(self.from_store(row))
        # not updated since the gateway started: slidge's way, later
        new = [self._new(i, names[i], present) for i in wanted if i not in known]
        if not new:
            return
        try:
            with self.session.xmpp.store.session() as orm:
                self.insert_new(orm, new)
                orm.commit()
        except IntegrityError:  # made meanwhile by another path: looked up one by one
            return
        self.keep_new(new)

    def kept_contact(self, legacy_id: str) -> Contact | None:
        """The contact kept for `legacy_id` (a nick), if any: what `by_legacy_id`
        returns without SQL."""
        contact = self._kept.get(legacy_id)
        if contact is None or not contact.stored.updated or legacy_id == self.user_legacy_id:
            return None
        self._kept.move_to_end(legacy_id)
        return contact

    def new_contact(self, orm: OrmSession, legacy_id: str, name: str) -> Contact | None:
        """For a nick not kept (`kept_contact`): a new contact named `name` (nothing
        INSERTed yet: `insert_new`, then `keep_new` once committed), or None when the
        user has a row for it already (`by_legacy_id` reads it); in `orm`'s
        transaction, so that a JOIN's contact and occupant are committed together."""
        if legacy_id == self.user_legacy_id or self._known(orm, [legacy_id]):
            return None
        return self._new(legacy_id, name, False)

    def insert_new(self, orm: OrmSession, new: list[Contact]) -> None:
        """INSERT the rows of contacts `new` in `orm`'s transaction (the caller commits)."""
        for contact in new:
            rows.insert(orm, contact.stored, {"avatar": None})

    def keep_new(self, new: list[Contact]) -> None:
        """Keep contacts `new` once their rows are stored."""
        for contact in new:
            self._keep(contact)

    def forget(self, contacts: list[Contact]) -> None:
        """No longer keep `contacts` (their rows were rolled back)."""
        for contact in contacts:
            if self._kept.get(contact.legacy_id) is contact:
                del self._kept[contact.legacy_id]

    def _known(self, orm: OrmSession, legacy_ids: list[str]) -> dict[str, StoredContact]:
        """The user's stored contacts among `legacy_ids`, by legacy id: one small query
        when there is none."""
        query = {"user": self.session.user_pk, "ids": legacy_ids}
        if len(legacy_ids) == 1:
            one = {"user": query["user"], "id": legacy_ids[0]}
            if not rows.fetch(orm, _THAT_ONE, one):
                return {}
        elif orm.connection().execute(_ANY_OF, query).first() is None:
            return {}
        return {row.legacy_id: row for row in orm.scalars(_ALL_OF, query).all()}

    def _new(self, legacy_id: str, name: str, present: bool) -> Contact:
        """A new contact for a nick, its row not stored yet (see `insert_new`)."""
        stored = StoredContact(
            user_account_id=self.session.user_pk,
            legacy_id=legacy_id,
            jid_localpart=legacy_id,  # `legacy_id_to_jid_username`
            nick=name,  # what `Contact.update_info` would set
            updated=True,
            cached_presence=present,  # CachedPresence() then, as `online()` stores it
        )
        contact = self.from_store(stored)
        stored.extra_attributes = contact.serialize_extra_attributes()
        return contact

    def _keep(self, contact: Contact) -> None:
        self._kept[contact.legacy_id] = contact
        self._kept.move_to_end(contact.legacy_id)
        while len(self._kept) > KEPT_CONTACTS:
            self._kept.popitem(last=False)

    async def jid_username_to_legacy_id(self, jid_username: str) -> str:
        legacy_id, refusal = _contact_legacy_id(self.session.mapping, jid_username)
        if legacy_id is None:
            raise XMPPError("item-not-found", refusal)
        return legacy_id

    async def legacy_id_to_jid_username(self, legacy_id: str) -> str:
        return legacy_id


class Contact(LegacyContact):
    session: Session
    CORRECTION = True
    REACTION = False
    RETRACTION = False
    REPLIES = False
    MARKS = False
    RECEIPTS = False
    CHAT_STATES = False
    AVATAR = False

    @functools.cached_property
    def address(self) -> UserAddress | ServerAddress:
        """Parsed once: a contact's legacy id never changes."""
        address = network_config(Config).address_mapping().parse(self.legacy_id)
        assert isinstance(address, UserAddress | ServerAddress)
        return address

    async def update_info(self) -> None:
        address = self.address
        if isinstance(address, ServerAddress):
            self.name = f"{address.server} (IRC server)"
        else:
            self.name = self.session.display_nick(address.server, address.nick)

    async def on_message(self, message: XMPPMessage) -> str:
        address = self.address
        client = await self.session.client_for(address.server)
        body = message.body or ""
        urls = " ".join(a.url for a in message.attachments)
        if urls:
            body = f"{body} {urls}".strip()
        if isinstance(address, ServerAddress):
            lines, messages = [], []
            for line in body.splitlines():
                if not line.strip():
                    continue
                try:
                    msg = parse_line(line.encode())
                    lines.append(serialize(msg))
                except (IrcProtocolError, LocalProtocolError) as e:
                    raise XMPPError("bad-request", f"Not a valid IRC line: {e}") from e
                messages.append(msg)
            self.session.send_lines(client, lines)
            for msg in messages:
                await self._carbon_of_private(client, msg)
            return str(uuid.uuid4())
        return await self.session.send_message(client, address.nick, message)

    async def on_sticker(self, sticker: object) -> str:
        raise NotImplementedError

    async def _carbon_of_private(self, client: IrcClient, msg: Message) -> None:
        """A raw PRIVMSG/NOTICE to a nick, shown (and archived) in the conversation with
        that nick as sent by the user."""
        if msg.command not in {"PRIVMSG", "NOTICE"} or len(msg.params) < 2:
            return
        target, text = msg.params[0], msg.params[1]
        if client.state.isupport.is_channel(target.lstrip(client.state.isupport.statusmsg)):
            return
        if text.startswith("\x01") and not text.startswith("\x01ACTION "):
            return  # CTCP requests are not conversation
        action = text.startswith("\x01ACTION ")
        body = irc_to_xmpp(text.removeprefix("\x01ACTION ").removesuffix("\x01"), action=action)
        try:
            contact = await self.session.contact(client, target)
        except (AddressError, XMPPError):
            return
        contact.send_text(notice_text(body) if msg.command == "NOTICE" else body, carbon=True)


class ConfigureServer(ContactCommand[Contact]):
    NAME = "Configure this IRC server"
    HELP = "Your nick, port, TLS, passwords and after-connect commands for this server"
    NODE = "configure"
    CHAT_COMMAND = "configure"

    @staticmethod
    async def run(contact: Contact, *args: str) -> FormRecipient[Contact]:
        address = contact.address
        if not isinstance(address, ServerAddress):
            raise XMPPError("feature-not-implemented", "Settings live on the server's JID.")
        current = contact.session.server_settings(address.server)
        target = network_config(Config).target(address.server)
        fields = [
            FormField(
                "nick",
                "Nick on this server (empty: your registered nick)",
                value=current.nick or "",
            ),
            FormField("account_password", "Account password (SASL or NickServ)", private=True),
            FormField("password", "Server password", private=True),
            FormField(
                "after_connect",
                "IRC commands sent after connecting, one per line",
                type="text-multi",
                value="\n".join(current.after_connect),
            ),
        ]
        if not target.admin_defined:
            port = current.port or target.port
            tls = target.tls if current.tls is None else current.tls
            fields[1:1] = [
                FormField("port", "Port", value=str(port)),
                FormField("tls", "Use TLS", type="boolean", value="true" if tls else "false"),
            ]
        return FormRecipient(
            f"IRC server {address.server}",
            "Changes apply at the next connection. Leave a password empty to keep it.",
            fields,
            ConfigureServer.save,
        )

    @staticmethod
    async def save(contact: Contact, values: FormValues) -> str:
        address = contact.address
        assert isinstance(address, ServerAddress)
        current = contact.session.server_settings(address.server)
        nick = str(values.get("nick") or "").strip() or None
        if nick is not None and (problem := nick_problem(nick)) is not None:
            raise XMPPError("not-acceptable", f"Invalid IRC nick {nick!r}: {problem}.")
        port = current.port
        if values.get("port"):
            try:
                port = int(str(values["port"]))
            except ValueError:
                port = 0
            if not 0 < port < 65536:
                raise XMPPError("not-acceptable", "The port is a number from 1 to 65535.")
        lines = values.get("after_connect") or []
        after = tuple(str(x) for x in lines if str(x).strip()) if isinstance(lines, list) else ()
        for line in after:
            try:
                serialize(parse_line(line.encode()))
            except (IrcProtocolError, LocalProtocolError) as e:
                raise XMPPError("not-acceptable", f"Not a valid IRC line: {line!r} ({e})") from e
        tls = values.get("tls")
        settings = UserServerSettings(
            nick=nick,
            port=port,
            tls=tls if isinstance(tls, bool) else current.tls,
            password=str(values.get("password") or "") or current.password,
            account_password=str(values.get("account_password") or "") or current.account_password,
            after_connect=after,
        )
        contact.session.save_server_settings(address.server, settings)
        return f"Saved. The settings for {address.server} apply at the next connection."
