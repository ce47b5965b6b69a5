"""A discrete-event simulation of the protocol, driven by a CostProfile and acceptance traces
(traces.py; for the controller, teacher-forced position traces: PositionOutcomes).

It runs the real edge's loop (picospec/edge/policy.py's EdgeLoop) step for step: the loop applies the
verdicts that have arrived, drafts one token if it may, ships when the chunk is full or the cloud
would idle (pipelined) or the edge can draft no more (stop-and-wait), and otherwise blocks for a
verdict; a verdict that commits a token (correction or bonus) costs the drafter one pass and
discards everything drafted after it. The cloud serves chunks FIFO on one compute resource, drops
chunks of an older epoch unverified, and evaluates the token committed by the previous round at
the head of the next pass. Each link direction is netem's LinkSchedule (FIFO serialisation
bytes*8/bandwidth, then rtt/2), and the cloud's verdicts leave the measured round overhead after
its compute; a token the cloud decodes and streams (ar, the controller's fallback) takes the
decode step and the measured per-token overhead.

With a controller (picospec's default policy) the loop is edge/policy.py's ControlledLoop, the
real edge's decisions, over the real Controller fed what the real edge feeds it: the first token
comes from the cloud's prompt pass, the cloud decodes the tokens the edge orders (one decode step
each, streamed) while the drafter follows them, and the controller switches to speculation (chunks
cut by the drafter's confidence) and back as its cost model says.

Why the cloud can be resolved the moment a chunk is shipped: it serves chunks in arrival order,
and the link keeps the edge's order, so a chunk's fate depends only on chunks shipped before it.

Not modelled: exact mode's requests for more candidates (an extra round trip, with chance
(1 - TV)^m per sampled rejection, never at temperature 0), prompt lookup, the two sides slowing each other
where they share a machine, and any variation of the costs from step to step (each step costs
its mean, or its median for verification passes).

Clock: 0 is when the cloud's welcome reaches the edge (where EdgeReport.wall_s starts); the cloud
started its prompt pass rtt/2 earlier. tokens/s = new_tokens / wall_s, as EdgeReport defines it.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from picospec.bench.bound import Policy, PositionTrace
from picospec.bench.costs import STOP_AND_WAIT, CostProfile
from picospec.bench.results import MODELESS_VERIFY, CellKey, RunRecord
from picospec.bench.traces import AgreementTrace
from picospec.costmodel import CostCurve
from picospec.edge.config import Method
from picospec.edge.controller import Controller, ControllerConfig
from picospec.edge.policy import ChunkPolicy, ControlledLoop, EdgeLoop
from picospec.edge.report import EdgeReport, TimelineEvent
from picospec.errors import InvalidInputError
from picospec.transport.netem import LinkSchedule
from picospec.verify import VerifyMode


@dataclass(frozen=True)
class SimEvent:
    """One interval of a simulated timeline. lane: edge | uplink | cloud | downlink."""

    lane: str
    kind: str  # draft | commit | chunk | verify | drop | verdict | prefill | token
    start: float
    end: float


@dataclass
class SimResult:
    """One simulated generation: what the edge would report (token ids stand in as position
    numbers, identical across methods like greedy outputs), every lane's events, and the
    cloud's stale drops."""

    report: EdgeReport
    events: list[SimEvent] = field(default_factory=list)
    stale_dropped: int = 0

    @property
    def tokens_per_s(self) -> float:
        return self.report.tokens_per_s

    def to_record(self, key: CellKey, settings: dict | None = None) -> RunRecord:
        """The simulated run in the results file's format."""
        return RunRecord.from_report(key, self.report, settings)


@dataclass(frozen=True)
class SimConfig:
    """One generation to simulate: the edge's settings and where the output ends."""

    method: Method
    mode: VerifyMode = MODELESS_VERIFY
    policy: Policy = Policy()
    max_new_tokens: int = 128
    stop_after: int | None = None  # an end-of-sequence token after this many tokens
    prompt: str | None = None  # "workload:prompt_id", for per-prompt prefill times
    controller: ControllerConfig | None = None  # picospec's controller (None: the fixed policy)

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", Method(self.method))
        object.__setattr__(self, "mode", VerifyMode(self.mode))
        if self.n_tokens < 1 or self.policy.max_lookahead < self.policy.chunk_len:
            raise InvalidInputError("a simulated generation needs >= 1 token and max_lookahead >= chunk_len")
        if self.controller is not None and not self.method.pipelined:
            raise InvalidInputError(f"the controller runs picospec's pipeline, not {self.method.value}")

    @property
    def n_tokens(self) -> int:
        return min(self.max_new_tokens, self.stop_after or self.max_new_tokens)


