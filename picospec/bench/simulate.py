"""A discrete-event simulation of the protocol, driven by a CostProfile and acceptance traces.

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

Acceptance: whether the draft at output position p is accepted depends, for greedy decoding with
batch-invariant numerics, only on p (the context before p is the target's own output). Traces
come from the recorded rounds: accepted_lengths and chunk_lengths say which positions were
agreements and where a disagreement fell; positions never drafted are filled by a Bernoulli with
the measured alpha. At temperature 0 the runs of a prompt share one trace (their majority); above
it every run samples its own text, so a run's trace is its own, and a cell that was not measured
is predicted from every speculative run of the prompt (a majority would vote the rejections,
scattered over different positions, away).

Not modelled: exact mode's requests for more candidates (an extra round trip, with chance
(1 - TV)^m per sampled rejection, never at temperature 0), ar's per-token streaming overhead,
and any variation of the costs from step to step (each step costs its mean, or its median
for verification passes).

Clock: 0 is when the cloud's welcome reaches the edge (where EdgeReport.wall_s starts); the cloud
started its prompt pass rtt/2 earlier. tokens/s = new_tokens / wall_s, as EdgeReport defines it.
"""

from __future__ import annotations

import argparse
import random
import statistics
import zlib
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from rich.console import Console
from rich.table import Table

from picospec.bench.bound import Acceptance, Policy
from picospec.bench.assumed import LITERATURE_PROFILES, load_profile
from picospec.bench.costs import SPECULATIVE, STOP_AND_WAIT, CostProfile, prompt_key
from picospec.bench.measure import measure_costs, run_costs, window_costs
from picospec.bench.results import CellKey, RunRecord, load_records
from picospec.bench.runner import MODELESS_VERIFY
from picospec.edge.config import Method
from picospec.edge.policy import ChunkPolicy, EdgeLoop
from picospec.edge.report import EdgeReport, TimelineEvent
from picospec.errors import InvalidInputError
from picospec.transport.netem import LinkProfile, LinkSchedule


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


# -- acceptance traces ---------------------------------------------------------------------------


class AgreementTrace:
    """Whether the draft token at output position p is accepted: known positions first, the rest
    Bernoulli(alpha), drawn once per position so that asking again gives the same answer."""

    def __init__(self, known: dict[int, bool], alpha: float, seed: int = 0) -> None:
        self._known = dict(known)
        self.alpha = alpha
        self._rng = random.Random(seed)

    def __call__(self, position: int) -> bool:
        if position not in self._known:
            self._known[position] = self._rng.random() < self.alpha
        return self._known[position]

    def accepted(self, start: int, n: int) -> int:
        """Leading agreements of a chunk of n drafts at positions start .. start + n - 1."""
        return next((i for i in range(n) if not self(start + i)), n)


def observed_agreement(record: RunRecord) -> dict[int, bool]:
    """Positions whose drafts a run saw accepted (True) or rejected (False)."""
    bonus = record.key.method in STOP_AND_WAIT
    known, position = {}, 0
    for accepted, length in zip(record.accepted_lengths, record.chunk_lengths):
        known.update((position + i, True) for i in range(accepted))
        if accepted < length:
            known[position + accepted] = False
        position += accepted + (accepted < length or bonus)
    return known


def pooled_agreement(records: Iterable[RunRecord]) -> dict[int, bool]:
    """Majority of the runs' observations per position (ties count as agreement)."""
    votes: dict[int, int] = defaultdict(int)
    for record in records:
        for position, agrees in observed_agreement(record).items():
            votes[position] += 1 if agrees else -1
    return {position: vote >= 0 for position, vote in votes.items()}


