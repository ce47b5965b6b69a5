"""`picospec bench report RESULTS`: a markdown report with figures from benchmark results.

Sections: throughput and speedup in the shape of the paper's Table 1; the two ablations (without
the pipeline; without separate rejection sampling); bytes per token; speedup against RTT and
bandwidth (simulated curves through the measured points); timelines of vanilla and picospec on
one prompt; efficiency against the ideal bound; the simulator against measurement; what the
simulator predicts for the paper's setups; the temperature-0 token identity check; topk's
dropped tail mass; and the costs everything above was computed from.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from picospec.bench import plots
from picospec.bench.aggregate import METHOD_ORDER, VERIFY_ORDER, aggregate
from picospec.bench.bound import Acceptance, ideal_tokens_per_s
from picospec.bench.assumed import LITERATURE_PROFILES, load_profile
from picospec.bench.costs import CostProfile, prompt_key
from picospec.bench.measure import measure_costs, window_costs
from picospec.bench.results import MODELESS_VERIFY, NO_NETWORK, RunRecord, load_records
from picospec.bench.predict import Prediction, predict_cells, run_policy
from picospec.bench.simulator import SimConfig, SimResult, simulate
from picospec.bench.traces import TraceSource
from picospec.edge.config import Method
from picospec.errors import InvalidInputError
from picospec.transport.netem import LinkProfile

# What the paper (arXiv 2603.19133) reports, for comparison with the simulated literature setups.
PAPER_REPORTED = {
    "orin-a100-llama": "picospec up to 2.9x over cloud-only ar (Llama-3.2-1B edge / Llama-3.1-70B cloud, HumanEval)",
    "orin-a100-qwen3": "picospec 1.13x-1.45x over ar; vanilla stop-and-wait SD 0.44x-0.58x (Qwen3-0.6B / Qwen3-32B)",
}
SWEEP_POINTS = 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `picospec bench report`."""
    parser.add_argument("results", type=Path, help="a results JSONL file written by `picospec bench run`")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"), help="where README.md and the PNGs go")


def main(args: argparse.Namespace) -> int:
    """Write the report; print where it went."""
    records = load_records(args.results)
    if not records:
        raise InvalidInputError(f"{args.results} holds no runs")
    path = write_report(records, args.out, str(args.results))
    print(f"wrote {path} and {len(list(args.out.glob('*.png')))} figures")
    return 0


Variant = tuple[str, str]  # (method, verify)
Group = tuple[str, float]  # (workload, temperature)
AR: Variant = (Method.AR.value, MODELESS_VERIFY.value)
VANILLA: Variant = (Method.VANILLA.value, Method.VANILLA.default_mode.value)


@dataclass(frozen=True)
class Network:
    profile: str
    rtt_ms: float
    bandwidth_mbps: float

    @property
    def link(self) -> LinkProfile:
        return LinkProfile(self.rtt_ms, self.bandwidth_mbps)


class Context:
    """Everything the sections share, computed once."""

    def __init__(self, records: list[RunRecord]) -> None:
        self.records = records
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
            (p.workload, p.temperature, p.profile, p.method, p.verify): p for p in predict_cells(records)
        }

    def group_records(self, group: Group) -> list[RunRecord]:
        return [r for r in self.records if (r.key.workload, r.key.temperature) == group]

    def row(self, group: Group, network: Network, variant: Variant) -> dict | None:
        """The aggregate row of a cell (edge-only runs: the ones without a network)."""
        profile = NO_NETWORK if variant[0] == Method.EDGE.value else network.profile
        return self.rows.get((*group, profile, *variant))

    def tokens_per_s(self, group: Group, network: Network, variant: Variant) -> float | None:
        row = self.row(group, network, variant)
        return row["tokens_per_s_median"] if row else None

    def speedup(self, group: Group, network: Network, variant: Variant) -> float | None:
        value, ar = self.tokens_per_s(group, network, variant), self.tokens_per_s(group, network, AR)
        return value / ar if value and ar else None