@dataclass(frozen=True)
class _Chunk:
    epoch: int
    start: int
    n: int
    confidences: tuple[float, ...] = ()  # the drafter's, per token (the controlled edge's chunks)


@dataclass(frozen=True)
class _Verdict:
    chunk: _Chunk
    accepted: int
    token: bool  # a correction or bonus was committed after the accepted drafts
    verify_s: float
    nbytes: float


DECODE_ORDER_BYTES = 16  # a Decode message: three varints and the stream's framing


@dataclass
class _Order:
    """Tokens the controlled edge asked the cloud to decode, and how many have arrived."""

    n: int
    received: int = 0


@dataclass(frozen=True)
class _Decoded:
    """One token the cloud decoded, as its message reports it."""

    compute_s: float
    from_prompt_pass: bool


class _Cloud:
    """The cloud's session: FIFO compute, stale drops, the pending token, the downlink."""

    def __init__(self, costs: CostProfile, config: SimConfig, trace: AgreementTrace, result: SimResult) -> None:
        self.costs, self.config, self.trace, self.result = costs, config, trace, result
        self.free_at = costs.cloud_prefill(config.prompt) - costs.link.one_way_s
        result.report.cloud_prefill_s = result.report.cloud_busy_s = costs.cloud_prefill(config.prompt)
        self.epoch, self.pending = 0, False
        self.prompt_token = True  # the first decoded token is the prompt pass's, already computed
        self.passes = 1  # the prompt pass
        self.bonus = config.method in STOP_AND_WAIT
        self.downlink = LinkSchedule(costs.link, random.Random(1))
        result.events.append(SimEvent("cloud", "prefill", -costs.link.one_way_s, self.free_at))

    def receive(self, chunk: _Chunk, arrival: float) -> tuple[float, _Verdict] | None:
        """Serve a chunk that arrives at `arrival`; its verdict's arrival at the edge, or None if dropped."""
        start = max(arrival, self.free_at)
        if chunk.epoch < self.epoch:
            self.result.stale_dropped += 1
            self.result.events.append(SimEvent("cloud", "drop", start, start))
            return None
        verify_s = self.costs.verify(chunk.n + self.pending)
        self.free_at = start + verify_s
        self.passes += 1
        self.result.events.append(SimEvent("cloud", "verify", start, self.free_at))
        accepted = self.trace.accepted(chunk.start, chunk.n)
        rejected = accepted < chunk.n
        self.epoch += rejected
        self.pending = rejected or self.bonus
        sent = self.free_at + self.costs.overhead(self.config.mode)
        nbytes = self.costs.down_bytes(self.config.mode)
        due = self.downlink.due(nbytes, sent)
        self.result.events.append(SimEvent("downlink", "verdict", sent, due))
        return due, _Verdict(chunk, accepted, self.pending, verify_s, nbytes)

    def decode(self, order: _Order, arrival: float) -> list[tuple[float, _Decoded]]:
        """Decode an order's tokens one step each (the first of the session comes from the prompt
        pass), each streamed as it is done; when each reaches the edge, and what it reports."""
        replies = []
        for _ in range(order.n):
            start = max(arrival, self.free_at)
            compute_s = 0.0 if self.prompt_token else self.costs.target_s
            self.free_at = start + (0.0 if self.prompt_token else self.costs.decode_step_s)
            self.passes += not self.prompt_token
            self.result.events.append(SimEvent("cloud", "token", start, self.free_at))
            due = self.downlink.due(self.costs.bytes_down_per_ar_token, self.free_at)
            self.result.events.append(SimEvent("downlink", "token", self.free_at, due))
            replies.append((due, _Decoded(compute_s, self.prompt_token)))
            # A decode step is a pass over the token committed before it; the one it decodes is
            # evaluated by the next pass, a chunk's or a step's.
            self.prompt_token, self.pending = False, True
        return replies


