"""Passerelle's configuration: one TOML file, overridable by ``PASSERELLE_`` environment variables.

The top-level model below is the public contract of ``gateway.toml``. Each ``[networks.NAME]``
section is validated by the model its plugin declares in ``<plugin>/config.py`` (a subclass
of :class:`NetworkConfig`), so a plugin owns its keys. Unknown keys are errors. Every
problem is reported as one line naming the key path and saying how to fix it; see
:func:`load`. Secrets are ``SecretStr``: they print as ``**********``.

Environment variables use ``__`` for nesting: ``PASSERELLE_XMPP__PORT=5348``,
``PASSERELLE_NETWORKS__IRC__SECRET=…``; lists are JSON (``PASSERELLE_ADMINS='["a@b.org"]'``).
"""

from __future__ import annotations

import fnmatch
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar
from urllib.parse import unquote, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .errors import ConfigError
from .networks import NETWORKS, NetworkUnavailable
from .runtime import LogLevel, NetworkSettings, from_plain, settings_class

_DOMAIN_RE = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)
_BARE_JID_GLOB_RE = re.compile(r"^[^@/\s]+@[^@/\s]+$")


def _check_domain(value: str) -> str:
    value = value.strip().lower()
    if not _DOMAIN_RE.match(value):
        raise ValueError(
            f"{value!r} is not a domain name; a component JID is a bare domain such as "
            "'irc.example.org' (no '@', no '/')"
        )
    return value


