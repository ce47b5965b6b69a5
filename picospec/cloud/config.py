"""The cloud's limits: what one server accepts from its edges."""

from __future__ import annotations

from dataclasses import dataclass, field

from picospec.errors import InvalidInputError
from picospec.security import ServerSecurity
from picospec.wire.liveness import Liveness
from picospec.wire.messages import DEFAULT_MAX_MESSAGE_BYTES


@dataclass(frozen=True)
class CloudConfig:
    """Where the cloud listens, whom it serves, what it serves, and how much one edge may ask of it."""

    host: str = "127.0.0.1"
    port: int = 50051  # 0 picks a free port
    max_sessions: int = 4  # concurrent sessions, each with its own target runner (KV cache)
    max_context: int = 4096  # tokens a session may hold: prompt plus output
    max_chunk_tokens: int = 64  # draft tokens per chunk
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES  # gRPC send and receive limit
    idle_timeout_s: float = 300.0  # a session that sends nothing for this long is ended
    model_name: str = "target"  # what the welcome message names
    threads: int = 1  # llama.cpp threads per session
    device: str = "cpu"  # where a Hugging Face checkpoint runs (cpu, cuda, ...); llama.cpp runs on the CPU
    security: ServerSecurity = field(default_factory=ServerSecurity)  # TLS, token; loopback-only without them
    liveness: Liveness = field(default_factory=Liveness)  # keepalive: a vanished edge's session is freed within its bound

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise InvalidInputError(f"port must be in [0, 65535], got {self.port}")
        for name in ("max_sessions", "max_context", "max_chunk_tokens", "max_message_bytes"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.idle_timeout_s > 0:
            raise InvalidInputError(f"idle_timeout_s must be positive, got {self.idle_timeout_s}")