# -- the simulation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimConfig:
    """One generation to simulate: the edge's settings and where the output ends."""

    method: str
    mode: str = MODELESS_VERIFY.value
    policy: Policy = Policy()
    max_new_tokens: int = 128
    stop_after: int | None = None  # an end-of-sequence token after this many tokens
    prompt: str | None = None  # "workload:prompt_id", for per-prompt prefill times

    def __post_init__(self) -> None:
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
        self.pipelined = config.method == Method.PICOSPEC.value
        # The very policy the real edge runs (picospec/edge/policy.py).
        self.policy = ChunkPolicy(
            self.pipelined, config.policy.chunk_len, config.policy.max_lookahead, config.max_new_tokens
        )
        self.draft_s = costs.draft(config.method)
        self.result = SimResult(EdgeReport(method=config.method, verify=config.mode))
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
    result = SimResult(EdgeReport(method=config.method, verify=config.mode))
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
    report = EdgeReport(method=config.method, verify=config.mode)
    _emit(report, prefill, config.n_tokens, config.n_tokens)
    report.wall_s = report.edge_busy_s = prefill + (config.n_tokens - 1) * costs.draft(config.method)
    return SimResult(
        report, [SimEvent("edge", "prefill", 0.0, prefill), SimEvent("edge", "draft", prefill, report.wall_s)]
    )


def simulate(costs: CostProfile, config: SimConfig, trace: AgreementTrace | None = None) -> SimResult:
    """One simulated generation (trace: the acceptance of each output position; speculative only)."""
    if config.method == Method.AR.value:
        return _simulate_ar(costs, config)
    if config.method == Method.EDGE.value:
        return _simulate_edge(costs, config)
    if trace is None:
        raise InvalidInputError("a speculative method needs an acceptance trace")
    return _Edge(costs, config, trace).run()


# -- predictions for the benchmark's cells -------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    """Predicted (and, where the results have it, measured) median tokens/s of one cell."""

    workload: str
    temperature: float
    profile: str
    rtt_ms: float
    bandwidth_mbps: float
    method: str
    verify: str
    predicted: float
    measured: float | None
    replayed: float | None = None  # each measured run simulated with its own compute costs

    @property
    def error(self) -> float | None:
        """(predicted - measured) / measured."""
        return _relative(self.predicted, self.measured)

    @property
    def replay_error(self) -> float | None:
        """(replayed - measured) / measured."""
        return None if self.replayed is None else _relative(self.replayed, self.measured)


def _relative(value: float, reference: float | None) -> float | None:
    return None if reference is None else (value - reference) / reference


def run_policy(record: RunRecord) -> tuple[Policy, int]:
    """The chunking policy and max_new_tokens a run was made with (from its settings; older
    records without them: the longest chunk and the EdgeConfig defaults)."""
    s = record.settings
    chunk_len = int(s.get("chunk_len", max(record.chunk_lengths, default=4)))
    lookahead = max(chunk_len, int(s.get("lookahead", 8)))
    return Policy(chunk_len, lookahead), int(s.get("max_new_tokens", record.summary["new_tokens"]))


def _variants(records: Sequence[RunRecord], methods: Sequence[str], costs: CostProfile) -> list[tuple[str, str]]:
    """(method, verify mode) pairs to predict: the modes the results ran, or else each method's
    default mode if the costs know its message sizes."""
    present = {(r.key.method, r.key.verify) for r in records}
    variants = []
    for method in methods:
        modes = sorted({mode for m, mode in present if m == method})
        if not Method(method).speculative:
            variants.append((method, MODELESS_VERIFY.value))
        elif modes or costs.sizes(default := Method(method).default_mode.value):
            variants += [(method, mode) for mode in modes or [default]]
    return variants