class XmppServer(BaseModel):
    """Where the XMPP server listens for components (XEP-0114)."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    """Host of the XMPP server's component listener. Keep it on loopback: XEP-0114 is not
    encrypted."""
    port: Annotated[int, Field(ge=1, le=65535)] = 5347
    """Port of the component listener (Prosody: ``component_ports``)."""


class Storage(BaseModel):
    """Where networks keep their state."""

    model_config = ConfigDict(extra="forbid")

    url: SecretStr | None = None
    """PostgreSQL URL (``postgresql://user:pass@host/db``). Each network gets its own schema.
    Default: one SQLite file per network under ``data_dir``."""

    @field_validator("url")
    @classmethod
    def _postgres_only(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None and not url.get_secret_value().startswith(
            ("postgresql://", "postgres://")
        ):
            raise ValueError(
                "only PostgreSQL URLs are supported (postgresql://user@host/db); "
                "leave 'url' out to use SQLite"
            )
        return url


class NetworkConfig(BaseModel):
    """Keys every ``[networks.NAME]`` section has. Plugins subclass this for their own keys,
    in the ``model()`` of their light settings class (:class:`gateway.runtime.NetworkSettings`)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    """Run this network. A section that is present is enabled unless this says false."""
    jid: str
    """The component's JID, e.g. ``irc.example.org``; the XMPP server must declare a
    ``Component`` with this name."""
    secret: SecretStr
    """The component secret, the same as ``component_secret`` in the XMPP server's config."""
    name: str | None = None
    """Name shown in service discovery and as the gateway's nickname (default: the plugin's)."""
    log_level: LogLevel | None = None
    """Log level of this network's process (default: the top-level ``log_level``)."""

    @field_validator("jid")
    @classmethod
    def _check_jid(cls, jid: str) -> str:
        return _check_domain(jid)


_S = TypeVar("_S", bound=NetworkSettings)


class LinkComponentConfig(BaseModel):
    """``[link]``: the component that links IRC channels to existing MUC rooms.

    It is not a slidge network: it joins rooms on the XMPP server's MUC service as
    puppets (one occupant per IRC user) and opens one IRC connection per XMPP occupant
    who speaks. The links themselves are ``[[links]]`` entries and admin commands.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    jid: str
    """The component's JID, e.g. ``link.example.org``; declare it on the XMPP server."""
    secret: SecretStr
    """The component secret (``component_secret``)."""
    max_irc_connections: Annotated[int, Field(ge=0, le=10_000)] = 50
    """IRC connections per IRC server for XMPP occupants; past it (or at 0), a single
    relay bot writes ``<nick> text`` instead."""
    idle_timeout: Annotated[float, Field(gt=0)] = 3600.0
    """Seconds after an XMPP occupant's last message before their IRC connection closes."""
    ca_file: FilePath | None = None
    """PEM file of the CAs trusted for ``ircs://`` links instead of the system's (for an
    IRC server with a private CA). Certificates are always verified."""
    log_level: LogLevel | None = None

    @field_validator("jid")
    @classmethod
    def _check_jid(cls, jid: str) -> str:
        return _check_domain(jid)


@dataclass(frozen=True, slots=True)
class IrcChannelUrl:
    """``ircs://host[:port]/#channel`` taken apart."""

    host: str
    port: int
    tls: bool
    channel: str


def parse_irc_url(url: str) -> IrcChannelUrl:
    """Parse ``irc://`` (plain, default port 6667) or ``ircs://`` (TLS, 6697) channel URLs.

    The channel may be written ``/#chan`` (a URL fragment, as people write it), ``/%23chan``
    or ``/chan`` (``#`` assumed).
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("irc", "ircs"):
        raise ValueError(
            f"{url!r} is not an irc:// or ircs:// URL, e.g. 'ircs://irc.libera.chat/#chan'"
        )
    tls = parts.scheme == "ircs"
    if not parts.hostname:
        raise ValueError(f"{url!r} has no IRC server host")
    try:
        port = parts.port or (6697 if tls else 6667)
    except ValueError:
        raise ValueError(f"{url!r} has an invalid port") from None
    path = unquote(parts.path.lstrip("/"))
    channel = path or (f"#{parts.fragment}" if parts.fragment else "")
    if channel and channel[0] not in "#&":
        channel = f"#{channel}"
    if len(channel) < 2 or any(c in channel for c in " ,\x07\r\n\0"):
        raise ValueError(f"{url!r} names no valid channel; end it with /#channel")
    return IrcChannelUrl(parts.hostname.lower(), port, tls, channel)


class LinkConfig(BaseModel):
    """One ``[[links]]`` entry: an existing MUC room and an IRC channel, one conversation."""

    model_config = ConfigDict(extra="forbid")

    muc: str
    """The room's bare JID, e.g. ``lounge@conference.example.org``. It must exist already."""
    irc: str
    """The channel, e.g. ``ircs://irc.libera.chat:6697/#lounge`` (``irc://`` for plain)."""
    irc_nick_template: str = "{nick}[x]"
    """IRC nick of an XMPP occupant; ``{nick}`` is their MUC nick."""
    xmpp_nick_template: str = "{nick}"
    """MUC nick of an IRC user; ``{nick}`` is their IRC nick."""
    relay_joins_parts: bool = False
    """Show every IRC user present as an occupant (and their joins and parts), not only
    those who speak."""
    double_puppet: bool = True
    """One IRC connection per XMPP occupant who speaks; false: one relay bot for all."""

    @field_validator("muc")
    @classmethod
    def _check_muc(cls, muc: str) -> str:
        muc = muc.strip().lower()
        if not _BARE_JID_GLOB_RE.match(muc) or "*" in muc:
            raise ValueError(f"{muc!r} is not a room JID like 'lounge@conference.example.org'")
        return muc

    @field_validator("irc")
    @classmethod
    def _check_irc(cls, irc: str) -> str:
        parse_irc_url(irc)
        return irc.strip()

    @field_validator("irc_nick_template", "xmpp_nick_template")
    @classmethod
    def _check_template(cls, template: str) -> str:
        if "{nick}" not in template:
            raise ValueError(f"{template!r} must contain {{nick}}")
        try:
            template.format(nick="x")
        except (KeyError, IndexError, ValueError):
            raise ValueError(f"{template!r}: only {{nick}} may be used") from None
        return template

    @property
    def channel(self) -> IrcChannelUrl:
        return parse_irc_url(self.irc)


class Settings(BaseSettings):
    """The whole ``gateway.toml``."""

    model_config = SettingsConfigDict(
        env_prefix="PASSERELLE_",
        env_nested_delimiter="__",
        extra="forbid",
        nested_model_default_partial_update=True,
    )
    _toml_path: ClassVar[Path | None] = None

    data_dir: Path = Path("./data")
    """Databases, avatars and keys; created if missing. Relative paths are relative to the
    configuration file."""
    admins: list[str] = []
    """Bare JIDs that may use admin commands."""
    allowed_jids: list[str] | None = None
    """Globs of bare JIDs that may register (``*@example.org``). Default: users of the
    XMPP server's own domains, i.e. each component JID without its first label."""
    log_level: LogLevel = "INFO"
    """Log level of the supervisor and, unless a network says otherwise, of every network."""
    xmpp: XmppServer = XmppServer()
    storage: Storage = Storage()
    link: LinkComponentConfig | None = None
    """The channel ↔ room link component, if wanted."""
    links: list[LinkConfig] = []
    """Channel ↔ room links from the file; admins add more with commands."""
    networks: dict[str, dict[str, Any]] = Field(default={}, repr=False)
    """One section per network: ``[networks.irc]``, ``[networks.matrix]``,
    ``[networks.email]`` (and ``[networks.echo]``, the demo network). Raw here, hidden from
    repr because they still hold plain secrets; the validated ones are
    :attr:`Config.networks`."""

    @field_validator("admins")
    @classmethod
    def _bare_jids(cls, jids: list[str]) -> list[str]:
        for jid in jids:
            if not _BARE_JID_GLOB_RE.match(jid) or "*" in jid:
                raise ValueError(f"{jid!r} is not a bare JID like 'admin@example.org'")
        return [j.lower() for j in jids]

    @field_validator("allowed_jids")
    @classmethod
    def _jid_globs(cls, globs: list[str] | None) -> list[str] | None:
        if globs is None:
            return None
        for glob in globs:
            if not _BARE_JID_GLOB_RE.match(glob):
                raise ValueError(
                    f"{glob!r} is not a JID glob like '*@example.org' or 'bob@example.org'"
                )
        return [g.lower() for g in globs]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls._toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls._toml_path))
        return tuple(sources)


