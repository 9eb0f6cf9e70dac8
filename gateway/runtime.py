"""What a network's process knows about itself: its own typed configuration.

The child entry point (:mod:`gateway.child`) sets it before slidge imports the plugin, so a
plugin reads its section with ``network_config(Config)`` and never parses files itself.
"""

from typing import TypeVar

from .config import NetworkConfig

_N = TypeVar("_N", bound=NetworkConfig)
_current: NetworkConfig | None = None


def set_network_config(config: NetworkConfig) -> None:
    global _current  # noqa: PLW0603  (one network per process: this is process state)
    _current = config


def network_config(model: type[_N]) -> _N:
    """This process's ``[networks.NAME]`` section, as the plugin's own model."""
    if not isinstance(_current, model):
        raise RuntimeError(f"no {model.__name__} configuration set for this process")
    return _current
