"""The per-session controller: how much to speculate, round by round, and when to let the cloud
decode instead (pure: no I/O, no clock; the edge passes in what it measured). The maths of rates
and costs is picospec/costmodel.py."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Iterable, Sequence

from picospec.costmodel import CostCurve, Costs, CostTracker, best_chunk_len, speculation_pays, start_up_s, steady_rate
from picospec.errors import InvalidInputError

# Acceptance by the drafter's confidence (its own probability of the token it drafted, before the
# sampling transforms). Priors from teacher-forced runs of the default pair on code and chat
# (docs/design.md): >= 0.97 agreed 0.97-1.0, below 0.5 about 0.41; updated online per session.
CONFIDENCE_EDGES = (0.5, 0.75, 0.9, 0.97)
CONFIDENCE_PRIOR = (0.42, 0.6, 0.8, 0.92, 0.99)
# Prompt lookup's tokens, by the drafter's confidence in them: a copied token the drafter doubts is
# still often right (an identifier repeated from the prompt), one it is sure of as right as its own.
# Not measured per bin (lookup's tokens passed 92 of 96 and 49 of 50 times on code edits here,
# docs/benchmarks.md): moved by what each session observes.
LOOKUP_PRIOR = (0.7, 0.85, 0.93, 0.97, 0.99)
PRIOR_WEIGHT = 3.0  # pseudo-observations behind each prior
LOOKUP_TRACKING = 2  # lookup's proposals right in a row: it is tracking a copy
SHARED_WEIGHT = 0.25  # how far each reply moves the estimate of other sessions' tokens per pass


class AcceptanceModel:
    """Per-session estimate of the chance that a draft token passes, by confidence bin.

    With by_confidence=False every token gets the session's mean (the ablation without the cut-off).
    """

    def __init__(self, by_confidence: bool = True, prior: Sequence[float] = CONFIDENCE_PRIOR, mean_prior: float = 0.8) -> None:
        self.by_confidence = by_confidence
        self._passed = [p * PRIOR_WEIGHT for p in prior]
        self._seen = [PRIOR_WEIGHT] * len(prior)
        self._mean_passed, self._mean_seen = mean_prior * PRIOR_WEIGHT, PRIOR_WEIGHT

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

    def observe(self, confidence: float | None, passed: float) -> None:
        """A token drafted with `confidence` passed (1), failed (0), or passed with a known
        probability; confidence None (not known) counts towards the mean only."""
        if confidence is not None:
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
    # Chunks awaiting verdicts beyond which the drafter waits: one being verified and one queued
    # behind it keep the cloud busy; a third is drafted on the chance that both pass, and on one
    # machine every draft step slows the cloud's pass beside it (1.1-1.5x on the AVX2 VM,
    # scripts/contention.py), where 56 of 91 drafts on an MT-bench answer were thrown away.
    chunks_ahead: int = 2
    # While the cloud decodes, the drafter follows its tokens this many at a time, when the edge is
    # idle, and as many tokens are ordered ahead, so the cloud never waits while the drafter catches
    # up. Few: every token ordered ahead when speculation starts is decoded at cloud speed (16 of
    # them were 12-13 in flight at each switch on HumanEval, about 0.4 s at 10 tokens/s against
    # 14.5 speculating); a pass over 4 costs the drafter about 2.5 of its steps, over 16 about 7.
    follow_batch: int = 4
    margin: float = 0.05  # hysteresis: a mode must beat the other by this fraction to switch
    # Before a window of the cloud's tokens has been seen, speculation starts only if the acceptance
    # model's mean alone says it earns this much more than cloud decoding (a batching cloud, whose
    # shared passes make cloud decoding slow and drafts nearly free; a GPU).
    early_margin: float = 0.5
    # Shadowed positions before they are judged (the first token, from the prompt pass, casts no
    # shadow), and the replay looks at the last two windows. With a window of 8, code whose first
    # 8 positions pass speculates after 9 tokens instead of 16: where a 16-token pass costs 5
    # decode steps, waiting for 15 took about a seventh of HumanEval's time at wan. Alone it also
    # started on chance runs of agreement in chat (MT-bench at cellular 0.87x vs 1.01x, session
    # 26), which estimate_weight and prior_bias damp (docs/benchmarks.md, session 31).
    window: int = 8
    # Positions' worth of weight the acceptance model's estimates get against the shadow's
    # outcomes in its replay: 8 agreeing positions drafted with chat's middling confidence are
    # scored as half agreement, half what that confidence usually earns; confident code's
    # estimates are near 1 and lose nothing.
    estimate_weight: float = 8.0
    # The replay's optimism assumed until a fall-back measures it (Controller._bias): measured
    # speculation ran at 0.69-0.73 of the ideal at wan in session 30, at 0.64-0.92 of a window's
    # replay earlier; below 1, chat's chance switches mostly do not pass (0.7 stopped code
    # speculating where a 16-token pass costs 9-13 decode steps, in the simulator).
    prior_bias: float = 0.85
    # Committed tokens over which speculation's measured rate is judged: a rejection costs a restart
    # of the pipeline (a chunk's round trip, ~10 decode steps on a CPU), which a window of 16 would
    # read as speculation not paying, even where it pays over the run. Judged sooner where
    # speculation has taken as long as cloud decoding takes for that many (it earns less), and
    # sooner still where it is behind cloud decoding by more than its start-up and the drafts the
    # cloud verified say it loses (Controller._loses_early).
    judge_window: int = 32
    probe_every: int = 128  # fallback tokens before speculation is tried again regardless (doubles per failed try)
    max_probe_every: int = 512

    @staticmethod
    def for_policy(policy: str, fallback: bool = True, confidence: bool = True) -> "ControllerConfig | None":
        """The controller of the CLI's --policy: "adaptive" runs one, "fixed" none (fixed chunks)."""
        if policy not in POLICIES:
            raise InvalidInputError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        return ControllerConfig(fallback=fallback, confidence=confidence) if policy == "adaptive" else None

    def __post_init__(self) -> None:
        if self.max_chunk < 1 or self.max_lookahead < self.max_chunk or self.chunks_ahead < 1:
            raise InvalidInputError("controller: max_chunk >= 1, max_lookahead >= max_chunk and chunks_ahead >= 1")
        windows = min(self.window, self.judge_window)
        if windows < 2 or self.probe_every < 1 or min(self.margin, self.early_margin) < 0 or self.follow_batch < 1:
            raise InvalidInputError("controller: windows >= 2, probe_every >= 1, follow_batch >= 1 and margins >= 0")
        if self.estimate_weight < 0 or not 0 < self.prior_bias <= 1:
            raise InvalidInputError("controller: estimate_weight >= 0 and 0 < prior_bias <= 1")


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
    lookup: AcceptanceModel = field(init=False)  # prompt lookup's tokens (its own estimate)
    mode: Mode = field(init=False)
    switches: int = field(init=False, default=0)
    _progress: deque = field(init=False)  # (seconds, tokens committed) samples while speculating
    # (acceptance estimate, outcome) of positions the cloud decoded / verified while speculating:
    # the outcome is the chance the draft passed (0 or 1 under greedy), what a replay is scored by.
    _shadow: deque = field(init=False)
    _verified: deque = field(init=False)
    # Measured / replayed speculation rate, as of the last fall-back: what the model does not see
    # (the edge applying verdicts between draft steps, the two sides competing for memory bandwidth
    # on one machine); ControllerConfig.prior_bias until measured.
    _bias: float = field(init=False)
    _fallback_tokens: int = field(init=False, default=0)
    _judged: int = field(init=False, default=0)  # _fallback_tokens at the last judgement of the shadow
    _judged_early: int = field(init=False, default=0)  # _speculated_since_switch at the last early judgement
    _probe_every: int = field(init=False)
    _speculated_since_switch: int = field(init=False, default=0)
    _rtt_measured: bool = field(init=False, default=False)
    # Other sessions' tokens in each pass of a batching cloud (a moving mean of what replies report).
    _shared: float = field(init=False, default=0.0)
    _shared_measured: bool = field(init=False, default=False)
    # Speculating on prompt lookup's tokens alone (switched to by a lookup run that pays; the drafter
    # drafts nothing of its own, and the cloud decodes again once lookup has nothing that pays).
    lookup_only: bool = field(init=False, default=False)
    lookup_streak: int = field(init=False, default=0)  # lookup's latest proposals (verified or shadowed) that were right, in a row

    def __post_init__(self) -> None:
        # With fallback allowed a session starts by letting the cloud decode (from its prompt pass,
        # as `ar` does) and speculates once what the drafter would have drafted says it pays.
        self.mode = Mode.FALLBACK if self.config.fallback else Mode.SPECULATE
        self.acceptance = AcceptanceModel(self.config.confidence)
        self.lookup = AcceptanceModel(self.config.confidence, LOOKUP_PRIOR, mean_prior=0.7)
        self._progress = deque()
        self._shadow = deque(maxlen=self.config.window * 2)
        self._verified = deque(maxlen=self.config.window * 2)
        self._probe_every = self.config.probe_every
        self._bias = self.config.prior_bias

    @staticmethod
    def for_cloud(config: ControllerConfig, curve: CostCurve, rtt_s: float) -> "Controller":
        """A session's controller from what the cloud's welcome says (its cost curve) and the
        welcome's wait (rtt_s); the drafter's step, unknown until it drafts, is taken as half the
        cloud's decode step (a drafter a third of the target's size)."""
        return Controller(config, CostTracker(curve), curve.decode_s / 2, rtt_s)

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
        self,
        confidences: Sequence[float],
        accepted: int,
        verify_s: float,
        now_s: float,
        committed: int,
        shared_tokens: int = 0,
        looked_up: Sequence[bool] = (),
        pending: bool = False,
    ) -> None:
        """A chunk drafted with these confidences had `accepted` tokens pass, in a pass that took
        verify_s and held shared_tokens of other sessions (and, with pending, the correction or
        decoded token before the chunk); `committed` tokens are now verified in all, at `now_s` on
        the edge's clock. looked_up marks the tokens prompt lookup proposed."""
        for i, confidence in enumerate(confidences[: accepted + 1]):
            model = self._model(looked_up, i)
            passed = 1.0 if i < accepted else 0.0
            self._verified.append((model.estimate(confidence), passed))
            model.observe(confidence, passed)
            if model is self.lookup:
                self._lookup_ran(i < accepted)
        self._observe_pass(len(confidences) + pending, verify_s, shared_tokens)
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

    def observe_lookup_shadow(self, passed: bool) -> None:
        """The cloud decoded a token where prompt lookup proposed one: did they agree?"""
        self.lookup.observe(None, float(passed))
        self._lookup_ran(passed)

    def _lookup_ran(self, passed: bool) -> None:
        self.lookup_streak = self.lookup_streak + 1 if passed else 0

    def _model(self, looked_up: Sequence[bool], i: int) -> AcceptanceModel:
        return self.lookup if i < len(looked_up) and looked_up[i] else self.acceptance

    def observe_decoded(self, confidence: float, passed: float) -> None:
        """The cloud decoded a token; the drafter would have drafted it with this confidence and
        the chance `passed` that it would have passed."""
        self._shadow.append((self.acceptance.estimate(confidence), passed))
        self.acceptance.observe(confidence, passed)
        self._fallback_tokens += 1

    # -- decisions ------------------------------------------------------------------------------

    def chunk_target(self, confidences: Sequence[float], looked_up: Sequence[bool] = (), pending: bool = False) -> int:
        """How many of the drafted tokens (with these confidences; looked_up marks prompt
        lookup's) the chunk should hold; more than len(confidences) means: draft on. With pending,
        the chunk's pass also evaluates the token before it (a correction, or the cloud's last
        decoded token): on a CPU a pass over 17 tokens costs much more than one over 16.

        Tokens not drafted yet are planned as if confident: the edge asks again after each draft
        and ships the chunk once the answer is no more than it holds, the doubtful draft that
        ended it included (its verdict comes with the chunk's; cut off, it would start the next
        chunk and waste that pass where it fails).
        """
        estimates = [self._model(looked_up, i).estimate(c) for i, c in enumerate(confidences)]
        costs = self._costs_drafting(looked_up, len(confidences)).after(float(pending))
        j, _ = best_chunk_len(estimates, self.acceptance.estimate(1.0), costs, self.config.max_chunk)
        return j

    def _costs_drafting(self, looked_up: Sequence[bool], n: int) -> Costs:
        """The costs with the drafter's step scaled by the share of tokens it drafts one by one:
        lookup's cost one batched pass on the edge, next to nothing beside the cloud's."""
        own = n - sum(bool(x) for x in looked_up[:n])
        costs = self.costs
        return costs if own == n else replace(costs, draft_s=costs.draft_s * own / max(n, 1))

    def keeps_lookup(self, confidence: float, top_confidence: float, agrees: bool) -> bool:
        """Should a token prompt lookup proposed be drafted (else the drafter drafts from here)?
        Yes where the drafter's top token is the same one; against the drafter only while lookup
        is tracking a copy (its last proposals were right: in chat a two-token match is mostly
        chance, and its tokens were all rejected there) and its estimate for the token (by the
        drafter's confidence in it) is at least the drafter's for its own top token."""
        tracking = self.lookup_streak >= LOOKUP_TRACKING
        return agrees or (tracking and self.lookup.estimate(confidence) >= self.acceptance.estimate(top_confidence))

    def lookup_pays(self, run: int) -> bool:
        """While the cloud decodes: would a chunk of the `run` tokens lookup proposes now earn more
        than cloud decoding?

        Copying goes on, or it stops: lookup's acceptance is Laplace's rule over its current streak
        of right proposals, (s + 1) / (s + 2), not the session's mean (a docstring written between
        two copied blocks says nothing of the second). Not scaled by the bias measured on the
        drafter's speculation: that is the replay's optimism about the drafter's acceptance."""
        if run < 1:
            return False
        acceptance = (self.lookup_streak + 1) / (self.lookup_streak + 2)
        costs = replace(self.costs, draft_s=0.0)
        # The run's pass follows the cloud's last decoded token: pending.
        _, rate = best_chunk_len([acceptance] * run, 0.0, costs.after(1.0), min(run, self.config.max_chunk))
        return rate > costs.fallback_rate * (1 + self.config.margin)

    def speculation_rate(self) -> float | None:
        """Tokens per second committed while speculating, over the last `judge_window` tokens, or,
        after two verdicts at least, over the time cloud decoding takes for that many where
        speculation committed fewer (None until then: a losing run is judged once it is behind,
        not 14 rounds of one or two tokens on chat later)."""
        if len(self._progress) < 2:
            return None
        window = self.config.judge_window
        while len(self._progress) > 2 and self._progress[-1][1] - self._progress[1][1] >= window:
            self._progress.popleft()
        (t0, n0), (t1, n1) = self._progress[0], self._progress[-1]
        behind = len(self._progress) > 2 and (t1 - t0) * self.costs.fallback_rate >= window
        if t1 <= t0 or (n1 - n0 < window and not behind):
            return None
        return (n1 - n0) / (t1 - t0)

    def decide(self, lookup_run: int = 0, remaining: int | None = None) -> Mode:
        """Switch modes when the other one pays; return the mode to run now. lookup_run: the
        tokens prompt lookup proposes after the context and the drafts outstanding (0: none, or
        lookup is off); remaining: the tokens the generation may still order (None: unknown), over
        which a switch to speculation must repay its start-up.

        Three ways to run: cloud decoding; speculation on the drafter's tokens (and lookup's where
        it proposes), entered when the replay of the drafter's shadow says it pays; speculation on
        lookup's tokens alone, entered when a lookup run pays and left when none does.
        """
        if not self.config.fallback:
            return self.mode
        if self.mode is Mode.FALLBACK and self.lookup_pays(lookup_run):
            self._switch(Mode.SPECULATE)
            self.lookup_only = True
            return self.mode
        if self.lookup_only:
            rate = self.speculation_rate()
            if not self.lookup_pays(lookup_run) or (rate is not None and rate < self.costs.fallback_rate * (1 - self.config.margin)):
                self._end_lookup_run()
            return self.mode
        fallback_rate = self.costs.fallback_rate
        if self.mode is Mode.SPECULATE:
            rate = self.speculation_rate()
            if rate is not None and rate < fallback_rate * (1 - self.config.margin):
                # The replay of the cost model over what was verified, against what was measured:
                # the model's optimism, taken out of its predictions while the cloud decodes.
                replayed = self._steady_rate(self._verified)
                self._bias = min(1.0, rate / replayed) if replayed > 0 else 1.0
                self._switch(Mode.FALLBACK)
            elif self._loses_early():
                self._switch(Mode.FALLBACK)
        elif self.mode is Mode.FALLBACK and self._fallback_tokens >= self._probe_every:
            self._switch(Mode.SPECULATE)
        elif self.mode is Mode.FALLBACK and self._fallback_tokens - self._judged >= self.config.window:
            # Each window of new positions is judged once: judged batch by batch, overlapping
            # windows gave a chance run of agreement on chat more tries to start speculation.
            self._judged = self._fallback_tokens
            if self._pays(self._shadow, remaining, self.config.margin):
                self._switch(Mode.SPECULATE)
        elif self.mode is Mode.FALLBACK and self.switches == 0 and self._fallback_tokens < self.config.window:
            prior = [(self.acceptance.mean, self.acceptance.mean)] * self.config.window
            if self._pays(prior, remaining, self.config.early_margin):
                self._switch(Mode.SPECULATE)
        return self.mode

    def _loses_early(self) -> bool:
        """Judged once per verdict, beside the window's rule: is speculation behind cloud decoding
        since it started by more than its start-up explains, and does the replay of the positions
        the cloud verified (what the drafts did, not what was measured) say it earns less?

        On an MT-bench answer the drafter that had passed 18 of 19 positions then failed 5 of 9,
        in chunks of one or two tokens whose passes took two decode steps each: judged by its
        window alone speculation ran 3.8 s for 9 tokens, a quarter of cloud decoding's rate. A
        code chunk rejected at its first token leaves speculation behind by a restart, and its
        verified positions still say it pays."""
        if len(self._progress) < 2 or self._judged_early == self._speculated_since_switch:
            return False
        self._judged_early = self._speculated_since_switch
        costs = self.costs
        (t0, n0), (t1, n1) = self._progress[0], self._progress[-1]
        behind = (t1 - t0 - start_up_s(costs, self.config.max_chunk)) * costs.fallback_rate > n1 - n0
        return behind and self._bias * self._steady_rate(self._verified) < costs.fallback_rate * (1 - self.config.margin)

    def _pays(self, positions: Iterable[tuple[float, float]], remaining: int | None, margin: float) -> bool:
        """Would speculation on text like these positions beat cloud decoding by `margin` over the
        remaining tokens? Its steady rate, over the positions weighed against the model's estimates,
        is scaled by the bias measured when speculation last fell back (the prior bias before)."""
        rate = self._bias * self._steady_rate(self._weighed(positions))
        return speculation_pays(rate, self.costs, remaining, margin, self.config.max_chunk)

    def _weighed(self, positions: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
        """The positions with each outcome blended with its estimate, the estimates weighing
        ControllerConfig.estimate_weight positions against the window's."""
        pairs = list(positions)
        w = len(pairs) / (len(pairs) + self.config.estimate_weight) if pairs else 1.0
        return [(e, w * o + (1 - w) * e) for e, o in pairs]

    def _steady_rate(self, positions: Iterable[tuple[float, float]]) -> float:
        """The steady rate of chunks cut by the estimates and scored by the outcomes of `positions`."""
        pairs = list(positions)
        estimates, outcomes = [e for e, _ in pairs], [o for _, o in pairs]
        return steady_rate(estimates, self.costs, self.config.max_chunk, outcomes)

    def _end_lookup_run(self) -> None:
        """Back to cloud decoding after speculating on lookup's tokens alone: no failed probe of
        the drafter's, and the replay's bias is the drafter's to measure."""
        probe_every = self._probe_every
        self._switch(Mode.FALLBACK)
        self._probe_every = probe_every

    def _switch(self, mode: Mode) -> None:
        self.lookup_only = False
        if mode is Mode.FALLBACK:
            # A try that fell back before earning a second window was a failed probe: wait longer.
            failed = self._speculated_since_switch < 2 * self.config.judge_window
            self._probe_every = min(self._probe_every * 2, self.config.max_probe_every) if failed else self.config.probe_every
        self.mode, self.switches = mode, self.switches + 1
        self._progress.clear()
        self._shadow.clear()
        self._verified.clear()
        self._fallback_tokens = self._speculated_since_switch = self._judged = self._judged_early = 0