class Config:
    """A validated configuration: the top level plus one typed model per enabled network."""

    def __init__(
        self, path: Path | None, settings: Settings, networks: dict[str, NetworkConfig]
    ) -> None:
        self.path = path
        self.settings = settings
        self.networks = networks
        base = path.parent if path is not None else Path.cwd()
        self.data_dir = (base / settings.data_dir).resolve()

    @property
    def enabled_networks(self) -> dict[str, NetworkConfig]:
        return {name: net for name, net in self.networks.items() if net.enabled}

    def allowed_jid_globs(self) -> list[str]:
        if self.settings.allowed_jids is not None:
            return list(self.settings.allowed_jids)
        domains = sorted(
            {net.jid.split(".", 1)[1] for net in self.networks.values() if "." in net.jid}
        )
        return [f"*@{d}" for d in domains]

    def is_allowed(self, bare_jid: str) -> bool:
        return any(fnmatch.fnmatchcase(bare_jid.lower(), g) for g in self.allowed_jid_globs())

    def allowed_jids_regex(self) -> str:
        """The allow-list as one regular expression, the form slidge's validator takes."""
        parts = [fnmatch.translate(g) for g in self.allowed_jid_globs()]
        # fnmatch.translate gives '(?s:...)\Z'; an empty allow-list must match nothing.
        return "|".join(parts) if parts else r"(?!x)x"

    def network_dir(self, name: str) -> Path:
        return self.data_dir / name

    def network_db_url(self, name: str) -> str:
        if self.settings.storage.url is None:
            return f"sqlite:///{self.network_dir(name) / 'passerelle.sqlite'}"
        return self.settings.storage.url.get_secret_value()


def _fix_for(err: Any, section: str) -> str:
    """A fix-it sentence for one pydantic error."""
    kind = err["type"]
    key = str(err["loc"][-1]) if err["loc"] else ""
    where = f"[{section}]" if section else "the top level"
    if kind == "missing":
        return f"add '{key} = …' to {where}"
    if kind == "extra_forbidden":
        return f"remove '{key}' from {where} or check its spelling (see examples/gateway.toml)"
    return "see examples/gateway.toml for the expected form"


def _format_errors(exc: ValidationError, prefix: tuple[str, ...], source: str) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = prefix + tuple(str(p) for p in err["loc"])
        section = ".".join(loc[:-1])
        msg = err["msg"].removeprefix("Value error, ")
        env_var = "PASSERELLE_" + "__".join(loc).upper()
        where = f"environment variable {env_var}" if env_var in os.environ else source
        problems.append(f"{where}: {'.'.join(loc)}: {msg} — {_fix_for(err, section)}")
    return problems


