"""What a network's process knows about itself: its own settings, as plain frozen objects.

The network's process never imports pydantic (~11 MiB of resident memory in each child):
:mod:`gateway.child` has the configuration validated in a short-lived fork (the same
pydantic models and fix-it messages as ``passerelle check``), receives this network's
section back as JSON through a pipe, and builds the plugin's own light settings class
from it with :func:`from_plain` before slidge imports the plugin. A plugin then reads
its section with ``network_config(Config)``, where ``Config`` is a frozen dataclass
deriving from :class:`NetworkSettings`; its pydantic twin, built only when validating,
is ``Config.model()``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, Union

if TYPE_CHECKING:
    from .config import NetworkConfig

LogLevel = typing.Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class Secret:
    """A secret string that prints as ``**********`` (the light form of pydantic's
    ``SecretStr``, with the same ``get_secret_value()``)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********"

    def __len__(self) -> int:  # an empty secret is falsy, as with ``SecretStr``
        return len(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class NetworkSettings:
    """Keys every ``[networks.NAME]`` section has, already validated (see
    :class:`gateway.config.NetworkConfig` for what each means). Plugins subclass it."""

    jid: str
    secret: Secret
    enabled: bool = True
    name: str | None = None
    log_level: LogLevel | None = None

    @classmethod
    def model(cls) -> type[NetworkConfig]:
        """The pydantic model that validates this section (imports pydantic)."""
        from .config import NetworkConfig

        return NetworkConfig


_S = TypeVar("_S", bound=NetworkSettings)
_T = TypeVar("_T")
_current: NetworkSettings | None = None


def set_network_config(config: NetworkSettings) -> None:
    global _current  # noqa: PLW0603  (one network per process: this is process state)
    _current = config


def network_config(model: type[_S]) -> _S:
    """This process's ``[networks.NAME]`` section, as the plugin's own settings class."""
    if not isinstance(_current, model):
        raise RuntimeError(f"no {model.__name__} configuration set for this process")
    return _current


def settings_class(name: str) -> type[NetworkSettings]:
    """The light settings class of ``[networks.NAME]``: ``Config`` in the plugin's
    ``config.py``, whose ``model()`` is the pydantic model that validates the section."""
    import importlib

    from .networks import NetworkUnavailable, plugin_package

    module = importlib.import_module(f"{plugin_package(name)}.config")
    cls = getattr(module, "Config", None)
    if not (isinstance(cls, type) and issubclass(cls, NetworkSettings)):
        raise NetworkUnavailable(f"plugin {module.__name__} has no Config class")  # our bug
    return cls


def from_plain(cls: type[_T], data: Mapping[str, Any]) -> _T:
    """Build the dataclass ``cls`` from validated JSON data (:func:`gateway.config.plain`).

    Nested dataclasses, ``dict``/``list``/``tuple`` of them, :class:`Secret` and
    :class:`~pathlib.Path` fields are rebuilt from their JSON form; missing keys take the
    field's default. A key the class lacks is our bug (the model and the class drifted
    apart) and raises ``TypeError``.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - fields
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
    return cls(**{key: _convert(hints[key], value) for key, value in data.items()})


def _convert(hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):  # only ``X | None`` in settings classes
        options = [a for a in args if a is not type(None)]
        hint = options[0] if value is not None and len(options) == 1 else Any
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    result = value
    if hint in (Secret, Path):
        result = hint(value)
    elif isinstance(hint, type) and dataclasses.is_dataclass(hint):
        result = from_plain(hint, value)
    elif origin in (dict, Mapping):
        result = {k: _convert(args[1], v) for k, v in value.items()}
    elif origin is list:
        result = [_convert(args[0], v) for v in value]
    elif origin is tuple:
        result = tuple(_convert(args[0], v) for v in value)
    elif hint is float and isinstance(value, int):
        result = float(value)
    return result