def predict_cells(
    records: Sequence[RunRecord],
    costs: CostProfile | None = None,
    methods: Sequence[str] | None = None,
    link: LinkProfile | None = None,
    alpha: float | None = None,
    seed: int = 0,
) -> list[Prediction]:
    """Predict every (workload, temperature) x network x method cell; compare with measured runs.

    costs: None measures them from `records`, one profile per network profile and temperature
    (window_costs; the whole file's for another link), and compares with the measured cells,
    which are also replayed run by run with each run's own compute costs (run_costs). link: one
    network for all cells (named "RTT/BW"); default: each profile in the results. alpha: replace
    the recorded acceptance by Bernoulli(alpha). A measured cell is simulated run by run with
    each run's own trace and length; a cell without runs, once per prompt of its group.
    """
    compare = costs is None
    windows = window_costs(records) if compare else {}
    costs = costs or measure_costs(records)
    methods = list(methods or [m.value for m in Method])
    if link is not None:
        networks = [(f"{link.rtt_ms:g}/{link.bandwidth_mbps:g}", link)]
    else:
        present = {(r.key.profile, r.key.rtt_ms, r.key.bandwidth_mbps) for r in records if r.key.bandwidth_mbps > 0}
        networks = [(name, LinkProfile(rtt, bw)) for name, rtt, bw in sorted(present, key=lambda p: (p[1], -p[2]))]
    groups: dict[tuple, list[RunRecord]] = defaultdict(list)
    for record in records:
        groups[(record.key.workload, record.key.temperature)].append(record)
    predictions = []
    for (workload, temperature), group in sorted(groups.items()):
        traces = TraceSource(group, alpha, seed)
        for name, net in networks:
            sized = windows.get((name, temperature), costs).with_link(net)
            for method, mode in _variants(group, methods, costs):
                cell = _cell_runs(group, method, mode, net) if compare else []

                def rate(run: RunRecord, run_costs: CostProfile) -> float:
                    return simulate(run_costs, _config(run, method, mode), traces.trace(run)).tokens_per_s

                predicted = [rate(r, sized) for r in cell or traces.representatives(mode)]
                predictions.append(
                    Prediction(
                        workload,
                        temperature,
                        name,
                        net.rtt_ms,
                        net.bandwidth_mbps,
                        method,
                        mode,
                        statistics.median(predicted),
                        statistics.median(r.summary["tokens_per_s"] for r in cell) if cell else None,
                        statistics.median(rate(r, run_costs(r, sized)) for r in cell) if cell else None,
                    )
                )
    return predictions


def _cell_runs(group: Sequence[RunRecord], method: str, mode: str, link: LinkProfile) -> list[RunRecord]:
    """The group's runs of one cell; edge-only runs, which use no network, belong to every link's."""
    if method == Method.EDGE.value:
        return [r for r in group if r.key.method == method]
    return [
        r
        for r in group
        if (r.key.method, r.key.verify, r.key.rtt_ms, r.key.bandwidth_mbps)
        == (method, mode, link.rtt_ms, link.bandwidth_mbps)
    ]


def _config(record: RunRecord, method: str, mode: str) -> SimConfig:
    policy, max_new_tokens = run_policy(record)
    return SimConfig(method, mode, policy, max_new_tokens, record.summary["new_tokens"], prompt_key(record))


class TraceSource:
    """Acceptance traces of one (workload, temperature) group: a run's own observations, then (at
    temperature 0) the group's majority for its prompt, then Bernoulli(alpha) with the group's
    measured alpha."""

    def __init__(self, group: Sequence[RunRecord], alpha: float | None, seed: int) -> None:
        self.override, self.seed = alpha, seed
        self.alpha = Acceptance.from_records(group).alpha if alpha is None else alpha
        self.greedy = all(record.key.temperature == 0 for record in group)
        self.by_prompt: dict[str, list[RunRecord]] = defaultdict(list)
        for record in group:
            self.by_prompt[prompt_key(record)].append(record)

    def trace(self, record: RunRecord) -> AgreementTrace:
        seed = zlib.crc32(f"{self.seed}:{prompt_key(record)}:{record.key.repeat}".encode())  # hash() is salted
        if self.override is not None:
            return AgreementTrace({}, self.override, seed)
        known = pooled_agreement(self.by_prompt[prompt_key(record)]) if self.greedy else {}
        if record.key.method in SPECULATIVE:
            known.update(observed_agreement(record))
        return AgreementTrace(known, self.alpha, seed)

    def representatives(self, mode: str | None = None) -> list[RunRecord]:
        """The runs standing in for a cell that was not measured: at temperature 0 one per prompt
        (its longest, whose trace is the prompt's); above it every speculative run in verify
        `mode` (each trace is one sampled text, and modes accept differently), else in any mode,
        else the prompt's longest run."""
        chosen = []
        for _, runs in sorted(self.by_prompt.items()):
            sampled = [] if self.greedy else [r for r in runs if r.key.method in SPECULATIVE]
            same_mode = [r for r in sampled if r.key.verify == mode]
            chosen += same_mode or sampled or [max(runs, key=lambda r: r.summary["new_tokens"])]
        return chosen


