"""The ``[networks.echo]`` section: the common network keys and the echo network's own."""

from typing import Annotated

from pydantic import Field

from gateway.config import NetworkConfig


class Config(NetworkConfig):
    """Configuration of the echo network."""

    delay_ms: Annotated[int, Field(ge=0, le=10_000)] = 0
    """How long the echo contact waits before answering, in milliseconds."""