def label(variant: Variant) -> str:
    method, verify = variant
    return method if method in (Method.AR.value, Method.EDGE.value) else f"{method}/{verify}"


def write_report(records: list[RunRecord], out: Path, source: str) -> Path:
    """Write README.md and its PNGs into `out`; return the markdown's path."""
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(records)
    sections = [
        _header(ctx, source),
        _throughput(ctx, out),
        _ablations(ctx),
        _bytes(ctx, out),
        _sweeps(ctx, out),
        _timelines(ctx, out),
        _efficiency(ctx, out),
        _simulator(ctx, out),
        _literature(ctx),
        _identity(ctx),
        _topk(ctx),
        _costs(ctx),
    ]
    path = out / "README.md"
    path.write_text("\n\n".join(sections) + "\n")
    return path


# -- markdown helpers ----------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _num(value: float | None, fmt: str = ".2f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{suffix}"


def _figure(path: Path, caption: str) -> str:
    return f"![{caption}]({path.name})\n\n*{caption}*"


def _columns(ctx: Context, group: Group) -> list[Network]:
    """The networks with any run in this group."""
    return [n for n in ctx.networks if any(ctx.row(group, n, v) for v in ctx.variants if v[0] != Method.EDGE.value)]


# -- sections ------------------------------------------------------------------------------------


def _header(ctx: Context, source: str) -> str:
    settings = ctx.records[0].settings
    shown = ", ".join(f"{k} {v}" for k, v in settings.items()) or "not recorded"
    nets = ", ".join(f"{n.profile} ({n.rtt_ms:g} ms, {n.bandwidth_mbps:g} Mbit/s)" for n in ctx.networks)
    return (
        f"# PicoSpec benchmark report\n\n"
        f"From `{source}`: {len(ctx.records)} runs, {len(ctx.rows)} cells; methods "
        f"{', '.join(label(v) for v in ctx.variants)}; networks {nets}.\n\n"
        f"Settings: {shown}.\n\n"
        "tokens/s = new tokens / wall seconds of the edge, time to the first token included (the clock "
        "starts when the cloud's welcome arrives). Every figure is the median over a cell's runs."
    )


def _throughput(ctx: Context, out: Path) -> str:
    parts = ["## Throughput and speedup over cloud-only decoding (the paper's Table 1)"]
    for group in ctx.groups:
        nets = _columns(ctx, group)
        headers = ["method"] + [f"{n.profile} tok/s ±noise (speedup)" for n in nets]
        rows = [[label(v)] + [_throughput_cell(ctx, group, n, v) for n in nets] for v in ctx.variants]
        parts.append(f"### {group[0]}, temperature {group[1]:g}\n\n" + _table(headers, rows))
        name = _slug("throughput", group)
        series = {label(v): [ctx.tokens_per_s(group, n, v) for n in nets] for v in ctx.variants}
        plots.grouped_bars(
            out / name, f"tokens/s, {group[0]}, T={group[1]:g}", "tokens/s", [n.profile for n in nets], series
        )
        parts.append(_figure(out / name, f"Median tokens/s per method and network ({group[0]}, T={group[1]:g})."))
    parts.append(
        "±noise: half the repeat spread, i.e. (max - min) / 2 over repeats of the same prompt, relative to their "
        "median, median over the cell's prompts (cells differ by more than this only where the method does). "
        "edge runs use no network; their one measurement is repeated under every network."
    )
    return "\n\n".join(parts)


def _throughput_cell(ctx: Context, group: Group, net: Network, variant: Variant) -> str:
    row = ctx.row(group, net, variant) or {}
    spread = row.get("tokens_per_s_repeat_spread")
    noise = "" if spread is None else f" ±{50 * spread:.0f}%"
    return f"{_num(ctx.tokens_per_s(group, net, variant))}{noise} ({_num(ctx.speedup(group, net, variant), '.2f', 'x')})"


