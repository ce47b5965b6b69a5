"""What the benchmark report shows, as data: tables of numbers computed from the runs (pure, no I/O).

Everything is computed once by `Analysis` (per-cell aggregates, measured costs, the simulator's
predictions) and read out by one function per section of the report; report.py turns the result
into markdown and figures. Nothing here formats text or draws.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from picospec.bench.aggregate import METHOD_ORDER, VERIFY_ORDER, aggregate
from picospec.bench.assumed import LITERATURE_PROFILES, load_profile
from picospec.bench.bound import Acceptance, PositionTrace, ideal_tokens_per_s
from picospec.bench.costs import CostProfile
from picospec.bench.forced import TraceKey
from picospec.bench.measure import measure_costs, window_costs
from picospec.bench.predict import Prediction, predict_cells, run_policy, simulable, simulate_run
from picospec.bench.results import MODELESS_VERIFY, NO_NETWORK, RunRecord
from picospec.bench.simulator import SimResult
from picospec.bench.traces import TraceSource
from picospec.edge.config import Method
from picospec.transport.netem import LinkProfile
from picospec.verify import VerifyMode

Variant = tuple[Method, VerifyMode]
Group = tuple[str, float]  # (workload, temperature)
AR: Variant = (Method.AR, MODELESS_VERIFY)
VANILLA: Variant = (Method.VANILLA, Method.VANILLA.default_mode)
SWEEP_POINTS = 16


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None where either is missing (or zero)."""
    return a / b if a and b else None


@dataclass(frozen=True)
class Network:
    """A network profile of the results, as its runs recorded it."""

    profile: str
    rtt_ms: float
    bandwidth_mbps: float

    @property
    def link(self) -> LinkProfile:
        return LinkProfile(self.rtt_ms, self.bandwidth_mbps)


class Analysis:
    """Everything the report's sections share, computed once from the runs."""

    def __init__(self, records: list[RunRecord], forced: dict[TraceKey, PositionTrace] | None = None) -> None:
        """forced: teacher-forced traces by (prompt, temperature, text), to simulate runs made with the
        controller (predict.py); without them those are not predicted."""
        self.records, self.forced = records, forced
        self.rows = {
            (r["workload"], r["temperature"], r["profile"], r["method"], r["verify"]): r for r in aggregate(records)
        }
        self.costs = measure_costs(records)
        self.windows = window_costs(records)  # per (network profile, temperature): what predictions use
        self.variants: list[Variant] = sorted(
            {(r.key.method, r.key.verify) for r in records},
            key=lambda v: (METHOD_ORDER.index(v[0]), VERIFY_ORDER.index(v[1])),
        )
        self.groups: list[Group] = sorted({(r.key.workload, r.key.temperature) for r in records})
        nets = {
            Network(r.key.profile, r.key.rtt_ms, r.key.bandwidth_mbps) for r in records if r.key.profile != NO_NETWORK
        }
        self.networks = sorted(nets, key=lambda n: (n.rtt_ms, -n.bandwidth_mbps))
        self.predictions = {
            (p.workload, p.temperature, p.profile, p.method, p.verify): p for p in predict_cells(records, forced=forced)
        }

    @property
    def networked(self) -> list[Variant]:
        """The variants that use the network (all but edge)."""
        return [v for v in self.variants if v[0] is not Method.EDGE]

    def group_records(self, group: Group) -> list[RunRecord]:
        """The runs of one (workload, temperature) group."""
        return [r for r in self.records if (r.key.workload, r.key.temperature) == group]

    def row(self, group: Group, network: Network, variant: Variant) -> dict | None:
        """The aggregate row of a cell (edge-only runs: the ones without a network)."""
        profile = NO_NETWORK if variant[0] is Method.EDGE else network.profile
        return self.rows.get((*group, profile, *variant))

    def tokens_per_s(self, group: Group, network: Network, variant: Variant) -> float | None:
        """A cell's median tokens/s."""
        row = self.row(group, network, variant)
        return row["tokens_per_s_median"] if row else None

    def repeat_spread(self, group: Group, network: Network, variant: Variant) -> float | None:
        """A cell's run-to-run noise (aggregate.repeat_spread)."""
        return (self.row(group, network, variant) or {}).get("tokens_per_s_repeat_spread")

    def speedup(self, group: Group, network: Network, variant: Variant) -> float | None:
        """A cell's median tokens/s over ar's on the same network."""
        return ratio(self.tokens_per_s(group, network, variant), self.tokens_per_s(group, network, AR))

    def columns(self, group: Group) -> list[Network]:
        """The networks with any run in this group."""
        return [n for n in self.networks if any(self.row(group, n, v) for v in self.networked)]

    def cells(self) -> list[tuple[Group, Network]]:
        """Every (group, network) with runs, in report order."""
        return [(g, n) for g in self.groups for n in self.columns(g)]