class _SimulatedEdge:
    """What both simulated edges share: the clock, the edge's lane, and a verdict's accounting."""

    now: float
    draft_s: float
    config: SimConfig
    result: SimResult
    report: EdgeReport
    in_flight: deque
    drafted_until: int
    epoch: int

    def _record_verdict(self, chunk: _Chunk, verdict: _Verdict) -> None:
        """Count a verdict on `chunk` (already out of in_flight) and commit its tokens; after a
        correction or bonus, the drafter's pass over it and what was drafted beyond thrown away
        (the caller empties its chunk being built)."""
        report = self.report
        report.timeline.append(TimelineEvent("verdict", self.now, self.now))
        report.bytes_down += round(verdict.nbytes)
        report.cloud_busy_s += verdict.verify_s
        report.verify_times.append(verdict.verify_s)
        report.accepted_lengths.append(verdict.accepted)
        report.chunk_lengths.append(chunk.n)
        _emit(report, self.now, verdict.accepted + verdict.token, self.config.n_tokens)
        if verdict.token:
            self._busy("commit", self.draft_s)  # the drafter's pass over the committed token
            report.discarded += chunk.n - verdict.accepted + sum(self._counts()[1:])
            self.in_flight.clear()
            self.drafted_until = chunk.start + verdict.accepted + 1
            self.epoch += verdict.accepted < chunk.n

    def _busy(self, kind: str, seconds: float) -> None:
        self.result.events.append(SimEvent("edge", kind, self.now, self.now + seconds))
        if kind == "draft":
            self.report.timeline.append(TimelineEvent(kind, self.now, self.now + seconds))
        self.now += seconds


class _Edge(_SimulatedEdge, EdgeLoop):
    """SpeculativeEdge's loop (picospec/edge/policy.py's EdgeLoop, as the real edge runs it) on a
    simulated clock."""

    def __init__(self, costs: CostProfile, config: SimConfig, trace: AgreementTrace) -> None:
        self.costs, self.config = costs, config
        self.pipelined = config.method.pipelined
        # The very policy the real edge runs (picospec/edge/policy.py).
        self.policy = ChunkPolicy(
            self.pipelined, config.policy.chunk_len, config.policy.max_lookahead, config.max_new_tokens
        )
        self.draft_s = costs.draft(config.method)
        self.result = SimResult(EdgeReport(method=config.method.value, verify=config.mode.value))
        self.report = self.result.report
        self.cloud = _Cloud(costs, config, trace, self.result)
        self.uplink = LinkSchedule(costs.link, random.Random(0))
        self.now = costs.edge_prefill(config.prompt)
        self.result.events.append(SimEvent("edge", "prefill", 0.0, self.now))
        self.epoch, self.drafted_until = 0, 0
        self.building, self.building_start = 0, 0
        self.in_flight: deque[_Chunk] = deque()
        self.inbox: deque[tuple[float, _Verdict]] = deque()

    def run(self) -> SimResult:
        self.run_loop()
        self.report.wall_s = self.now
        self.report.cloud_passes = 1 + self.report.rounds
        return self.result

    def _done(self) -> bool:
        return self.report.new_tokens >= self.config.n_tokens

    def _counts(self) -> tuple[int, int, int]:
        return self.report.new_tokens, self.building, sum(c.n for c in self.in_flight)

    def _draft_one(self) -> None:
        if not self.building:
            self.building_start = self.drafted_until
        self._busy("draft", self.draft_s)
        self.report.edge_busy_s += self.draft_s
        self.building += 1
        self.drafted_until += 1
        self.report.drafted += 1

    def _ship(self) -> None:
        chunk = _Chunk(self.epoch, self.building_start, self.building)
        self.building = 0
        self.in_flight.append(chunk)
        self.report.chunks_sent += 1
        nbytes = chunk.n * self.costs.up_bytes(self.config.mode)
        self.report.bytes_up += round(nbytes)
        arrival = self.uplink.due(nbytes, self.now)
        self.result.events.append(SimEvent("uplink", "chunk", self.now, arrival))
        verdict = self.cloud.receive(chunk, arrival)
        if verdict is not None:
            self.inbox.append(verdict)

    def _wait_for_verdict(self) -> None:
        if not self.inbox:
            raise RuntimeError("the simulated edge would wait for a verdict that never comes")
        self.now = max(self.now, self.inbox[0][0])
        self._apply_arrived()

    def _apply_arrived(self) -> None:
        while self.inbox and self.inbox[0][0] <= self.now:
            self._apply(self.inbox.popleft()[1])

    def _apply(self, verdict: _Verdict) -> None:
        chunk = self.in_flight.popleft()
        assert chunk == verdict.chunk, "verdicts arrive in the order chunks were shipped"
        self._record_verdict(chunk, verdict)
        if verdict.token:
            self.building = 0