def _ablations(ctx: Context) -> str:
    sync, picospec = Method.SYNC.value, Method.PICOSPEC.value
    modes = [mode for method, mode in ctx.variants if method == picospec and (sync, mode) in ctx.variants]
    rows = []
    for g in ctx.groups:
        for n in _columns(ctx, g):
            for mode in modes:
                stop_and_wait, pipelined = (
                    ctx.tokens_per_s(g, n, (sync, mode)),
                    ctx.tokens_per_s(g, n, (picospec, mode)),
                )
                rows.append(
                    [
                        f"{g[0]} T={g[1]:g}",
                        n.profile,
                        mode,
                        _num(stop_and_wait),
                        _num(pipelined),
                        _num(_ratio(pipelined, stop_and_wait), ".2f", "x"),
                    ]
                )
    pipeline = "### Without the pipeline: sync (stop-and-wait) against picospec, same verify mode\n\n" + (
        _table(["workload", "network", "verify", "sync tok/s", "picospec tok/s", "pipeline gain"], rows)
        if rows
        else "No verify mode was run with both sync and picospec."
    )
    rows = []
    for g in ctx.groups:
        for n in _columns(ctx, g):
            vanilla = ctx.tokens_per_s(g, n, VANILLA)
            for v in [v for v in ctx.variants if v[0] in (sync, picospec)]:
                rows.append(
                    [
                        f"{g[0]} T={g[1]:g}",
                        n.profile,
                        _num(vanilla),
                        label(v),
                        _num(ctx.tokens_per_s(g, n, v)),
                        _num(_ratio(ctx.tokens_per_s(g, n, v), vanilla), ".2f", "x"),
                    ]
                )
    separate = (
        "### Without separate rejection sampling: vanilla (whole draft distributions uplinked) against the "
        "separate modes\n\nsync/<mode> against vanilla isolates what travels (both stop-and-wait); "
        "picospec/<mode> against vanilla adds the pipeline.\n\n"
        + (
            _table(["workload", "network", "vanilla tok/s", "against", "tok/s", "gain"], rows)
            if rows and VANILLA in ctx.variants
            else "No vanilla runs to compare with."
        )
    )
    return "\n\n".join(["## Ablations", pipeline, separate])


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _bytes(ctx: Context, out: Path) -> str:
    networked = [v for v in ctx.variants if v[0] != Method.EDGE.value]
    up = [_median_metric(ctx, v, "bytes_up_per_token_median") for v in networked]
    down = [_median_metric(ctx, v, "bytes_down_per_token_median") for v in networked]
    rows = [[label(v), _num(u, ".1f"), _num(d, ".1f")] for v, u, d in zip(networked, up, down)]
    series = {"uplink": [u or None for u in up], "downlink": [d or None for d in down]}  # log scale: no zero bars
    path = plots.grouped_bars(
        out / "bytes_per_token.png",
        "bytes per output token (log scale)",
        "bytes",
        [label(v) for v in networked],
        series,
        log=True,
    )
    return (
        "## Bytes per output token\n\nMedian over all cells of a method (messages as protobuf counts them).\n\n"
        + _table(["method", "uplink B/token", "downlink B/token"], rows)
        + "\n\n"
        + _figure(path, "Bytes per output token by method and verify mode, log scale.")
    )


def _median_metric(ctx: Context, variant: Variant, metric: str) -> float | None:
    values = [r[metric] for k, r in ctx.rows.items() if k[3:] == variant and r[metric] is not None]
    return statistics.median(values) if values else None