# -- `picospec simulate` -------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `simulate` command."""
    parser = subparsers.add_parser(
        "simulate",
        help="predict tokens/s of each method from benchmark results (or a cost profile)",
        description="Replays the edge's and the cloud's policies on costs measured from RESULTS "
        "(or from --profile) and prints predicted tokens/s, with the measured value and the "
        "error where RESULTS holds the same cell (not with --profile: another system).",
    )
    parser.add_argument("results", help="a results JSONL file written by `picospec bench run`")
    parser.add_argument(
        "--profile", help=f"a cost profile: a JSON/TOML file or one of {', '.join(LITERATURE_PROFILES)}"
    )
    parser.add_argument("--methods", type=_methods, help="comma-separated, from " + ",".join(m.value for m in Method))
    parser.add_argument("--rtt-ms", type=float, help="simulate this round-trip time instead of the results' profiles")
    parser.add_argument("--bandwidth-mbps", type=float, help="simulate this bandwidth instead of the results' profiles")
    parser.add_argument("--alpha", type=_probability, help="per-token acceptance instead of the recorded acceptance")
    parser.set_defaults(func=_simulate_command)


def _methods(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    allowed = [m.value for m in Method]
    if not names or any(n not in allowed for n in names):
        raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(allowed)}")
    return names


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: a probability in [0, 1]")
    return value


def _simulate_command(args: argparse.Namespace) -> int:
    records = load_records(args.results)
    if not records:
        raise InvalidInputError(f"{args.results} holds no runs")
    costs = load_profile(args.profile) if args.profile else None
    link = _custom_link(args, costs or measure_costs(records))
    predictions = predict_cells(records, costs, args.methods, link, args.alpha)
    table = Table(title=f"predicted tokens/s ({costs.source if costs else 'costs measured from ' + args.results})")
    table.add_column("workload")
    table.add_column("profile")
    table.add_column("method", no_wrap=True)
    for column in ("predicted", "measured", "error", "replayed", "error"):
        table.add_column(column, justify="right")
    for p in predictions:
        table.add_row(
            f"{p.workload} T={p.temperature:g}",
            p.profile,
            p.method if p.method in MODELESS_METHODS else f"{p.method}/{p.verify}",
            f"{p.predicted:.2f}",
            _optional(p.measured, ".2f"),
            _optional(p.error and 100 * p.error, "+.1f", "%"),
            _optional(p.replayed, ".2f"),
            _optional(p.replay_error and 100 * p.replay_error, "+.1f", "%"),
        )
    Console().print(table)
    if any(p.measured is not None for p in predictions):
        Console().print(
            "predicted: costs measured per network profile and temperature (its cloud's stretch of the run); "
            "replayed: each run with its own compute costs (the protocol model alone)."
        )
    return 0


MODELESS_METHODS = (Method.AR.value, Method.EDGE.value)


def _optional(value: float | None, spec: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def _custom_link(args: argparse.Namespace, costs: CostProfile) -> LinkProfile | None:
    """The link given on the command line (either value defaulting to the profile's), or None."""
    if args.rtt_ms is None and args.bandwidth_mbps is None:
        return costs.link if args.profile else None
    rtt = costs.link.rtt_ms if args.rtt_ms is None else args.rtt_ms
    bandwidth = costs.link.bandwidth_mbps if args.bandwidth_mbps is None else args.bandwidth_mbps
    return LinkProfile(rtt, bandwidth)