class PositionOutcomes:
    """A teacher-forced trace (bound.PositionTrace) as a simulated session meets it: the drafter's
    confidence at each output position, the chance that its draft passes there (what the
    controller's shadow is scored by while the cloud decodes: the mean of what the real edge
    observes), and whether a draft there does pass, drawn once per position from that chance (0
    or 1 under greedy). Positions past the trace's end take its means."""

    def __init__(self, trace: PositionTrace, seed: int = 0) -> None:
        if len(trace.confidence) == 0:
            raise InvalidInputError("an empty position trace")
        self.trace = trace
        self._mean = (float(np.mean(trace.confidence)), float(np.mean(trace.acceptance)))
        self._passes: dict[int, bool] = {}
        self._rng = random.Random(seed)

    def confidence(self, position: int) -> float:
        return float(self.trace.confidence[position]) if position < len(self.trace.confidence) else self._mean[0]

    def chance(self, position: int) -> float:
        return float(self.trace.acceptance[position]) if position < len(self.trace.acceptance) else self._mean[1]

    def passes(self, position: int) -> bool:
        if position not in self._passes:
            self._passes[position] = self._rng.random() < self.chance(position)
        return self._passes[position]

    def accepted(self, start: int, n: int) -> int:
        """Leading passes of a chunk of n drafts at positions start .. start + n - 1."""
        return next((i for i in range(n) if not self.passes(start + i)), n)


