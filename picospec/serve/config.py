"""What `picospec serve` listens on and how much it takes on: its flags' defaults live here."""

from __future__ import annotations

from dataclasses import dataclass

from picospec.cloud.config import CloudConfig
from picospec.errors import InvalidInputError


@dataclass(frozen=True)
class ServeConfig:
    """The HTTP server's settings (the decoding settings are generate's flags)."""

    host: str = "127.0.0.1"  # loopback: other machines reach it only when told to
    port: int = 8000
    max_queue: int = 8  # requests that may wait for the edge's one drafter; more get 429
    max_context: int = CloudConfig.max_context  # prompt plus max_tokens, as the cloud allows by default

    def __post_init__(self) -> None:
        if not 0 < self.port <= 65535:
            raise InvalidInputError(f"port must be in [1, 65535], got {self.port}")
        if self.max_queue < 0 or self.max_context < 2:
            raise InvalidInputError(f"max_queue must be >= 0 and max_context >= 2, got {self.max_queue}, {self.max_context}")
