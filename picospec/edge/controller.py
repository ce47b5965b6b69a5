"""The per-session controller: how much to speculate, round by round, and when to let the cloud
decode instead (pure: no I/O, no clock; the edge passes in what it measured). The maths of rates
and costs is picospec/costmodel.py."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Sequence

from picospec.costmodel import Costs, CostTracker, best_chunk_len, replay_rate
from picospec.errors import InvalidInputError

# Acceptance by the drafter's confidence (its own probability of the token it drafted, before the
# sampling transforms). Priors from teacher-forced runs of the default pair on code and chat
# (docs/design.md): >= 0.97 agreed 0.97-1.0, below 0.5 about 0.41; updated online per session.
CONFIDENCE_EDGES = (0.5, 0.75, 0.9, 0.97)
CONFIDENCE_PRIOR = (0.42, 0.6, 0.8, 0.92, 0.99)
PRIOR_WEIGHT = 3.0  # pseudo-observations behind each prior
SHARED_WEIGHT = 0.25  # how far each reply moves the estimate of other sessions' tokens per pass


class AcceptanceModel:
    """Per-session estimate of the chance that a draft token passes, by confidence bin.

    With by_confidence=False every token gets the session's mean (the ablation without the cut-off).
    """

    def __init__(self, by_confidence: bool = True) -> None:
        self.by_confidence = by_confidence
        self._passed = [p * PRIOR_WEIGHT for p in CONFIDENCE_PRIOR]
        self._seen = [PRIOR_WEIGHT] * len(CONFIDENCE_PRIOR)
        self._mean_passed, self._mean_seen = 0.8 * PRIOR_WEIGHT, PRIOR_WEIGHT

    @staticmethod
    def bin_of(confidence: float) -> int:
        return sum(confidence >= edge for edge in CONFIDENCE_EDGES)

    def estimate(self, confidence: float) -> float:
        """The chance that a token drafted with this confidence passes."""
        if not self.by_confidence:
            return self.mean
        b = self.bin_of(confidence)
        return self._passed[b] / self._seen[b]

    @property
    def mean(self) -> float:
        """The chance that a token passes, whatever its confidence."""
        return self._mean_passed / self._mean_seen

    def observe(self, confidence: float, passed: float) -> None:
        """A token drafted with `confidence` passed (1), failed (0), or passed with a known probability."""
        b = self.bin_of(confidence)
        self._passed[b] += passed
        self._seen[b] += 1.0
        self._mean_passed += passed
        self._mean_seen += 1.0


POLICIES = ("adaptive", "fixed")  # picospec's --policy choices
DEFAULT_POLICY = POLICIES[0]  # EdgeConfig's default: the controller runs


class Mode(str, Enum):
    SPECULATE = "speculate"
    FALLBACK = "fallback"  # the cloud decodes; the edge follows and watches how its drafts would fare


@dataclass(frozen=True)
class ControllerConfig:
    """What the controller may decide (EdgeConfig.controller = None runs the fixed chunk policy
    instead). All on is the default; each switch is one ablation step."""

    confidence: bool = True  # per-token cut-off from the drafter's confidence (else the mean)
    fallback: bool = True  # switch to cloud-side decoding when speculation does not pay
    max_chunk: int = 16  # the longest chunk considered
    max_lookahead: int = 32  # most drafted-but-unverified tokens (the fixed policy has its own)
    # While the cloud decodes, the drafter follows its tokens this many at a time, when the edge is
    # idle: one pass instead of many, none at all for a generation the cloud decodes end to end (on
    # one machine the two models share memory bandwidth, so the drafter's work slows the cloud too),
    # and as many tokens are ordered ahead, so the cloud never waits while the drafter catches up.
    follow_batch: int = 16
    margin: float = 0.05  # hysteresis: a mode must beat the other by this fraction to switch
    # Before a window of the cloud's tokens has been seen, speculation starts only if the acceptance
    # model's mean alone says it earns this much more than cloud decoding (a batching cloud, whose
    # shared passes make cloud decoding slow and drafts nearly free; a GPU).
    early_margin: float = 0.5
    window: int = 16  # committed tokens over which speculation's measured rate is judged
    probe_every: int = 128  # fallback tokens before speculation is tried again regardless (doubles per failed try)
    max_probe_every: int = 512

    @staticmethod
    def for_policy(policy: str, fallback: bool = True, confidence: bool = True) -> "ControllerConfig | None":
        """The controller of the CLI's --policy: "adaptive" runs one, "fixed" none (fixed chunks)."""
        if policy not in POLICIES:
            raise InvalidInputError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        return ControllerConfig(fallback=fallback, confidence=confidence) if policy == "adaptive" else None

    def __post_init__(self) -> None:
        if self.max_chunk < 1 or self.max_lookahead < self.max_chunk:
            raise InvalidInputError("controller: max_chunk >= 1 and max_lookahead >= max_chunk")
        if self.window < 2 or self.probe_every < 1 or min(self.margin, self.early_margin) < 0 or self.follow_batch < 1:
            raise InvalidInputError("controller: window >= 2, probe_every >= 1, follow_batch >= 1 and margins >= 0")


