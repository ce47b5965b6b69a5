"""What one generation measured, in the shape `picospec generate --json` prints."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field


@dataclass
class TimelineEvent:
    """One interval on the edge's clock (seconds since the generation started); verdict and decoded
    (a token the cloud decoded) are instants, when they arrived."""

    kind: str  # draft | prompt (the drafter's prompt pass) | verdict | decoded (simulator: also uplink, verify, ...)
    start: float
    end: float


@dataclass
class EdgeReport:
    """Tokens and measurements of one generation."""

    method: str
    verify: str
    token_ids: list[int] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # per token: draft (accepted) | cloud | edge | edge-only
    text: str = ""
    wall_s: float = 0.0
    ttft_s: float | None = None
    accepted_lengths: list[int] = field(default_factory=list)  # per round (verified chunk)
    chunk_lengths: list[int] = field(default_factory=list)  # per round: draft tokens in the chunk
    verify_times: list[float] = field(default_factory=list)  # per round: cloud compute seconds
    topk_tail_mass: list[float] = field(default_factory=list)  # topk: target mass outside the K sent
    drafted: int = 0
    looked_up: int = 0  # of the drafted tokens, those prompt lookup proposed
    lookup_accepted: int = 0  # of those, the ones that passed verification
    discarded: int = 0  # drafted tokens thrown away after rejections
    decoded: int = 0  # tokens the cloud decoded itself in a speculative session (first token, fallback)
    mode_switches: int = 0  # between speculation and fallback to cloud decoding
    chunks_sent: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    cloud_passes: int = 0
    cloud_busy_s: float = 0.0
    cloud_prefill_s: float | None = None  # the cloud's prompt pass (compute only)
    cloud_decode_s: float = 0.0  # the cloud's compute for the tokens it decoded itself (`decoded`)
    edge_busy_s: float = 0.0
    resumes: int = 0  # reconnection attempts after losing the cloud, each a session resuming after the committed tokens
    edge_only: int = 0  # the last tokens, decoded by the drafter alone once the cloud was lost for good
    # "stop" after a stop token, "length" at max_new_tokens or the cloud's context limit (as the
    # OpenAI API reports it); set once the generation ends.
    finish_reason: str = ""
    timeline: list[TimelineEvent] = field(default_factory=list)

    @property
    def new_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def rounds(self) -> int:
        return len(self.accepted_lengths)

    @property
    def mean_accepted(self) -> float:
        return sum(self.accepted_lengths) / self.rounds if self.rounds else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.wall_s if self.wall_s > 0 else 0.0

    def summary(self) -> dict:
        """The JSON object of `picospec generate --json` (without the timeline)."""
        data = {k: v for k, v in asdict(self).items() if k not in ("timeline", "sources", "chunk_lengths", "verify_times", "accepted_lengths", "topk_tail_mass")}
        data.update(
            new_tokens=self.new_tokens,
            tokens_per_s=self.tokens_per_s,
            rounds=self.rounds,
            mean_accepted=self.mean_accepted,
            accepted_histogram=dict(sorted(Counter(self.accepted_lengths).items())),
            bytes_up_per_token=self.bytes_up / max(1, self.new_tokens),
            bytes_down_per_token=self.bytes_down / max(1, self.new_tokens),
        )
        return data


def finish_reason(token_ids: list[int], stop_ids: frozenset[int] | set[int]) -> str:
    """Why a generation ended: "stop" when its last token is a stop token, else "length"."""
    return "stop" if token_ids and token_ids[-1] in stop_ids else "length"