def _sweeps(ctx: Context, out: Path) -> str:
    parts = [
        "## Speedup against RTT and bandwidth",
        "Lines: the simulator, with the costs measured here, sweeping one link parameter while the "
        "other stays at a measured profile's value; markers: the measured speedup at that profile. "
        "(edge, which uses no network, is in the throughput table.)",
    ]
    networked = [v for v in ctx.variants if v[0] not in (Method.AR.value, Method.EDGE.value)]
    for group in ctx.groups:
        records = ctx.group_records(group)
        nets = _columns(ctx, group)
        if not nets:
            continue
        max_rtt = max(n.rtt_ms for n in nets)
        rtts = sorted({*np.linspace(0.0, 1.5 * max(max_rtt, 10.0), SWEEP_POINTS).tolist(), *(n.rtt_ms for n in nets)})
        bandwidths = sorted({*np.geomspace(0.05, 1000.0, SWEEP_POINTS).tolist(), *(n.bandwidth_mbps for n in nets)})
        panels = []
        for net in nets:
            measured = {label(v): s for v in networked if (s := ctx.speedup(group, net, v)) is not None}
            by_rtt = _speedups(ctx, records, networked, [LinkProfile(x, net.bandwidth_mbps) for x in rtts])
            by_bw = _speedups(ctx, records, networked, [LinkProfile(net.rtt_ms, x) for x in bandwidths])
            panels.append(
                [
                    plots.Sweep(
                        f"{net.bandwidth_mbps:g} Mbit/s ({net.profile})",
                        "RTT (ms)",
                        rtts,
                        by_rtt,
                        {k: [(net.rtt_ms, s, net.profile)] for k, s in measured.items()},
                    ),
                    plots.Sweep(
                        f"{net.rtt_ms:g} ms RTT ({net.profile})",
                        "bandwidth (Mbit/s)",
                        bandwidths,
                        by_bw,
                        {k: [(net.bandwidth_mbps, s, net.profile)] for k, s in measured.items()},
                        log_x=True,
                    ),
                ]
            )
        path = plots.sweeps(out / _slug("speedup_sweeps", group), panels)
        parts.append(
            _figure(path, f"Speedup over ar against RTT (left) and bandwidth (right), {group[0]}, T={group[1]:g}.")
        )
    return "\n\n".join(parts)


def _speedups(
    ctx: Context, records: list[RunRecord], variants: list[Variant], links: list[LinkProfile]
) -> dict[str, list[float]]:
    """Simulated speedup over ar of each variant on each link."""
    curves: dict[str, list[float]] = {label(v): [] for v in variants}
    methods = sorted({v[0] for v in variants} | {Method.AR.value}, key=METHOD_ORDER.index)
    for link in links:
        predicted = {(p.method, p.verify): p.predicted for p in predict_cells(records, ctx.costs, methods, link)}
        ar = predicted[AR]
        for v in variants:
            curves[label(v)].append(predicted.get(v, float("nan")) / ar)
    return curves


def _timelines(ctx: Context, out: Path) -> str:
    title = "## Timelines: vanilla and picospec on the same prompt"
    pair = _timeline_pair(ctx)
    if pair is None:
        return f"{title}\n\nThe results hold no prompt run with both vanilla and picospec on one network."
    vanilla, picospec = pair
    link = LinkProfile(picospec.key.rtt_ms, picospec.key.bandwidth_mbps)
    sized = ctx.windows.get((picospec.key.profile, picospec.key.temperature), ctx.costs).with_link(link)
    policy, max_new_tokens = run_policy(picospec)
    config = SimConfig(
        picospec.key.method,
        picospec.key.verify,
        policy,
        max_new_tokens,
        picospec.summary["new_tokens"],
        prompt_key(picospec),
    )
    traces = TraceSource(ctx.group_records((picospec.key.workload, picospec.key.temperature)), None, 0)
    simulated = simulate(sized, config, traces.trace(picospec))
    panels = {
        f"{label((vanilla.key.method, vanilla.key.verify))}, measured": _measured_lanes(vanilla, sized),
        f"{label((picospec.key.method, picospec.key.verify))}, measured": _measured_lanes(picospec, sized),
        f"{label((picospec.key.method, picospec.key.verify))}, simulated": _simulated_lanes(simulated),
    }
    name = f"{picospec.key.workload}:{picospec.key.prompt_id} over {picospec.key.profile}"
    path = plots.gantt(out / "timeline.png", panels, name)
    return (
        f"{title}\n\n{name}, temperature {picospec.key.temperature:g}. Green: the edge drafting (simulated: "
        "also its pass over each committed token); red: the cloud verifying; blue/purple: a chunk / a verdict "
        "on the link; ticks: verdicts arriving; white: idle.\n\n"
        "The edge records only its own events (drafts, verdict arrivals) and each round's cloud compute time. "
        "Approximations: a round's verification is drawn as ending rtt/2 (plus the verdict's serialisation) "
        "before its verdict reached the edge, and its chunk as crossing the link just before the verification "
        "began (as if the cloud had been idle); a pipelined edge notices a verdict only after the draft in "
        "progress, so those cloud bars may sit up to one draft late. The simulated panel has no such "
        "approximation.\n\n" + _figure(path, f"Timelines of {name}.")
    )