class _ControlledEdge(_SimulatedEdge, ControlledLoop):
    """SpeculativeEdge with its controller (the same decisions: edge/policy.py's ControlledLoop, and
    the same Controller, fed what the real edge feeds it) on a simulated clock. Its first token
    comes from the cloud's prompt pass; while the controller lets the cloud decode, the edge orders
    tokens ahead, the drafter's prompt pass runs beside the cloud's steps, and the drafter follows
    the tokens in batches (a batched pass over n tokens is taken to cost the drafter's step times
    the cloud's verify(n) / verify(1): both are llama.cpp on a core of their own)."""

    def __init__(self, costs: CostProfile, config: SimConfig, outcomes: PositionOutcomes) -> None:
        self.costs, self.config, self.outcomes = costs, config, outcomes
        self.policy = ChunkPolicy(True, config.policy.chunk_len, config.policy.max_lookahead, config.max_new_tokens)
        self.max_chunk = config.controller.max_chunk
        self.controller = Controller.for_cloud(config.controller, _cost_curve(costs, self.max_chunk), costs.link.rtt_ms / 1000)
        self.draft_s = costs.draft(config.method)
        self.result = SimResult(EdgeReport(method=config.method.value, verify=config.mode.value))
        self.report = self.result.report
        self.cloud = _Cloud(costs, config, outcomes, self.result)
        self.uplink = LinkSchedule(costs.link, random.Random(0))
        self.now, self.epoch, self.drafted_until = 0.0, 0, 0
        self.building: list[float] = []  # confidences of the drafted tokens not shipped yet
        self.in_flight: deque[tuple[_Chunk | _Order, float]] = deque()  # (item, shipped at)
        self.inbox: deque[tuple[float, _Verdict | _Decoded]] = deque()
        self.unfollowed = 0  # tokens the cloud decoded that the drafter has not evaluated
        self.drafter_ready_at: float | None = None  # the end of its prompt pass, once started
        self.after_full_chunk = False  # as SpeculativeEdge._after_full_chunk

    def run(self) -> SimResult:
        self._order_decode(1)  # the first token comes from the cloud's prompt pass, as for ar
        if self._drafter_needed():  # as SpeculativeEdge: its prompt pass runs beside the cloud's
            self._start_prompt_pass()
        self.run_loop()
        self.report.wall_s = self.now
        self.report.cloud_passes = self.cloud.passes
        self.report.mode_switches = self.controller.switches
        return self.result

    # -- what ControlledLoop asks ------------------------------------------------------------

    def _done(self) -> bool:
        return self.report.new_tokens >= self.config.n_tokens

    def _counts(self) -> tuple[int, int, int]:
        return self.report.new_tokens, len(self.building), sum(_outstanding(item) for item, _ in self.in_flight)

    def _decoding(self) -> bool:
        return any(isinstance(item, _Order) for item, _ in self.in_flight)

    def _chunks_in_flight(self) -> int:
        return sum(isinstance(item, _Chunk) for item, _ in self.in_flight)

    def _lookup_run(self) -> int:
        return 0  # prompt lookup is not simulated

    def _building_confidences(self) -> tuple[list[float], list[bool]]:
        return self.building, []

    def _builds_on_full_chunk(self) -> bool:
        if self.in_flight:
            return isinstance(self.in_flight[-1][0], _Chunk)
        return self.after_full_chunk

    # -- drafting, shipping, ordering ----------------------------------------------------------

    def _draft_one(self) -> None:
        self._catch_up()
        self.building.append(self.outcomes.confidence(self.drafted_until))
        self.drafted_until += 1
        self.report.drafted += 1
        self.report.edge_busy_s += self.draft_s
        self._busy("draft", self.draft_s)
        self.controller.observe_draft_step(self.draft_s)

    def _catch_up(self) -> None:
        """The drafter's prompt pass (waited for), then one pass over the tokens it has not
        followed; the controller observes each but the session's first."""
        if self.drafter_ready_at is None:
            self._start_prompt_pass()
        self.now = max(self.now, self.drafter_ready_at)
        if not self.unfollowed:
            return
        first = self.report.new_tokens - self.unfollowed
        self._busy("follow", self.draft_s * self.costs.verify(self.unfollowed) / self.costs.verify(1))
        for position in range(max(first, 1), first + self.unfollowed):
            self.controller.observe_decoded(self.outcomes.confidence(position), self.outcomes.chance(position))
        self.drafted_until, self.unfollowed = self.report.new_tokens, 0

    def _start_prompt_pass(self) -> None:
        self.drafter_ready_at = self.now + self.costs.edge_prefill(self.config.prompt)
        self.result.events.append(SimEvent("edge", "prefill", self.now, self.drafter_ready_at))
        self.report.timeline.append(TimelineEvent("prompt", self.now, self.drafter_ready_at))

    def _prompt_passing(self) -> bool:
        return self.drafter_ready_at is not None and self.now < self.drafter_ready_at

    def _ship(self) -> None:
        if not self.building:
            self._order_decode(self._decode_room())
            return
        self.controller.mark(self.now, self.report.new_tokens)
        n = len(self.building)
        chunk = _Chunk(self.epoch, self.drafted_until - n, n, tuple(self.building))
        self.building = []
        nbytes = n * self.costs.up_bytes(self.config.mode)
        self.report.bytes_up += round(nbytes)
        self.report.chunks_sent += 1
        arrival = self._send(chunk, nbytes)
        verdict = self.cloud.receive(chunk, arrival)
        if verdict is not None:
            self.inbox.append(verdict)

    def _order_decode(self, n: int) -> None:
        order = _Order(n)
        self.inbox.extend(self.cloud.decode(order, self._send(order, DECODE_ORDER_BYTES)))

    def _send(self, item: _Chunk | _Order, nbytes: float) -> float:
        """Put an item in flight; when it reaches the cloud."""
        self.in_flight.append((item, self.now))
        arrival = self.uplink.due(nbytes, self.now)
        self.result.events.append(SimEvent("uplink", "chunk" if isinstance(item, _Chunk) else "order", self.now, arrival))
        return arrival

    # -- what arrives ----------------------------------------------------------------------------

    def _wait_for_verdict(self) -> None:
        if self._should_follow(self.unfollowed) and not (self._prompt_passing() and self.in_flight):
            self._catch_up()  # the edge would idle now
        elif not self.inbox:
            raise RuntimeError("the simulated edge would wait for a message that never comes")
        else:
            self.now = max(self.now, self.inbox[0][0])
        self._apply_arrived()

    def _apply_arrived(self) -> None:
        while self.inbox and self.inbox[0][0] <= self.now:
            item = self.inbox.popleft()[1]
            self._apply_decoded(item) if isinstance(item, _Decoded) else self._apply_verdict(item)
        if not self._done():
            self._decide()

    def _apply_decoded(self, decoded: _Decoded) -> None:
        order, _ = self.in_flight[0]
        if not decoded.from_prompt_pass and not self._prompt_passing():
            self.controller.observe_decode_step(decoded.compute_s)
        self.report.cloud_busy_s += decoded.compute_s
        self.report.cloud_decode_s += decoded.compute_s
        self.report.decoded += 1
        self.report.timeline.append(TimelineEvent("decoded", self.now, self.now))
        self.unfollowed += 1
        self.after_full_chunk = False
        _emit(self.report, self.now, 1, self.config.n_tokens)
        order.received += 1
        if order.received == order.n:
            self.in_flight.popleft()

    def _apply_verdict(self, verdict: _Verdict) -> None:
        (chunk, shipped_at) = self.in_flight.popleft()
        assert chunk == verdict.chunk, "verdicts arrive in the order chunks were shipped"
        self._record_verdict(chunk, verdict)
        if verdict.token:
            self.building.clear()
        pending, self.after_full_chunk = not self.after_full_chunk, not verdict.token
        self.controller.observe_rtt(self.now - shipped_at - verdict.verify_s)
        self.controller.observe_verdict(chunk.confidences, verdict.accepted, verdict.verify_s, self.now, self.report.new_tokens, pending=pending)


