"""The benchmark report as markdown with figures: the rendering of analysis.py's tables.

Sections: throughput and speedup in the shape of the paper's Table 1; the two ablations (without
the pipeline; without separate rejection sampling); bytes per token; speedup against RTT and
bandwidth (simulated curves through the measured points); timelines of vanilla and picospec on
one prompt; efficiency against the ideal bound; the simulator against measurement; what the
simulator predicts for the paper's setups; the temperature-0 token identity check; topk's
dropped tail mass; and the costs everything above was computed from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from picospec.bench import plots
from picospec.bench.aggregate import METHOD_ORDER, VERIFY_ORDER
from picospec.bench.analysis import (
    VANILLA,
    Accuracy,
    Analysis,
    Group,
    accuracy,
    bytes_per_token,
    efficiencies,
    group_alphas,
    literature_predictions,
    measured_predictions,
    pipeline_gains,
    prediction_profile,
    prediction_spread,
    ratio,
    separation_gains,
    sorted_windows,
    speedup_sweeps,
    timeline,
    token_identity,
    topk_rows,
)
from picospec.bench.bound import PositionTrace
from picospec.bench.forced import TraceKey
from picospec.bench.results import RunRecord
from picospec.bench.text import label
from picospec.bench.text import optional_number as _num
from picospec.edge.config import Method

# What the paper (arXiv 2603.19133) reports, for comparison with the simulated literature setups.
PAPER_REPORTED = {
    "orin-a100-llama": "picospec up to 2.9x over cloud-only ar (Llama-3.2-1B edge / Llama-3.1-70B cloud, HumanEval)",
    "orin-a100-qwen3": "picospec 1.13x-1.45x over ar; vanilla stop-and-wait SD 0.44x-0.58x (Qwen3-0.6B / Qwen3-32B)",
}


def write_report(records: list[RunRecord], out: Path, source: str, forced: dict[TraceKey, PositionTrace] | None = None) -> Path:
    """Write README.md and its PNGs into `out`; return the markdown's path. forced: teacher-forced
    traces, with which the simulator replays the runs made with the controller."""
    out.mkdir(parents=True, exist_ok=True)
    a = Analysis(records, forced)
    sections = [
        _header(a, source),
        _throughput(a, out),
        _ablations(a),
        _bytes(a, out),
        _sweeps(a, out),
        _timelines(a, out),
        _efficiency(a, out),
        _simulator(a, out),
        _literature(a),
        _identity(records),
        _topk(a),
        _costs(a),
    ]
    path = out / "README.md"
    path.write_text("\n\n".join(sections) + "\n")
    return path


# -- markdown helpers ----------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _figure(path: Path, caption: str) -> str:
    return f"![{caption}]({path.name})\n\n*{caption}*"


def _group(group: Group) -> str:
    return f"{group[0]} T={group[1]:g}"


def _slug(name: str, group: Group) -> str:
    return f"{name}_{group[0]}_T{group[1]:g}.png".replace("/", "-")


# -- sections ------------------------------------------------------------------------------------


def _header(a: Analysis, source: str) -> str:
    settings = a.records[0].settings
    shown = ", ".join(f"{k} {v}" for k, v in settings.items()) or "not recorded"
    nets = ", ".join(f"{n.profile} ({n.rtt_ms:g} ms, {n.bandwidth_mbps:g} Mbit/s)" for n in a.networks)
    return (
        f"# PicoSpec benchmark report\n\n"
        f"From `{source}`: {len(a.records)} runs, {len(a.rows)} cells; methods "
        f"{', '.join(label(v) for v in a.variants)}; networks {nets}.\n\n"
        f"Settings: {shown}.\n\n"
        "tokens/s = new tokens / wall seconds of the edge, time to the first token included (the clock "
        "starts when the cloud's welcome arrives). Every figure is the median over a cell's runs."
    )


def _throughput(a: Analysis, out: Path) -> str:
    parts = ["## Throughput and speedup over cloud-only decoding (the paper's Table 1)"]
    for group in a.groups:
        nets = a.columns(group)
        headers = ["method"] + [f"{n.profile} tok/s ±noise (speedup)" for n in nets]
        rows = []
        for v in a.variants:
            cells = []
            for n in nets:
                spread = a.repeat_spread(group, n, v)
                noise = "" if spread is None else f" ±{50 * spread:.0f}%"
                speedup = _num(a.speedup(group, n, v), ".2f", "x")
                cells.append(f"{_num(a.tokens_per_s(group, n, v))}{noise} ({speedup})")
            rows.append([label(v)] + cells)
        parts.append(f"### {group[0]}, temperature {group[1]:g}\n\n" + _table(headers, rows))
        name = _slug("throughput", group)
        series = {label(v): [a.tokens_per_s(group, n, v) for n in nets] for v in a.variants}
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


def _ablations(a: Analysis) -> str:
    rows = [
        [_group(x.group), x.network.profile, x.variant[1].value, _num(x.baseline), _num(x.value), _num(x.gain, ".2f", "x")]
        for x in pipeline_gains(a)
    ]
    pipeline = "### Without the pipeline: sync (stop-and-wait) against picospec, same verify mode\n\n" + (
        _table(["workload", "network", "verify", "sync tok/s", "picospec tok/s", "pipeline gain"], rows)
        if rows
        else "No verify mode was run with both sync and picospec."
    )
    rows = [
        [_group(x.group), x.network.profile, _num(x.baseline), label(x.variant), _num(x.value),
         _num(x.gain, ".2f", "x")]  # fmt: skip
        for x in separation_gains(a)
    ]
    separate = (
        "### Without separate rejection sampling: vanilla (whole draft distributions uplinked) against the "
        "separate modes\n\nsync/<mode> against vanilla isolates what travels (both stop-and-wait); "
        "picospec/<mode> against vanilla adds the pipeline.\n\n"
        + (
            _table(["workload", "network", "vanilla tok/s", "against", "tok/s", "gain"], rows)
            if rows and VANILLA in a.variants
            else "No vanilla runs to compare with."
        )
    )
    return "\n\n".join(["## Ablations", pipeline, separate])


def _bytes(a: Analysis, out: Path) -> str:
    sizes = bytes_per_token(a)
    rows = [[label(v), _num(u, ".1f"), _num(d, ".1f")] for v, u, d in sizes]
    # Log scale: no zero bars.
    series = {"uplink": [u or None for _, u, _ in sizes], "downlink": [d or None for _, _, d in sizes]}
    path = plots.grouped_bars(
        out / "bytes_per_token.png",
        "bytes per output token (log scale)",
        "bytes",
        [label(v) for v, _, _ in sizes],
        series,
        log=True,
    )
    return (
        "## Bytes per output token\n\nMedian over all cells of a method (messages as protobuf counts them).\n\n"
        + _table(["method", "uplink B/token", "downlink B/token"], rows)
        + "\n\n"
        + _figure(path, "Bytes per output token by method and verify mode, log scale.")
    )


def _sweeps(a: Analysis, out: Path) -> str:
    parts = [
        "## Speedup against RTT and bandwidth",
        "Lines: the simulator, with the costs measured here, sweeping one link parameter while the "
        "other stays at a measured profile's value; markers: the measured speedup at that profile. "
        "(edge, which uses no network, is in the throughput table.)",
    ]
    for group in a.groups:
        sweeps = speedup_sweeps(a, group)
        if not sweeps:
            continue
        panels = []
        for s in sweeps:
            net = s.network
            panels.append(
                [
                    plots.Sweep(
                        f"{net.bandwidth_mbps:g} Mbit/s ({net.profile})",
                        "RTT (ms)",
                        s.rtts,
                        _by_label(s.by_rtt),
                        {label(v): [(net.rtt_ms, x, net.profile)] for v, x in s.measured.items()},
                    ),
                    plots.Sweep(
                        f"{net.rtt_ms:g} ms RTT ({net.profile})",
                        "bandwidth (Mbit/s)",
                        s.bandwidths,
                        _by_label(s.by_bandwidth),
                        {label(v): [(net.bandwidth_mbps, x, net.profile)] for v, x in s.measured.items()},
                        log_x=True,
                    ),
                ]
            )
        path = plots.sweeps(out / _slug("speedup_sweeps", group), panels)
        parts.append(
            _figure(path, f"Speedup over ar against RTT (left) and bandwidth (right), {group[0]}, T={group[1]:g}.")
        )
    return "\n\n".join(parts)


def _by_label(curves: dict) -> dict[str, list[float]]:
    return {label(v): ys for v, ys in curves.items()}


def _timelines(a: Analysis, out: Path) -> str:
    title = "## Timelines: vanilla and picospec on the same prompt"
    shown = timeline(a)
    if shown is None:
        return f"{title}\n\nThe results hold no prompt run with both vanilla and picospec on one network."
    vanilla = label((shown.vanilla.key.method, shown.vanilla.key.verify))
    picospec = label((shown.picospec.key.method, shown.picospec.key.verify))
    panels = {f"{vanilla}, measured": shown.vanilla_lanes, f"{picospec}, measured": shown.picospec_lanes}
    if shown.simulated_lanes:
        panels[f"{picospec}, simulated"] = shown.simulated_lanes
    key = shown.picospec.key
    name = f"{key.workload}:{key.prompt_id} over {key.profile}"
    path = plots.gantt(out / "timeline.png", panels, name)
    return (
        f"{title}\n\n{name}, temperature {key.temperature:g}. Green: the edge drafting (simulated: "
        "also its pass over each committed token); red: the cloud verifying; blue/purple: a chunk / a verdict "
        "on the link; ticks: verdicts arriving; white: idle.\n\n"
        "The edge records only its own events (drafts, verdict arrivals) and each round's cloud compute time. "
        "Approximations: a round's verification is drawn as ending rtt/2 (plus the verdict's serialisation) "
        "before its verdict reached the edge, and its chunk as crossing the link just before the verification "
        "began (as if the cloud had been idle); a pipelined edge notices a verdict only after the draft in "
        "progress, so those cloud bars may sit up to one draft late. The simulated panel has no such "
        "approximation.\n\n" + _figure(path, f"Timelines of {name}.")
    )


def _efficiency(a: Analysis, out: Path) -> str:
    parts = [
        "## Efficiency against the ideal bound",
        "ideal: picospec/bench/bound.py's closed forms with the measured costs and the group's acceptance "
        "(per run: its prompt's prefill, its length), no overhead beyond the link model and no implementation "
        "waste. efficiency = measured / ideal; sim/ideal shows how much of the gap the simulator explains "
        "(the policy's and implementation's waits that the bound leaves out).",
    ]
    cells = efficiencies(a)
    rows = [
        [_group(e.group), e.network.profile, label(e.variant), _num(e.measured), _num(e.ideal),
         _num(e.efficiency, ".0%"), _num(ratio(e.simulated, e.ideal), ".0%")]  # fmt: skip
        for e in cells
        if e.ideal is not None
    ]
    parts.append(
        _table(["workload", "network", "method", "measured tok/s", "ideal tok/s", "efficiency", "sim/ideal"], rows)
    )
    bar_groups = [f"{g[0]} {n.profile}" for g, n in a.cells()]
    bars = {label(v): [e.efficiency for e in cells if e.variant == v] for v in a.variants}
    path = plots.grouped_bars(
        out / "efficiency.png", "measured / ideal tokens/s", "efficiency", bar_groups, bars, reference=1.0
    )
    parts.append(_figure(path, "Efficiency: measured tokens/s over the ideal bound's, per cell."))
    return "\n\n".join(parts)


def _simulator(a: Analysis, out: Path) -> str:
    predictions = measured_predictions(a)
    rows = [
        [
            _group((p.workload, p.temperature)),
            prediction_profile(p),
            label((p.method, p.verify)),
            _num(p.measured),
            _num(prediction_spread(a, p), ".0%"),
            _num(p.predicted),
            _num(p.error and 100 * p.error, "+.1f", "%"),
            _num(p.replayed),
            _num(p.replay_error and 100 * p.replay_error, "+.1f", "%"),
        ]
        for p in predictions
    ]
    points = {
        label(v): [(p.measured, p.predicted) for p in predictions if (p.method, p.verify) == v and p.measured]
        for v in a.variants
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
        f"median is up against.{_left_out(a)}\n\n- predicted: {_accuracy(accuracy(predictions, lambda p: p.error))}\n"
        f"- replayed: {_accuracy(accuracy(predictions, lambda p: p.replay_error))}\n\n"
        + _table(headers, rows)
        + "\n\n"
        + _figure(path, "Predicted against measured tokens/s per cell; the band is +-10%.")
    )


def _left_out(a: Analysis) -> str:
    """What the simulator could not replay: runs made with the controller, without their traces."""
    missing = [r for r in a.records if r.controlled and (r.key.prompt, r.key.temperature) not in (a.forced or {})]
    if not missing:
        return ""
    return (
        f" {len(missing)} runs made with the controller are left out here and below: replaying them needs "
        "their prompts' teacher-forced traces beside the results (`picospec bench ideal RESULTS` writes them)."
    )


def _accuracy(acc: Accuracy) -> str:
    largest = ", ".join(f"{label(v)} {100 * w:.1f}%" for v, w in acc.worst.items())
    return f"{acc.within} of {acc.cells} cells within 10%; largest error per method: {largest or '-'}"


def _literature(a: Analysis) -> str:
    parts = [
        "## The paper's setups, simulated (assumed costs)",
        "The paper gives no per-token timings, so picospec/bench/assumed.py derives them from a memory-bandwidth "
        "roofline of each device and model (sources and assumptions in its comments); message sizes come from "
        "our wire format with each vocabulary; acceptance is ours (this pair's recorded traces), not theirs. "
        "These are plausibility checks of the model, not reproductions.",
    ]
    for name, costs, predictions in literature_predictions(a):
        ar = {(p.workload, p.temperature): p.predicted for p in predictions if p.method is Method.AR}
        rows = [
            [
                _group((p.workload, p.temperature)),
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


def _identity(records: list[RunRecord]) -> str:
    title = "## Token identity at temperature 0"
    check = token_identity(records)
    if not check.prompts:
        return f"{title}\n\nNo temperature-0 runs."
    note = f" (runs made with deterministic = {', '.join(map(str, check.deterministic))})"
    if not check.mismatches:
        return (
            f"{title}\n\nIdentical: at temperature 0 every method produced the same token ids for each of the "
            f"{check.prompts} prompts{note}; edge-only runs (the drafter's own output) are left out."
        )
    rows = [
        [
            f"{m.workload}:{m.prompt_id}",
            f"{label((m.run.key.method, m.run.key.verify))} over {m.run.key.profile}",
            f"{label((m.reference.key.method, m.reference.key.verify))} over {m.reference.key.profile}",
            m.first_difference,
        ]
        for m in check.mismatches
    ]
    return f"{title}\n\n**{len(rows)} runs differ** from the reference run of their prompt{note}:\n\n" + _table(
        ["prompt", "run", "reference", "first differing token"], rows
    )


def _topk(a: Analysis) -> str:
    rows = [
        [_group(k[:2]), k[2], _num(r["topk_tail_mass_mean_median"], ".2e"),
         _num(r["topk_tail_mass_mean_max"], ".2e")]  # fmt: skip
        for k, r in topk_rows(a)
    ]
    if not rows:
        return "## topk: dropped tail mass\n\nNo topk runs."
    return (
        "## topk: dropped tail mass\n\nMean target mass outside the K entries sent, per rejection that shipped "
        "top-K material (a greedy rejection sends the argmax token and drops nothing; '-': no such rejection).\n\n"
        + _table(["workload", "network", "median of run means", "max of run means"], rows)
    )


def _costs(a: Analysis) -> str:
    c = a.costs
    verify = ", ".join(f"V({m}) = {1000 * s:.1f}" for m, s in c.verify.medians.items())
    modes = sorted(c.bytes_up_per_draft_token, key=VERIFY_ORDER.index)
    sizes = _table(
        ["verify mode", "uplink B / draft token", "downlink B / verdict"],
        [[m.value, _num(c.bytes_up_per_draft_token[m], ".1f"), _num(c.bytes_down_per_round.get(m), ".1f")] for m in modes],
    )
    overheads = ", ".join(f"{m.value} {1000 * s:.1f} ms" for m, s in c.round_overhead_by_mode.items())
    drafts = ", ".join(
        f"{m.value} {1000 * c.draft_s_by_method[m]:.1f} ms" for m in METHOD_ORDER if m in c.draft_s_by_method
    )
    alphas = ", ".join(f"{_group(g)}: {alpha:.3f}" for g, alpha in group_alphas(a))
    return (
        "## Costs measured from these runs\n\nOver the whole file (what the sweeps and the literature "
        "comparison use):\n\n"
        f"- drafter step t_d = {1000 * c.draft_s:.1f} ms (mean of the speculative edges' draft events)\n"
        f"- target decode step t_t = {1000 * c.target_s:.1f} ms (ar runs, per token after the first), "
        f"and {1000 * c.decode_overhead_s:.1f} ms more per streamed token (the session loop and gRPC)\n"
        f"- verification pass over m evaluated tokens, medians in ms: {verify}; least squares "
        f"{1000 * c.verify.intercept_s:.1f} + {1000 * c.verify.per_token_s:.1f} m ms\n"
        f"- prompt passes (means over prompts): cloud {1000 * c.cloud_prefill_s:.0f} ms, "
        f"edge {1000 * c.edge_prefill_s:.0f} ms\n"
        "- protocol overhead per stop-and-wait round beyond compute and the link model: "
        f"{1000 * c.round_overhead_s:.1f} ms overall; by verify mode: {overheads or '-'}\n"
        f"- drafter step by method (the simulator and the bound use each method's own): {drafts}\n"
        f"- ar downlink: {c.bytes_down_per_ar_token:.1f} B per token\n"
        f"- per-token acceptance alpha: {alphas}\n\n" + sizes + "\n\n" + _window_costs(a)
    )


def _window_costs(a: Analysis) -> str:
    """The costs of each network profile's stretch of the run: how far the machine drifted."""
    methods = (Method.EDGE, Method.VANILLA, Method.SYNC, Method.PICOSPEC)
    rows = [
        [profile, f"{temperature:g}"]
        + [_num(1000 * w.draft_s_by_method[m] if m in w.draft_s_by_method else None, ".1f") for m in methods]
        + [_num(1000 * w.target_s, ".1f"), _num(1000 * w.verify(4), ".0f"), _num(1000 * w.verify(5), ".0f"),
           _num(w.cloud_prefill_s, ".2f")]  # fmt: skip
        for (profile, temperature), w in sorted_windows(a)
    ]
    headers = ["network", "T", *(f"t_d {m.value} ms" for m in methods), "t_t ms", "V(4) ms", "V(5) ms", "cloud prefill s"]
    return (
        "Per network profile and temperature (each network served by its own cloud, one stretch of time; "
        "what the predictions and the ideal bound use), with the edge-only runs of that temperature:\n\n"
        + _table(headers, rows)
    )
