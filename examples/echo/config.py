"""The ``[networks.echo]`` section: the common network keys and the echo network's own.

``Config`` is what the plugin reads at run time (a frozen dataclass, no pydantic in the
network's process); :func:`_model` is its pydantic twin, built only to validate the file.
A unit test keeps the two in step (``tests/unit/test_config_settings.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Annotated

from gateway.runtime import NetworkSettings

if TYPE_CHECKING:
    from gateway.config import NetworkConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class Config(NetworkSettings):
    """Configuration of the echo network."""

    delay_ms: int = 0
    """How long the echo contact waits before answering, in milliseconds (0 to 10,000)."""

    @classmethod
    def model(cls) -> type[NetworkConfig]:
        return _model()


@cache
def _model() -> type[NetworkConfig]:
    from pydantic import Field

    from gateway.config import NetworkConfig

    class EchoConfig(NetworkConfig):
        delay_ms: Annotated[int, Field(ge=0, le=10_000)] = 0

    return EchoConfig
