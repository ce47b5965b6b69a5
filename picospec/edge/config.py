"""What an edge generation runs: the method, the verification mode and the chunking policy."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from picospec.edge.controller import ControllerConfig
from picospec.edge.lookup import LookupConfig
from picospec.edge.policy import ChunkPolicy
from picospec.errors import InvalidInputError
from picospec.sampling import SamplingParams
from picospec.verify import VerifyConfig, VerifyMode
from picospec.wire.liveness import Liveness


class Method(str, Enum):
    """The decoding methods PicoSpec compares (the paper's baselines and its own pipeline)."""

    AR = "ar"  # cloud-only autoregressive decoding, streamed to the edge
    EDGE = "edge"  # edge-only decoding with the drafter
    VANILLA = "vanilla"  # stop-and-wait speculative decoding, full draft distributions uplinked
    SYNC = "sync"  # stop-and-wait with separate rejection sampling (the ablation without the pipeline)
    PICOSPEC = "picospec"  # the asynchronous pipeline with separate rejection sampling

    @property
    def speculative(self) -> bool:
        return self in (Method.VANILLA, Method.SYNC, Method.PICOSPEC)

    @property
    def pipelined(self) -> bool:
        return self is Method.PICOSPEC

    @property
    def default_mode(self) -> VerifyMode:
        return VerifyMode.FULL if self is Method.VANILLA else VerifyMode.EXACT


class CloudLoss(str, Enum):
    """What the edge does when the stream to its cloud breaks mid-generation."""

    FAIL = "fail"  # end with an error (the tokens so far are in the error's report)
    RESUME = "resume"  # reconnect with backoff and continue from the committed tokens
    LOCAL = "local"  # resume; once the retries run out, finish with the drafter alone (marked edge-only)


@dataclass(frozen=True)
class Recovery:
    """How the edge survives losing its cloud: reconnection with exponential backoff, bounded
    by `retries` attempts in a row that commit nothing, and keepalive to notice a silent one."""

    on_loss: CloudLoss = CloudLoss.RESUME
    retries: int = 6
    backoff_s: float = 0.25  # the first wait; it doubles with each failed attempt
    max_backoff_s: float = 8.0
    liveness: Liveness = field(default_factory=Liveness)

    def __post_init__(self) -> None:
        object.__setattr__(self, "on_loss", CloudLoss(self.on_loss))
        if self.retries < 0 or not 0 <= self.backoff_s <= self.max_backoff_s:
            raise InvalidInputError("retries must be >= 0 and 0 <= backoff_s <= max_backoff_s")

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before reconnection attempt `attempt` (1, 2, ...)."""
        return min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))


@dataclass(frozen=True)
class DrafterConfig:
    """How the edge runs its drafter (llama.cpp): what a faster edge, or one with a GPU, changes."""

    threads: int = 1
    gpu_layers: int = 0  # layers offloaded to a GPU (-1: all); needs llama-cpp-python built with one

    def __post_init__(self) -> None:
        if self.threads < 1 or self.gpu_layers < -1:
            raise InvalidInputError(f"drafter threads must be >= 1 and GPU layers >= -1, got {self.threads}, {self.gpu_layers}")


@dataclass(frozen=True)
class EdgeConfig:
    """One generation's settings. Stop-and-wait methods take a bonus token per accepted chunk;
    the pipeline does not, since its next chunk is already drafted on the edge's own guess.

    The pipeline (picospec) is steered by `controller` (adaptive chunks, confidence cut-off,
    fallback to cloud decoding); controller=None runs the fixed ChunkPolicy of chunk_len and
    max_lookahead, which the stop-and-wait methods always run.
    """

    method: Method = Method.PICOSPEC
    params: SamplingParams = field(default_factory=SamplingParams)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    max_new_tokens: int = 128
    chunk_len: int = 4  # most draft tokens per chunk (the paper found 4 best)
    # Most drafted-but-unverified tokens the fixed-policy pipeline holds; None: twice chunk_len.
    max_lookahead: int | None = None
    controller: ControllerConfig | None = field(default_factory=ControllerConfig)
    # Prompt lookup: draft tokens copied from earlier in the context where it repeats itself, the
    # drafter drafting elsewhere (None: the drafter alone). Speculative methods only. Off by
    # default: on the 2-core CPU it did not beat the drafter alone on code edits, where the 0.5B
    # drafter copies as well (docs/benchmarks.md, "Prompt lookup").
    lookup: LookupConfig | None = None
    recovery: Recovery = field(default_factory=Recovery)

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", Method(self.method))
        if self.method is Method.VANILLA and self.verify.mode is not VerifyMode.FULL:
            raise InvalidInputError("vanilla uplinks full draft distributions (--verify full); use sync for the others")
        if self.max_new_tokens < 1 or self.chunk_len < 1:
            raise InvalidInputError("max_new_tokens and chunk_len must be >= 1")
        if self.max_lookahead is None:
            object.__setattr__(self, "max_lookahead", 2 * self.chunk_len)
        if self.max_lookahead < self.chunk_len:
            raise InvalidInputError(f"the lookahead ({self.max_lookahead}) must be at least the chunk length ({self.chunk_len})")

    @property
    def policy(self) -> ChunkPolicy:
        return ChunkPolicy(self.method.pipelined, self.chunk_len, self.max_lookahead, self.max_new_tokens)

    @property
    def adaptive(self) -> ControllerConfig | None:
        """The controller settings when this generation runs one (the pipeline with a controller)."""
        return self.controller if self.method.pipelined else None

    @property
    def bonus(self) -> bool:
        return self.method.speculative and not self.method.pipelined