def load(path: Path | None) -> Config:
    """Read, validate and return the configuration, or raise :class:`ConfigError`."""
    source = str(path) if path is not None else "environment"
    if path is not None:
        if not path.is_file():
            raise ConfigError(
                [f"{path}: no such file — copy examples/gateway.toml there and edit it"]
            )
        try:
            tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError([f"{path}: not valid TOML: {e}"]) from None
    Settings._toml_path = path
    try:
        settings = Settings()
    except ValidationError as e:
        raise ConfigError(_format_errors(e, (), source)) from None
    finally:
        Settings._toml_path = None

    networks, problems = _load_networks(settings, source)
    if problems:
        raise ConfigError(problems)
    return Config(path, settings, networks)


def _load_networks(settings: Settings, source: str) -> tuple[dict[str, NetworkConfig], list[str]]:
    """Validate each ``[networks.NAME]`` section with its plugin's model."""
    problems: list[str] = []
    networks: dict[str, NetworkConfig] = {}
    for name, raw in settings.networks.items():
        if not isinstance(raw, dict):
            problems.append(f"{source}: networks.{name}: must be a table [networks.{name}]")
            continue
        try:
            model = network_model(name)
        except NetworkUnavailable as e:
            if raw.get("enabled") is False:
                continue  # a disabled section may name a network this version lacks
            problems.append(f"{source}: networks.{name}: {e}")
            continue
        try:
            networks[name] = model.model_validate(raw)
        except ValidationError as e:
            problems.extend(_format_errors(e, ("networks", name), source))
    jids: dict[str, str] = {}
    for name, net in networks.items():
        if net.jid in jids:
            problems.append(
                f"{source}: networks.{name}.jid: {net.jid!r} is also the JID of networks."
                f"{jids[net.jid]} — give each network its own component JID"
            )
        jids[net.jid] = name
    problems += _link_problems(settings, {net.jid: name for name, net in networks.items()}, source)
    wants_link = settings.link is not None and settings.link.enabled
    if not problems and not wants_link and not any(n.enabled for n in networks.values()):
        problems.append(
            f"{source}: networks: no network is enabled — add a section such as "
            f"[networks.{next(iter(NETWORKS))}] with jid and secret"
        )
    return networks, problems


def _link_problems(settings: Settings, jids: dict[str, str], source: str) -> list[str]:
    """``[link]`` and ``[[links]]``: consistent with each other and with the networks."""
    problems: list[str] = []
    link = settings.link
    if settings.links and link is None:
        problems.append(
            f"{source}: links: there are [[links]] but no [link] section — add [link] with "
            "jid and secret for the link component"
        )
    if link is not None:
        if link.jid in jids:
            problems.append(
                f"{source}: link.jid: {link.jid!r} is also the JID of networks."
                f"{jids[link.jid]} — give the link component its own JID"
            )
        if not _has_link_component():
            problems.append(
                f"{source}: link: the link component is not implemented in this version of "
                "Passerelle yet (see README status); remove [link] and [[links]]"
            )
    seen: set[tuple[str, str]] = set()
    for i, spec in enumerate(settings.links):
        key = (spec.muc, spec.irc)
        if key in seen:
            problems.append(f"{source}: links.{i}: {spec.muc} ↔ {spec.irc} is listed twice")
        seen.add(key)
    return problems


def _has_link_component() -> bool:
    import importlib.util

    return importlib.util.find_spec("gateway.link") is not None


def network_model(name: str) -> type[NetworkConfig]:
    """The pydantic model that validates ``[networks.NAME]``."""
    return settings_class(name).model()


def plain(value: Any) -> Any:
    """A validated value as JSON data, secrets in clear: for :mod:`gateway.child`'s pipe
    from its validating fork, never for a log or a file."""
    if isinstance(value, BaseModel):
        return {key: plain(getattr(value, key)) for key in type(value).model_fields}
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def validate(cls: type[_S], raw: dict[str, Any]) -> _S:
    """Validate one ``[networks.NAME]`` table with ``cls.model()`` and return it as ``cls``
    (raises pydantic's ``ValidationError``, as :func:`load` does before formatting it)."""
    return from_plain(cls, plain(cls.model().model_validate(raw)))


__all__ = [
    "Config",
    "IrcChannelUrl",
    "LinkComponentConfig",
    "LinkConfig",
    "NetworkConfig",
    "Settings",
    "Storage",
    "XmppServer",
    "load",
    "network_model",
    "parse_irc_url",
    "plain",
    "validate",
]