# -- ablations -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gain:
    """tokens/s of a variant against a baseline variant in one cell."""

    group: Group
    network: Network
    baseline: float | None
    variant: Variant
    value: float | None

    @property
    def gain(self) -> float | None:
        return ratio(self.value, self.baseline)


def pipeline_gains(a: Analysis) -> list[Gain]:
    """picospec against sync (stop-and-wait) in the same verify mode: what the pipeline gains."""
    sync, picospec = Method.SYNC, Method.PICOSPEC
    modes = [mode for method, mode in a.variants if method == picospec and (sync, mode) in a.variants]
    return [
        Gain(g, n, a.tokens_per_s(g, n, (sync, mode)), (picospec, mode), a.tokens_per_s(g, n, (picospec, mode)))
        for g, n in a.cells()
        for mode in modes
    ]


def separation_gains(a: Analysis) -> list[Gain]:
    """sync and picospec in each verify mode against vanilla (whole draft distributions uplinked)."""
    separate = [v for v in a.variants if v[0] in (Method.SYNC, Method.PICOSPEC)]
    return [
        Gain(g, n, a.tokens_per_s(g, n, VANILLA), v, a.tokens_per_s(g, n, v)) for g, n in a.cells() for v in separate
    ]


# -- bytes ---------------------------------------------------------------------------------------


def median_metric(a: Analysis, variant: Variant, metric: str) -> float | None:
    """The median over all cells of a variant of one aggregate column."""
    values = [r[metric] for k, r in a.rows.items() if k[3:] == variant and r[metric] is not None]
    return statistics.median(values) if values else None


def bytes_per_token(a: Analysis) -> list[tuple[Variant, float | None, float | None]]:
    """(variant, uplink, downlink) bytes per output token, medians over the variant's cells."""
    return [
        (v, median_metric(a, v, "bytes_up_per_token_median"), median_metric(a, v, "bytes_down_per_token_median"))
        for v in a.networked
    ]


# -- speedup sweeps ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NetworkSweep:
    """Simulated speedups over ar with one link parameter swept around a measured network."""

    network: Network
    rtts: list[float]
    by_rtt: dict[Variant, list[float]]  # speedup at each RTT, at the bandwidth of `network`
    bandwidths: list[float]
    by_bandwidth: dict[Variant, list[float]]  # speedup at each bandwidth, at the RTT of `network`
    measured: dict[Variant, float]  # measured speedup on `network`


