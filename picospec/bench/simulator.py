"""A discrete-event simulation of the protocol, driven by a CostProfile and acceptance traces
(traces.py).

It runs the real edge's loop (picospec/edge/policy.py's EdgeLoop) step for step: the loop applies the
verdicts that have arrived, drafts one token if it may, ships when the chunk is full or the cloud
would idle (pipelined) or the edge can draft no more (stop-and-wait), and otherwise blocks for a
verdict; a verdict that commits a token (correction or bonus) costs the drafter one pass and
discards everything drafted after it. The cloud serves chunks FIFO on one compute resource, drops
chunks of an older epoch unverified, and evaluates the token committed by the previous round at
the head of the next pass. Each link direction is netem's LinkSchedule (FIFO serialisation
bytes*8/bandwidth, then rtt/2), and the cloud's verdicts leave the measured round overhead after
its compute.

Why the cloud can be resolved the moment a chunk is shipped: it serves chunks in arrival order,
and the link keeps the edge's order, so a chunk's fate depends only on chunks shipped before it.

Not modelled: exact mode's requests for more candidates (an extra round trip, with chance
(1 - TV)^m per sampled rejection, never at temperature 0), ar's per-token streaming overhead,
and any variation of the costs from step to step (each step costs its mean, or its median
for verification passes).

Clock: 0 is when the cloud's welcome reaches the edge (where EdgeReport.wall_s starts); the cloud
started its prompt pass rtt/2 earlier. tokens/s = new_tokens / wall_s, as EdgeReport defines it.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from picospec.bench.bound import Policy
from picospec.bench.costs import STOP_AND_WAIT, CostProfile
from picospec.bench.results import MODELESS_VERIFY, CellKey, RunRecord
from picospec.bench.traces import AgreementTrace
from picospec.edge.config import Method
from picospec.edge.policy import ChunkPolicy, EdgeLoop
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

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", Method(self.method))
        object.__setattr__(self, "mode", VerifyMode(self.mode))
        if self.n_tokens < 1 or self.policy.max_lookahead < self.policy.chunk_len:
            raise InvalidInputError("a simulated generation needs >= 1 token and max_lookahead >= chunk_len")

    @property
    def n_tokens(self) -> int:
        return min(self.max_new_tokens, self.stop_after or self.max_new_tokens)


@dataclass(frozen=True)
class _Chunk:
    epoch: int
    start: int
    n: int


@dataclass(frozen=True)
class _Verdict:
    chunk: _Chunk
    accepted: int
    token: bool  # a correction or bonus was committed after the accepted drafts
    verify_s: float
    nbytes: float


class _Cloud:
    """The cloud's session: FIFO compute, stale drops, the pending token, the downlink."""

    def __init__(self, costs: CostProfile, config: SimConfig, trace: AgreementTrace, result: SimResult) -> None:
        self.costs, self.config, self.trace, self.result = costs, config, trace, result
        self.free_at = costs.cloud_prefill(config.prompt) - costs.link.one_way_s
        result.report.cloud_prefill_s = result.report.cloud_busy_s = costs.cloud_prefill(config.prompt)
        self.epoch, self.pending = 0, False
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


class _Edge(EdgeLoop):
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
        report = self.report
        report.timeline.append(TimelineEvent("verdict", self.now, self.now))
        report.bytes_down += round(verdict.nbytes)
        report.cloud_busy_s += verdict.verify_s
        report.verify_times.append(verdict.verify_s)
        report.accepted_lengths.append(verdict.accepted)
        report.chunk_lengths.append(chunk.n)
        self._emit(verdict.accepted + verdict.token)
        if verdict.token:
            self._busy("commit", self.draft_s)  # the drafter's pass over the committed token
            report.discarded += chunk.n - verdict.accepted + sum(self._counts()[1:])
            self.building = 0
            self.in_flight.clear()
            self.drafted_until = chunk.start + verdict.accepted + 1
            self.epoch += verdict.accepted < chunk.n

    def _emit(self, n: int) -> None:
        _emit(self.report, self.now, n, self.config.n_tokens)

    def _busy(self, kind: str, seconds: float) -> None:
        self.result.events.append(SimEvent("edge", kind, self.now, self.now + seconds))
        if kind == "draft":
            self.report.timeline.append(TimelineEvent(kind, self.now, self.now + seconds))
        self.now += seconds


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
            result.events.append(SimEvent("cloud", "token", done, done + costs.target_s))
            report.verify_times.append(costs.target_s)
            done += costs.target_s
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


def simulate(costs: CostProfile, config: SimConfig, trace: AgreementTrace | None = None) -> SimResult:
    """One simulated generation (trace: the acceptance of each output position; speculative only)."""
    if config.method is Method.AR:
        return _simulate_ar(costs, config)
    if config.method is Method.EDGE:
        return _simulate_edge(costs, config)
    if trace is None:
        raise InvalidInputError("a speculative method needs an acceptance trace")
    return _Edge(costs, config, trace).run()
