"""The cloud's limits: what one server accepts from its edges."""

from __future__ import annotations

from dataclasses import dataclass, field

from picospec.cloud.scheduler import StepPolicy
from picospec.errors import InvalidInputError
from picospec.security import ServerSecurity
from picospec.wire.liveness import Liveness
from picospec.wire.messages import DEFAULT_MAX_MESSAGE_BYTES


@dataclass(frozen=True)
class CloudConfig:
    """Where the cloud listens, whom it serves, what it serves, and how much one edge may ask of it."""

    host: str = "127.0.0.1"
    port: int = 50051  # 0 picks a free port
    max_sessions: int = 4  # concurrent sessions, each with its own sequence (KV range) of the target
    max_context: int = 4096  # tokens a session may hold: prompt plus output
    max_chunk_tokens: int = 64  # draft tokens per chunk
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES  # gRPC send and receive limit
    idle_timeout_s: float = 300.0  # a session that sends nothing for this long is ended
    # On SIGTERM the cloud drains: new sessions are refused (UNAVAILABLE, so a balancer sends them to
    # another replica) and running ones may finish for this long before they are cancelled.
    drain_s: float = 30.0
    model_name: str = "target"  # what the welcome message names
    threads: int = 1  # llama.cpp threads of the target
    device: str = "cpu"  # where a Hugging Face checkpoint runs (cpu, cuda, ...)
    gpu_layers: int = 0  # llama.cpp target layers offloaded to a GPU (-1: all); needs a llama.cpp built with one
    security: ServerSecurity = field(default_factory=ServerSecurity)  # TLS, token; loopback-only without them
    liveness: Liveness = field(default_factory=Liveness)  # keepalive: a vanished edge's session is freed within its bound
    # Batching: one pass evaluates the pending work of every session (one llama.cpp context holding a
    # sequence per session), at most step_tokens tokens, cutting longer work (a prompt) into pieces.
    # Off: one context per session and one session's work per pass, in arrival order. Off by default:
    # on this 2-core CPU batching served 4 edges 1.08x faster (docs/scaling.md) but tripled their time
    # to first token (prompts cut into pieces between the others' chunks); on for fairer waits and
    # more throughput with many edges, or on a GPU, where passes cost ~the same at any size.
    batching: bool = False
    step_tokens: int = 32  # on CPU a pass over 32 tokens costs ~16 decode steps, over 16 ~10
    # How long a pass waits for the sessions of the pass before it to queue their next work
    # (StepPolicy.gather_s): without it passes alternate between halves of the sessions.
    gather_s: float = 0.1
    # One KV buffer for all sessions' sequences instead of a stream each (LlamaRunner's kv_unified):
    # over streams llama.cpp cuts a pass into sub-batches with equal token counts per sequence, and a
    # pass of a 16-token chunk beside two decode steps cost 2.3x one of 18 tokens of one sequence
    # (1.0x with one buffer); mixed passes are the rule (chunks, decode steps, prompt pieces).
    kv_unified: bool = True

    @property
    def step_policy(self) -> StepPolicy:
        """What one pass of the scheduler may hold."""
        return StepPolicy(self.step_tokens, None, self.gather_s) if self.batching else StepPolicy(None, 1)

    def __post_init__(self) -> None:
        _ = self.step_policy  # refuses a bad gather_s now, not when the cloud starts
        if not 0 <= self.port <= 65535:
            raise InvalidInputError(f"port must be in [0, 65535], got {self.port}")
        for name in ("max_sessions", "max_context", "max_chunk_tokens", "max_message_bytes", "threads", "step_tokens"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_context < 2:
            raise InvalidInputError(f"max_context must hold a prompt token and a new one (>= 2), got {self.max_context}")
        if self.gpu_layers < -1:
            raise InvalidInputError(f"gpu_layers must be -1 (all), 0 or a count, got {self.gpu_layers}")
        if not self.drain_s >= 0:
            raise InvalidInputError(f"drain_s must be >= 0, got {self.drain_s}")
        if not self.idle_timeout_s > 0:
            raise InvalidInputError(f"idle_timeout_s must be positive, got {self.idle_timeout_s}")