def speedup_sweeps(a: Analysis, group: Group) -> list[NetworkSweep]:
    """One sweep per network of the group, simulated with the costs of the whole file."""
    records, nets = a.group_records(group), a.columns(group)
    if not nets:
        return []
    networked = [v for v in a.variants if v[0] not in (Method.AR, Method.EDGE)]
    max_rtt = max(n.rtt_ms for n in nets)
    rtts = sorted({*np.linspace(0.0, 1.5 * max(max_rtt, 10.0), SWEEP_POINTS).tolist(), *(n.rtt_ms for n in nets)})
    bandwidths = sorted({*np.geomspace(0.05, 1000.0, SWEEP_POINTS).tolist(), *(n.bandwidth_mbps for n in nets)})
    return [
        NetworkSweep(
            net,
            rtts,
            _speedups(a, records, networked, [LinkProfile(x, net.bandwidth_mbps) for x in rtts]),
            bandwidths,
            _speedups(a, records, networked, [LinkProfile(net.rtt_ms, x) for x in bandwidths]),
            {v: s for v in networked if (s := a.speedup(group, net, v)) is not None},
        )
        for net in nets
    ]


def _speedups(
    a: Analysis, records: list[RunRecord], variants: list[Variant], links: list[LinkProfile]
) -> dict[Variant, list[float]]:
    """Simulated speedup over ar of each variant on each link."""
    curves: dict[Variant, list[float]] = {v: [] for v in variants}
    methods = sorted({v[0] for v in variants} | {Method.AR}, key=METHOD_ORDER.index)
    for link in links:
        predicted = {(p.method, p.verify): p.predicted for p in predict_cells(records, a.costs, methods, link)}
        ar = predicted[AR]
        for v in variants:
            curves[v].append(predicted.get(v, float("nan")) / ar)
    return curves


# -- timelines -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lane:
    """Intervals of one row of a timeline (edge | uplink | cloud | downlink), and instants on it."""

    name: str
    intervals: Sequence[tuple[float, float]]
    instants: Sequence[float] = ()


@dataclass(frozen=True)
class Timeline:
    """A vanilla and a picospec run of one prompt on one network, and picospec's run simulated."""

    vanilla: RunRecord
    picospec: RunRecord
    vanilla_lanes: list[Lane]  # measured
    picospec_lanes: list[Lane]  # measured
    simulated_lanes: list[Lane]  # picospec's run simulated (none: made with the controller, no forced trace)


def timeline(a: Analysis) -> Timeline | None:
    """The timelines of the middle network's first prompt run with both vanilla and picospec."""
    pair = _timeline_pair(a)
    if pair is None:
        return None
    vanilla, picospec = pair
    link = LinkProfile(picospec.key.rtt_ms, picospec.key.bandwidth_mbps)
    sized = a.windows.get((picospec.key.profile, picospec.key.temperature), a.costs).with_link(link)
    simulated = []
    if simulable(picospec, picospec.key.method, a.forced):
        traces = TraceSource(a.group_records((picospec.key.workload, picospec.key.temperature)), None, 0)
        simulated = simulated_lanes(simulate_run(picospec, picospec.key.method, picospec.key.verify, sized, traces, a.forced))
    return Timeline(vanilla, picospec, measured_lanes(vanilla, sized), measured_lanes(picospec, sized), simulated)


