"""The cost model of an edge-cloud system: what each step of the protocol costs (seconds, bytes).

One CostProfile feeds the ideal bound (bound.py), the simulator (simulator.py) and the
benchmark's time estimate (runner.py). Profiles come from the benchmark's own runs
(measure.py) or are assumed: read from a file, the paper's setups, the benchmark machine for
planning (assumed.py).

picospec/costmodel.py is the controller's own, online view of the cloud (a per-m table it refines
from live passes, and what a chunk earns); this is the benchmark's offline one, with the link,
message sizes, prompt passes and overheads besides. verify(m) here is the measured median, or a
least-squares line over all passes where m was never measured (the committed predictions rest on
that), where CostCurve extrapolates along its last slope; the simulator hands the controller it
runs a CostCurve read off this profile (simulator._cost_curve), as a cloud's welcome would.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from picospec.edge.config import Method
from picospec.errors import InvalidInputError
from picospec.transport.netem import LinkProfile
from picospec.verify import VerifyMode

STOP_AND_WAIT = (Method.VANILLA, Method.SYNC)
SPECULATIVE = tuple(m for m in Method if m.speculative)


@dataclass(frozen=True)
class VerifyCost:
    """Cloud seconds of one verification pass over m evaluated tokens: verify(m).

    verify(m) = medians[m] where measured, else intercept_s + per_token_s * m.
    """

    intercept_s: float
    per_token_s: float
    medians: dict[int, float] = field(default_factory=dict)

    def __call__(self, m: int) -> float:
        return self.medians.get(m, self.intercept_s + self.per_token_s * m)

    @staticmethod
    def fit(samples: Sequence[tuple[int, float]]) -> "VerifyCost":
        """Least squares a + b*m over (m, seconds) samples, and each m's median."""
        if not samples:
            raise InvalidInputError("no verification rounds to measure verify(m) from")
        by_m: dict[int, list[float]] = defaultdict(list)
        for m, seconds in samples:
            by_m[m].append(seconds)
        medians = {m: statistics.median(v) for m, v in sorted(by_m.items())}
        if len(by_m) == 1:  # one size seen: a line through the origin is all the data supports
            ((m, median),) = medians.items()
            return VerifyCost(0.0, median / m, medians)
        ms, seconds = np.array(samples, dtype=float).T
        per_token, intercept = np.polyfit(ms, seconds, 1)
        return VerifyCost(float(intercept), float(per_token), medians)


@dataclass(frozen=True)
class CostProfile:
    """Compute, link and message costs of one edge-cloud system (seconds, bytes).

    Per-prompt prefill times (keyed "workload:prompt_id") override the means where known.
    """

    name: str
    draft_s: float
    verify: VerifyCost
    target_s: float
    cloud_prefill_s: float
    edge_prefill_s: float
    link: LinkProfile
    bytes_up_per_draft_token: dict[VerifyMode, float]
    bytes_down_per_round: dict[VerifyMode, float]
    bytes_down_per_ar_token: float
    round_overhead_s: float = 0.0
    # Seconds a streamed decode step (ar's, the controller's fallback) takes beyond its compute: the
    # cloud's session loop and gRPC, and the edge's receipt.
    decode_overhead_s: float = 0.0
    round_overhead_by_mode: dict[VerifyMode, float] = field(default_factory=dict)
    cloud_prefill_by_prompt: dict[str, float] = field(default_factory=dict)
    edge_prefill_by_prompt: dict[str, float] = field(default_factory=dict)
    draft_s_by_method: dict[Method, float] = field(default_factory=dict)
    source: str = "measured from the benchmark's runs"

    def with_link(self, link: LinkProfile) -> "CostProfile":
        return replace(self, link=link)

    @property
    def decode_step_s(self) -> float:
        """Seconds between streamed tokens when the cloud decodes: its step and the overhead."""
        return self.target_s + self.decode_overhead_s

    def draft(self, method: Method) -> float:
        """Seconds of one drafter step as `method`'s edge takes it (default: draft_s)."""
        return self.draft_s_by_method.get(method, self.draft_s)

    def overhead(self, mode: VerifyMode) -> float:
        """Seconds a verdict takes beyond the cloud's compute and the link model, in `mode`."""
        return self.round_overhead_by_mode.get(mode, self.round_overhead_s)

    def cloud_prefill(self, prompt: str | None = None) -> float:
        return self.cloud_prefill_by_prompt.get(prompt, self.cloud_prefill_s)

    def edge_prefill(self, prompt: str | None = None) -> float:
        return self.edge_prefill_by_prompt.get(prompt, self.edge_prefill_s)

    def sizes(self, mode: VerifyMode) -> bool:
        """Whether this profile knows the message sizes of `mode`."""
        return mode in self.bytes_up_per_draft_token and mode in self.bytes_down_per_round

    def up_bytes(self, mode: VerifyMode) -> float:
        """Uplink bytes per draft token in `mode`."""
        return self._bytes(self.bytes_up_per_draft_token, mode)

    def down_bytes(self, mode: VerifyMode) -> float:
        """Downlink bytes per verdict in `mode`."""
        return self._bytes(self.bytes_down_per_round, mode)

    def uplink_s(self, mode: VerifyMode, n_tokens: int) -> float:
        """Serialisation of a chunk of n draft tokens (propagation excluded)."""
        return self.link.serialisation_s(n_tokens * self.up_bytes(mode))

    def downlink_s(self, mode: VerifyMode) -> float:
        """Serialisation of one verdict (propagation excluded)."""
        return self.link.serialisation_s(self.down_bytes(mode))

    def _bytes(self, table: dict[VerifyMode, float], mode: VerifyMode) -> float:
        if not self.sizes(mode):
            raise InvalidInputError(f"{self.name}: no message sizes for verify mode {VerifyMode(mode).value!r} (no such runs measured)")
        return table[mode]