@dataclass
class Controller:
    """The per-session decision maker. The edge feeds it measurements and asks it two things: how
    long the chunk being built should be, and whether to speculate or let the cloud decode."""

    config: ControllerConfig
    tracker: CostTracker
    draft_s: float
    rtt_s: float
    # State, not settings: set here and in __post_init__, changed only by the observations below.
    acceptance: AcceptanceModel = field(init=False)
    mode: Mode = field(init=False)
    switches: int = field(init=False, default=0)
    _progress: deque = field(init=False)  # (seconds, tokens committed) samples while speculating
    _shadow: deque = field(init=False)  # acceptance estimates of positions the cloud decoded
    _verified: deque = field(init=False)  # acceptance estimates of positions verified while speculating
    # Measured / replayed speculation rate, as of the last fall-back. The replay leaves out what the
    # model does not see (the edge applying verdicts between draft steps, the two sides competing
    # for memory bandwidth on one machine): measured 0.64-0.92 of it on the default pair here.
    _bias: float = field(init=False, default=0.8)
    _fallback_tokens: int = field(init=False, default=0)
    _probe_every: int = field(init=False)
    _speculated_since_switch: int = field(init=False, default=0)
    _rtt_measured: bool = field(init=False, default=False)
    # Other sessions' tokens in each pass of a batching cloud (a moving mean of what replies report).
    _shared: float = field(init=False, default=0.0)
    _shared_measured: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        # With fallback allowed a session starts by letting the cloud decode (from its prompt pass,
        # as `ar` does) and speculates once what the drafter would have drafted says it pays.
        self.mode = Mode.FALLBACK if self.config.fallback else Mode.SPECULATE
        self.acceptance = AcceptanceModel(self.config.confidence)
        self._progress = deque()
        self._shadow = deque(maxlen=self.config.window * 2)
        self._verified = deque(maxlen=self.config.window * 2)
        self._probe_every = self.config.probe_every

    @property
    def costs(self) -> Costs:
        return Costs(self.tracker.curve, self.draft_s, self.rtt_s, self._shared)

    # -- measurements ---------------------------------------------------------------------------

    def mark(self, now_s: float, committed: int) -> None:
        """Speculation (re)starts now with `committed` tokens verified: the start of its measured window."""
        if not self._progress:
            self._progress.append((now_s, committed))

    def observe_draft_step(self, seconds: float) -> None:
        if math.isfinite(seconds) and seconds > 0:
            self.draft_s += 0.2 * (seconds - self.draft_s)

    def observe_rtt(self, seconds: float) -> None:
        """A round trip's network time (arrival - ship - compute). The first measurement replaces
        the prior (the welcome's wait, which also holds the cloud's session set-up); after that,
        queueing only ever adds to it, so the estimate drops at once and rises slowly."""
        if not (math.isfinite(seconds) and seconds >= 0):
            return
        if not self._rtt_measured or seconds < self.rtt_s:
            self.rtt_s, self._rtt_measured = seconds, True
        else:
            self.rtt_s += 0.1 * (seconds - self.rtt_s)

    def observe_verdict(
        self, confidences: Sequence[float], accepted: int, verify_s: float, now_s: float, committed: int, shared_tokens: int = 0
    ) -> None:
        """A chunk drafted with these confidences had `accepted` tokens pass, in a pass that took
        verify_s and held shared_tokens of other sessions; `committed` tokens are now verified in
        all, at `now_s` on the edge's clock."""
        for i, confidence in enumerate(confidences[: accepted + 1]):
            self._verified.append(self.acceptance.estimate(confidence))
            self.acceptance.observe(confidence, 1.0 if i < accepted else 0.0)
        self._observe_pass(len(confidences), verify_s, shared_tokens)
        self._progress.append((now_s, committed))
        self._speculated_since_switch += accepted + (accepted < len(confidences))

    def observe_decode_step(self, seconds: float, shared_tokens: int = 0) -> None:
        """The cloud decoded a token in `seconds`, in a pass that held shared_tokens of other sessions."""
        if shared_tokens:
            self._observe_pass(1, seconds, shared_tokens)
        else:
            self.tracker.observe_decode(seconds)

    def _observe_pass(self, own_tokens: int, seconds: float, shared_tokens: int) -> None:
        self.tracker.observe_verify(own_tokens + shared_tokens, seconds)
        weight = SHARED_WEIGHT if self._shared_measured else 1.0  # the first reply replaces the prior of 0
        self._shared += weight * (shared_tokens - self._shared)
        self._shared_measured = True

    def observe_decoded(self, confidence: float, passed: float) -> None:
        """The cloud decoded a token; the drafter would have drafted it with this confidence and
        the chance `passed` that it would have passed."""
        self.acceptance.observe(confidence, passed)
        self._shadow.append(self.acceptance.estimate(confidence))
        self._fallback_tokens += 1

    # -- decisions ------------------------------------------------------------------------------

    def chunk_target(self, confidences: Sequence[float]) -> int:
        """How many of the drafted tokens (with these confidences) the chunk should hold; more than
        len(confidences) means: draft on.

        Tokens not drafted yet are planned as if confident: the edge sees each one's confidence
        before it joins the chunk, and cuts the chunk before one that does not pay.
        """
        estimates = [self.acceptance.estimate(c) for c in confidences]
        j, _ = best_chunk_len(estimates, self.acceptance.estimate(1.0), self.costs, self.config.max_chunk)
        return j

    def speculation_rate(self) -> float | None:
        """Tokens per second committed while speculating, over the last `window` tokens (None
        until a window has been seen)."""
        if len(self._progress) < 2:
            return None
        while len(self._progress) > 2 and self._progress[-1][1] - self._progress[1][1] >= self.config.window:
            self._progress.popleft()
        (t0, n0), (t1, n1) = self._progress[0], self._progress[-1]
        if n1 - n0 < self.config.window or t1 <= t0:
            return None
        return (n1 - n0) / (t1 - t0)

    def decide(self) -> Mode:
        """Switch modes when the other one pays; return the mode to run now."""
        if not self.config.fallback:
            return self.mode
        fallback_rate = self.costs.fallback_rate
        if self.mode is Mode.SPECULATE:
            rate = self.speculation_rate()
            if rate is not None and rate < fallback_rate * (1 - self.config.margin):
                # The replay of the cost model over what was verified, against what was measured:
                # the model's optimism, taken out of its predictions while the cloud decodes.
                replayed = replay_rate(list(self._verified), self.costs, self.config.max_chunk)
                self._bias = min(1.0, rate / replayed) if replayed > 0 else 1.0
                self._switch(Mode.FALLBACK)
        elif self.mode is Mode.FALLBACK and self._fallback_tokens >= self.config.window:
            predicted = self._bias * replay_rate(list(self._shadow), self.costs, self.config.max_chunk)
            if predicted > fallback_rate * (1 + self.config.margin) or self._fallback_tokens >= self._probe_every:
                self._switch(Mode.SPECULATE)
        elif self.mode is Mode.FALLBACK and self.switches == 0:
            prior = [self.acceptance.mean] * self.config.window
            if self._bias * replay_rate(prior, self.costs, self.config.max_chunk) > fallback_rate * (1 + self.config.early_margin):
                self._switch(Mode.SPECULATE)
        return self.mode

    def _switch(self, mode: Mode) -> None:
        if mode is Mode.FALLBACK:
            # A try that fell back before earning a second window was a failed probe: wait longer.
            failed = self._speculated_since_switch < 2 * self.config.window
            self._probe_every = min(self._probe_every * 2, self.config.max_probe_every) if failed else self.config.probe_every
        self.mode, self.switches = mode, self.switches + 1
        self._progress.clear()
        self._shadow.clear()
        self._verified.clear()
        self._fallback_tokens = self._speculated_since_switch = 0