def _timeline_pair(a: Analysis) -> tuple[RunRecord, RunRecord] | None:
    """A vanilla and a picospec run (exact preferred) of one prompt on one network, the middle one by RTT."""

    def find(method: Method, verify: VerifyMode | None, key) -> RunRecord | None:
        return next(
            (
                r
                for r in a.records
                if r.key.method == method
                and (verify is None or r.key.verify == verify)
                and (r.key.workload, r.key.prompt_id, r.key.profile, r.key.temperature, r.key.repeat) == key
            ),
            None,
        )

    for net in a.networks[len(a.networks) // 2 :] + a.networks[: len(a.networks) // 2]:
        for r in a.records:
            if r.key.method is not Method.VANILLA or r.key.profile != net.profile:
                continue
            key = (r.key.workload, r.key.prompt_id, r.key.profile, r.key.temperature, r.key.repeat)
            picospec = find(Method.PICOSPEC, VerifyMode.EXACT, key) or find(Method.PICOSPEC, None, key)
            if picospec is not None:
                return r, picospec
    return None


def measured_lanes(record: RunRecord, costs: CostProfile) -> list[Lane]:
    """Edge lanes from the record's timeline; cloud and link lanes derived: the edge records only
    its own events and each round's cloud compute time, so a round's verification is placed to
    end rtt/2 (plus the verdict's serialisation) before its verdict reached the edge, and its
    chunk to cross the link just before the verification began."""
    half_rtt = record.key.rtt_ms / 2000
    drafts = [(e["start"], e["end"]) for e in record.timeline if e["kind"] == "draft"]
    arrivals = [e["start"] for e in record.timeline if e["kind"] == "verdict"]
    mode = record.key.verify
    cloud, up, down = [], [], []
    for arrival, verify_s, n in zip(arrivals, record.verify_times, record.chunk_lengths):
        end = arrival - half_rtt - costs.downlink_s(mode)
        cloud.append((end - verify_s, end))
        up.append((end - verify_s - half_rtt - costs.uplink_s(mode, n), end - verify_s))
        down.append((end, arrival))
    return [Lane("edge", drafts, arrivals), Lane("uplink", up), Lane("cloud", cloud), Lane("downlink", down)]


def simulated_lanes(result: SimResult) -> list[Lane]:
    """The simulated run's lanes (its prompt passes left out), verdict arrivals on the edge's."""
    lanes = []
    for lane in ("edge", "uplink", "cloud", "downlink"):
        spans = [(e.start, e.end) for e in result.events if e.lane == lane and e.kind != "prefill"]
        instants = [e.start for e in result.report.timeline if e.kind == "verdict"] if lane == "edge" else ()
        lanes.append(Lane(lane, spans, instants))
    return lanes


# -- efficiency against the ideal bound ----------------------------------------------------------


@dataclass(frozen=True)
class Efficiency:
    """A cell's measured, ideal (bound.py) and simulated tokens/s."""

    group: Group
    network: Network
    variant: Variant
    measured: float | None
    ideal: float | None
    simulated: float | None

    @property
    def efficiency(self) -> float | None:
        return ratio(self.measured, self.ideal)


def efficiencies(a: Analysis) -> list[Efficiency]:
    """Every cell with runs, every variant, against the ideal bound."""
    result = []
    for group in a.groups:
        acceptance = Acceptance.from_records(a.group_records(group))
        for net in a.columns(group):
            for v in a.variants:
                prediction = a.predictions.get((*group, net.profile, *v))
                result.append(
                    Efficiency(
                        group,
                        net,
                        v,
                        a.tokens_per_s(group, net, v),
                        _ideal(a, group, net, v, acceptance),
                        prediction.predicted if prediction else None,
                    )
                )
    return result


def _ideal(a: Analysis, group: Group, net: Network, variant: Variant, acceptance: Acceptance) -> float | None:
    """Median over the cell's runs of the ideal tokens/s for the run's prompt and length."""
    method, verify = variant
    runs = [
        r
        for r in a.group_records(group)
        if (r.key.method, r.key.verify) == variant and (method is Method.EDGE or r.key.profile == net.profile)
    ]
    sized = a.windows.get((net.profile, group[1]), a.costs).with_link(net.link)
    values = [
        ideal_tokens_per_s(method, verify, sized, acceptance, run_policy(r)[0], r.summary["new_tokens"], r.key.prompt)
        for r in runs
        if r.summary["new_tokens"]
    ]
    return statistics.median(values) if values else None


# -- the simulator against measurement -----------------------------------------------------------


@dataclass(frozen=True)
class Accuracy:
    """How many cells a prediction gets within 10%, and its largest error per variant."""

    within: int
    cells: int
    worst: dict[Variant, float]  # largest |error|


def measured_predictions(a: Analysis) -> list[Prediction]:
    """The predictions of measured cells (edge-only cells, which have no network, once)."""

    def shown(p: Prediction) -> bool:
        return p.measured is not None and (p.method is not Method.EDGE or p.profile == a.networks[0].profile)

    return [p for p in a.predictions.values() if shown(p)]


def prediction_profile(p: Prediction) -> str:
    """The network profile the runs of a predicted cell are filed under."""
    return p.profile if p.method is not Method.EDGE else NO_NETWORK


def prediction_spread(a: Analysis, p: Prediction) -> float | None:
    """The repeat spread of the measured cell a prediction is for."""
    row = a.rows.get((p.workload, p.temperature, prediction_profile(p), p.method, p.verify)) or {}
    return row.get("tokens_per_s_repeat_spread")


def accuracy(predictions: list[Prediction], error: Callable[[Prediction], float | None]) -> Accuracy:
    """How many cells are within 10%, and the largest error per method."""
    errors = [((p.method, p.verify), e) for p in predictions if (e := error(p)) is not None]
    worst: dict[Variant, float] = {}
    for variant, e in errors:
        worst[variant] = max(worst.get(variant, 0.0), abs(e))
    return Accuracy(sum(abs(e) <= 0.10 for _, e in errors), len(errors), worst)


def literature_predictions(a: Analysis) -> list[tuple[str, CostProfile, list[Prediction]]]:
    """Each literature profile (assumed.py) and the simulator's predictions with it, on its own link."""
    result = []
    for name in LITERATURE_PROFILES:
        costs = load_profile(name)
        result.append((name, costs, predict_cells(a.records, costs, link=costs.link)))
    return result


# -- token identity ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mismatch:
    """A temperature-0 run whose tokens differ from its prompt's reference run (ar's if any)."""

    workload: str
    prompt_id: str
    run: RunRecord
    reference: RunRecord
    first_difference: int  # index of the first differing token (or the shorter length)


@dataclass(frozen=True)
class IdentityCheck:
    """At temperature 0 every method should produce the same tokens for a prompt."""

    prompts: int  # temperature-0 prompts checked; 0: no temperature-0 runs
    mismatches: list[Mismatch]
    deterministic: list  # the runs' `deterministic` settings, sorted


def token_identity(records: Sequence[RunRecord]) -> IdentityCheck:
    """Compare every temperature-0 run (edge-only ones, the drafter's own output, left out) with
    its prompt's reference run: the ar run, else the first."""
    greedy = [r for r in records if r.key.temperature == 0 and r.key.method is not Method.EDGE]
    by_prompt: dict[tuple, list[RunRecord]] = {}
    for r in greedy:
        by_prompt.setdefault((r.key.workload, r.key.prompt_id), []).append(r)
    mismatches = []
    for (workload, prompt), runs in sorted(by_prompt.items()):
        reference = next((r for r in runs if r.key.method is Method.AR), runs[0])
        for r in runs:
            if r.token_ids != reference.token_ids:
                at = next(
                    (i for i, (x, y) in enumerate(zip(r.token_ids, reference.token_ids)) if x != y),
                    min(len(r.token_ids), len(reference.token_ids)),
                )
                mismatches.append(Mismatch(workload, prompt, r, reference, at))
    deterministic = sorted({r.settings.get("deterministic") for r in greedy}, key=str)
    return IdentityCheck(len(by_prompt), mismatches, deterministic)


# -- topk and costs ------------------------------------------------------------------------------


def topk_rows(a: Analysis) -> list[tuple[tuple, dict]]:
    """(cell key, aggregate row) of every topk cell."""
    return [(k, r) for k, r in a.rows.items() if k[4] is VerifyMode.TOPK]


def group_alphas(a: Analysis) -> list[tuple[Group, float]]:
    """The per-token acceptance alpha of each group."""
    return [(g, Acceptance.from_records(a.group_records(g)).alpha) for g in a.groups]


def sorted_windows(a: Analysis) -> list[tuple[tuple[str, float], CostProfile]]:
    """The per-window costs, by temperature, then slower links last."""
    return sorted(a.windows.items(), key=lambda item: (item[0][1], item[1].link.rtt_ms, -item[1].link.bandwidth_mbps))