def _timeline_pair(ctx: Context) -> tuple[RunRecord, RunRecord] | None:
    """A vanilla and a picospec run (exact preferred) of one prompt on one network, the middle one by RTT."""

    def find(method: str, verify: str | None, key) -> RunRecord | None:
        return next(
            (
                r
                for r in ctx.records
                if r.key.method == method
                and (verify is None or r.key.verify == verify)
                and (r.key.workload, r.key.prompt_id, r.key.profile, r.key.temperature, r.key.repeat) == key
            ),
            None,
        )

    for net in ctx.networks[len(ctx.networks) // 2 :] + ctx.networks[: len(ctx.networks) // 2]:
        for r in ctx.records:
            if r.key.method != Method.VANILLA.value or r.key.profile != net.profile:
                continue
            key = (r.key.workload, r.key.prompt_id, r.key.profile, r.key.temperature, r.key.repeat)
            picospec = find(Method.PICOSPEC.value, "exact", key) or find(Method.PICOSPEC.value, None, key)
            if picospec is not None:
                return r, picospec
    return None


def _measured_lanes(record: RunRecord, costs: CostProfile) -> list[plots.Lane]:
    """Edge lanes from the record's timeline; cloud and link lanes derived (see the section's note)."""
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
    return [
        plots.Lane("edge", drafts, arrivals),
        plots.Lane("uplink", up),
        plots.Lane("cloud", cloud),
        plots.Lane("downlink", down),
    ]


def _simulated_lanes(result: SimResult) -> list[plots.Lane]:
    lanes = []
    for lane in ("edge", "uplink", "cloud", "downlink"):
        spans = [(e.start, e.end) for e in result.events if e.lane == lane and e.kind != "prefill"]
        instants = [e.start for e in result.report.timeline if e.kind == "verdict"] if lane == "edge" else ()
        lanes.append(plots.Lane(lane, spans, instants))
    return lanes


def _efficiency(ctx: Context, out: Path) -> str:
    parts = [
        "## Efficiency against the ideal bound",
        "ideal: picospec/bench/bound.py's closed forms with the measured costs and the group's acceptance "
        "(per run: its prompt's prefill, its length), no overhead beyond the link model and no implementation "
        "waste. efficiency = measured / ideal; sim/ideal shows how much of the gap the simulator explains "
        "(the policy's and implementation's waits that the bound leaves out).",
    ]
    rows, bars_groups, bars = [], [], {label(v): [] for v in ctx.variants}
    for group in ctx.groups:
        acceptance = Acceptance.from_records(ctx.group_records(group))
        for net in _columns(ctx, group):
            bars_groups.append(f"{group[0]} {net.profile}")
            for v in ctx.variants:
                ideal = _ideal(ctx, group, net, v, acceptance)
                measured = ctx.tokens_per_s(group, net, v)
                prediction = ctx.predictions.get((*group, net.profile, *v))
                simulated = prediction.predicted if prediction else None
                efficiency = _ratio(measured, ideal)
                bars[label(v)].append(efficiency)
                if ideal is not None:
                    rows.append(
                        [
                            f"{group[0]} T={group[1]:g}",
                            net.profile,
                            label(v),
                            _num(measured),
                            _num(ideal),
                            _num(efficiency, ".0%"),
                            _num(_ratio(simulated, ideal), ".0%"),
                        ]
                    )
    parts.append(
        _table(["workload", "network", "method", "measured tok/s", "ideal tok/s", "efficiency", "sim/ideal"], rows)
    )
    path = plots.grouped_bars(
        out / "efficiency.png", "measured / ideal tokens/s", "efficiency", bars_groups, bars, reference=1.0
    )
    parts.append(_figure(path, "Efficiency: measured tokens/s over the ideal bound's, per cell."))
    return "\n\n".join(parts)


def _ideal(ctx: Context, group: Group, net: Network, variant: Variant, acceptance: Acceptance) -> float | None:
    """Median over the cell's runs of the ideal tokens/s for the run's prompt and length."""
    method, verify = variant
    runs = [
        r
        for r in ctx.group_records(group)
        if (r.key.method, r.key.verify) == variant and (method == Method.EDGE.value or r.key.profile == net.profile)
    ]
    sized = ctx.windows.get((net.profile, group[1]), ctx.costs).with_link(net.link)
    values = [
        ideal_tokens_per_s(method, verify, sized, acceptance, run_policy(r)[0], r.summary["new_tokens"], prompt_key(r))
        for r in runs
        if r.summary["new_tokens"]
    ]
    return statistics.median(values) if values else None


def _simulator(ctx: Context, out: Path) -> str:
    def shown(p: Prediction) -> bool:  # edge runs have no network: show them once
        return p.measured is not None and (p.method != Method.EDGE.value or p.profile == ctx.networks[0].profile)

    predictions = [p for p in ctx.predictions.values() if shown(p)]
    rows = []
    for p in predictions:
        profile = p.profile if p.method != Method.EDGE.value else NO_NETWORK
        row = ctx.rows.get((p.workload, p.temperature, profile, p.method, p.verify)) or {}
        rows.append(
            [
                f"{p.workload} T={p.temperature:g}",
                profile,
                label((p.method, p.verify)),
                _num(p.measured),
                _num(row.get("tokens_per_s_repeat_spread"), ".0%"),
                _num(p.predicted),
                _num(p.error and 100 * p.error, "+.1f", "%"),
                _num(p.replayed),
                _num(p.replay_error and 100 * p.replay_error, "+.1f", "%"),
            ]
        )
    points = {
        label(v): [(p.measured, p.predicted) for p in predictions if (p.method, p.verify) == v and p.measured]
        for v in ctx.variants
    }
    path = plots.predicted_vs_measured(out / "simulator.png", points)
    headers = ["workload", "network", "method", "measured tok/s", "repeat spread", "predicted tok/s", "error",
               "replayed tok/s", "error"]  # fmt: skip
    return (
        "## The simulator against measurement\n\npicospec/bench/simulator.py replays the edge's and the cloud's "
        "policies with each run's own acceptance trace and length. *Predicted*: with the costs measured from "
        "the runs of the same network profile and temperature (one cloud served them back to back, so they share "
        "the machine's state; the edge-only runs of that temperature are pooled in). *Replayed*: each run with its own compute costs (its "
        "drafter step, verification passes, decode step and prompt passes), which leaves only the protocol "
        "model's own error. *Repeat spread*: how much repeating the same prompt in the same cell varied "
        "tokens/s (median over the prompts of (max - min) / median), the noise any prediction of a cell's "
        f"median is up against.\n\n- predicted: {_accuracy(predictions, lambda p: p.error)}\n"
        f"- replayed: {_accuracy(predictions, lambda p: p.replay_error)}\n\n"
        + _table(headers, rows)
        + "\n\n"
        + _figure(path, "Predicted against measured tokens/s per cell; the band is +-10%.")
    )


def _accuracy(predictions: list[Prediction], error: Callable[[Prediction], float | None]) -> str:
    """How many cells are within 10%, and the largest error per method."""
    errors = [(label((p.method, p.verify)), e) for p in predictions if (e := error(p)) is not None]
    worst: dict[str, float] = {}
    for variant, e in errors:
        worst[variant] = max(worst.get(variant, 0.0), abs(e))
    within = sum(abs(e) <= 0.10 for _, e in errors)
    largest = ", ".join(f"{k} {100 * w:.1f}%" for k, w in worst.items())
    return f"{within} of {len(errors)} cells within 10%; largest error per method: {largest or '-'}"


def _literature(ctx: Context) -> str:
    parts = [
        "## The paper's setups, simulated (assumed costs)",
        "The paper gives no per-token timings, so picospec/bench/assumed.py derives them from a memory-bandwidth "
        "roofline of each device and model (sources and assumptions in its comments); message sizes come from "
        "our wire format with each vocabulary; acceptance is ours (this pair's recorded traces), not theirs. "
        "These are plausibility checks of the model, not reproductions.",
    ]
    for name in LITERATURE_PROFILES:
        costs = load_profile(name)
        predictions = predict_cells(ctx.records, costs, link=costs.link)
        ar = {(p.workload, p.temperature): p.predicted for p in predictions if p.method == Method.AR.value}
        rows = [
            [
                f"{p.workload} T={p.temperature:g}",
                label((p.method, p.verify)),
                _num(p.predicted),
                _num(p.predicted / ar[(p.workload, p.temperature)], ".2f", "x"),
            ]
            for p in predictions
        ]
        parts.append(
            f"### {name}\n\n{costs.source}; link {costs.link.describe()}. Paper: {PAPER_REPORTED[name]}.\n\n"
            + _table(["workload", "method", "simulated tok/s", "speedup over ar"], rows)
        )
    return "\n\n".join(parts)


def _identity(ctx: Context) -> str:
    title = "## Token identity at temperature 0"
    greedy = [r for r in ctx.records if r.key.temperature == 0 and r.key.method != Method.EDGE.value]
    if not greedy:
        return f"{title}\n\nNo temperature-0 runs."
    by_prompt: dict[tuple, list[RunRecord]] = {}
    for r in greedy:
        by_prompt.setdefault((r.key.workload, r.key.prompt_id), []).append(r)
    problems = []
    for (workload, prompt), runs in sorted(by_prompt.items()):
        reference = next((r for r in runs if r.key.method == Method.AR.value), runs[0])
        for r in runs:
            if r.token_ids != reference.token_ids:
                at = next(
                    (i for i, (a, b) in enumerate(zip(r.token_ids, reference.token_ids)) if a != b),
                    min(len(r.token_ids), len(reference.token_ids)),
                )
                problems.append(
                    [
                        f"{workload}:{prompt}",
                        f"{label((r.key.method, r.key.verify))} over {r.key.profile}",
                        f"{label((reference.key.method, reference.key.verify))} over {reference.key.profile}",
                        at,
                    ]
                )
    deterministic = {r.settings.get("deterministic") for r in greedy}
    note = f" (runs made with deterministic = {', '.join(map(str, sorted(deterministic, key=str)))})"
    if not problems:
        return (
            f"{title}\n\nIdentical: at temperature 0 every method produced the same token ids for each of the "
            f"{len(by_prompt)} prompts{note}; edge-only runs (the drafter's own output) are left out."
        )
    return f"{title}\n\n**{len(problems)} runs differ** from the reference run of their prompt{note}:\n\n" + _table(
        ["prompt", "run", "reference", "first differing token"], problems
    )


def _topk(ctx: Context) -> str:
    rows = [
        [
            f"{k[0]} T={k[1]:g}",
            k[2],
            _num(r["topk_tail_mass_mean_median"], ".2e"),
            _num(r["topk_tail_mass_mean_max"], ".2e"),
        ]
        for k, r in ctx.rows.items()
        if k[4] == "topk"
    ]
    if not rows:
        return "## topk: dropped tail mass\n\nNo topk runs."
    return (
        "## topk: dropped tail mass\n\nMean target mass outside the K entries sent, per rejection that shipped "
        "top-K material (a greedy rejection sends the argmax token and drops nothing; '-': no such rejection).\n\n"
        + _table(["workload", "network", "median of run means", "max of run means"], rows)
    )


def _costs(ctx: Context) -> str:
    c = ctx.costs
    verify = ", ".join(f"V({m}) = {1000 * s:.1f}" for m, s in c.verify.medians.items())
    modes = sorted(c.bytes_up_per_draft_token, key=VERIFY_ORDER.index)
    sizes = _table(
        ["verify mode", "uplink B / draft token", "downlink B / verdict"],
        [[m, _num(c.bytes_up_per_draft_token[m], ".1f"), _num(c.bytes_down_per_round.get(m), ".1f")] for m in modes],
    )
    overheads = ", ".join(f"{m} {1000 * s:.1f} ms" for m, s in c.round_overhead_by_mode.items())
    drafts = ", ".join(
        f"{m} {1000 * c.draft_s_by_method[m]:.1f} ms" for m in METHOD_ORDER if m in c.draft_s_by_method
    )
    alphas = ", ".join(
        f"{g[0]} T={g[1]:g}: {Acceptance.from_records(ctx.group_records(g)).alpha:.3f}" for g in ctx.groups
    )
    return (
        "## Costs measured from these runs\n\nOver the whole file (what the sweeps and the literature "
        "comparison use):\n\n"
        f"- drafter step t_d = {1000 * c.draft_s:.1f} ms (mean of the speculative edges' draft events)\n"
        f"- target decode step t_t = {1000 * c.target_s:.1f} ms (ar runs, per token after the first)\n"
        f"- verification pass over m evaluated tokens, medians in ms: {verify}; least squares "
        f"{1000 * c.verify.intercept_s:.1f} + {1000 * c.verify.per_token_s:.1f} m ms\n"
        f"- prompt passes (means over prompts): cloud {1000 * c.cloud_prefill_s:.0f} ms, "
        f"edge {1000 * c.edge_prefill_s:.0f} ms\n"
        "- protocol overhead per stop-and-wait round beyond compute and the link model: "
        f"{1000 * c.round_overhead_s:.1f} ms overall; by verify mode: {overheads or '-'}\n"
        f"- drafter step by method (the simulator and the bound use each method's own): {drafts}\n"
        f"- ar downlink: {c.bytes_down_per_ar_token:.1f} B per token\n"
        f"- per-token acceptance alpha: {alphas}\n\n" + sizes + "\n\n" + _window_costs(ctx)
    )


def _window_costs(ctx: Context) -> str:
    """The costs of each network profile's stretch of the run: how far the machine drifted."""
    methods = [m.value for m in (Method.EDGE, Method.VANILLA, Method.SYNC, Method.PICOSPEC)]
    rows = [
        [profile, f"{temperature:g}"]
        + [_num(1000 * w.draft_s_by_method[m] if m in w.draft_s_by_method else None, ".1f") for m in methods]
        + [_num(1000 * w.target_s, ".1f"), _num(1000 * w.verify(4), ".0f"), _num(1000 * w.verify(5), ".0f"),
           _num(w.cloud_prefill_s, ".2f")]  # fmt: skip
        for (profile, temperature), w in sorted(
            ctx.windows.items(), key=lambda item: (item[0][1], item[1].link.rtt_ms, -item[1].link.bandwidth_mbps)
        )
    ]
    headers = ["network", "T", *(f"t_d {m} ms" for m in methods), "t_t ms", "V(4) ms", "V(5) ms", "cloud prefill s"]
    return (
        "Per network profile and temperature (each network served by its own cloud, one stretch of time; "
        "what the predictions and the ideal bound use), with the edge-only runs of that temperature:\n\n"
        + _table(headers, rows)
    )


def _slug(name: str, group: Group) -> str:
    return f"{name}_{group[0]}_T{group[1]:g}.png".replace("/", "-")