def _outstanding(item: _Chunk | _Order) -> int:
    """Tokens an item in flight still owes."""
    return item.n - item.received if isinstance(item, _Order) else item.n


def _cost_curve(costs: CostProfile, max_chunk: int) -> CostCurve:
    """What a cloud's welcome would say of these costs: verify(m) up to a chunk and its pending
    token, and the decode step."""
    return CostCurve(tuple(costs.verify(m) for m in range(1, max_chunk + 2)), costs.target_s)


def _emit(report: EdgeReport, now: float, n: int, limit: int) -> None:
    """Commit n more output tokens (at most up to `limit`); ids are their positions."""
    first = report.new_tokens
    if n and report.ttft_s is None:
        report.ttft_s = now
    report.token_ids.extend(range(first, min(limit, first + n)))


def _simulate_ar(costs: CostProfile, config: SimConfig) -> SimResult:
    """The cloud decodes alone and streams each token: prompt pass (token 1), then t_t per token."""
    result = SimResult(EdgeReport(method=config.method.value, verify=config.mode.value))
    report = result.report
    downlink = LinkSchedule(costs.link, random.Random(1))
    start = -costs.link.one_way_s
    done = start + costs.cloud_prefill(config.prompt)
    result.events.append(SimEvent("cloud", "prefill", start, done))
    report.verify_times.append(done - start)
    report.cloud_prefill_s = done - start
    for i in range(config.n_tokens):
        if i:
            result.events.append(SimEvent("cloud", "token", done, done + costs.decode_step_s))
            report.verify_times.append(costs.target_s)
            done += costs.decode_step_s
        arrival = downlink.due(costs.bytes_down_per_ar_token, done)
        result.events.append(SimEvent("downlink", "token", done, arrival))
        _emit(report, arrival, 1, config.n_tokens)
    report.wall_s = arrival
    report.cloud_busy_s = sum(report.verify_times)
    report.cloud_passes = config.n_tokens
    report.bytes_down = round(config.n_tokens * costs.bytes_down_per_ar_token)
    return result


def _simulate_edge(costs: CostProfile, config: SimConfig) -> SimResult:
    """The drafter decodes alone: its prompt pass yields token 1, then t_d per token."""
    prefill = costs.edge_prefill(config.prompt)
    report = EdgeReport(method=config.method.value, verify=config.mode.value)
    _emit(report, prefill, config.n_tokens, config.n_tokens)
    report.wall_s = report.edge_busy_s = prefill + (config.n_tokens - 1) * costs.draft(config.method)
    return SimResult(
        report, [SimEvent("edge", "prefill", 0.0, prefill), SimEvent("edge", "draft", prefill, report.wall_s)]
    )


def simulate(costs: CostProfile, config: SimConfig, trace: AgreementTrace | PositionOutcomes | None = None) -> SimResult:
    """One simulated generation. trace (speculative methods only): the acceptance of each output
    position; the controller also needs the drafter's confidence there (PositionOutcomes)."""
    if config.method is Method.AR:
        return _simulate_ar(costs, config)
    if config.method is Method.EDGE:
        return _simulate_edge(costs, config)
    if config.controller is not None:
        if not isinstance(trace, PositionOutcomes):
            raise InvalidInputError("the controller needs the drafter's confidence at each position: a teacher-forced trace")
        return _ControlledEdge(costs, config, trace).run()
    if trace is None:
        raise InvalidInputError("a speculative method needs an acceptance trace")
    return _Edge(costs, config, trace).run()
