"""`picospec simulate RESULTS`: the simulator's predictions for each cell (predict.py) as a table."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from picospec.bench.assumed import LITERATURE_PROFILES, load_profile
from picospec.bench.costs import CostProfile
from picospec.bench.forced import load_traces
from picospec.bench.measure import measure_costs
from picospec.bench.predict import predict_cells
from picospec.bench.results import load_runs
from picospec.bench.text import label, optional_number
from picospec.edge.config import Method
from picospec.transport.netem import LinkProfile


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
    parser.add_argument(
        "--traces",
        type=Path,
        help="teacher-forced traces (written by `picospec bench ideal --traces`): runs made with the controller "
        "(picospec's default policy) are simulated with it on their prompt's trace; without this they are left out",
    )
    parser.set_defaults(func=_simulate_command)


def _methods(text: str) -> list[Method]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    allowed = [m.value for m in Method]
    if not names or any(n not in allowed for n in names):
        raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(allowed)}")
    return [Method(n) for n in names]


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: a probability in [0, 1]")
    return value


def _simulate_command(args: argparse.Namespace) -> int:
    records = load_runs(args.results)
    costs = load_profile(args.profile) if args.profile else None
    link = _custom_link(args, costs or measure_costs(records))
    predictions = predict_cells(records, costs, args.methods, link, args.alpha, forced=load_traces(args.traces) if args.traces else None)
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
            label((p.method, p.verify)),
            f"{p.predicted:.2f}",
            optional_number(p.measured, ".2f"),
            optional_number(p.error and 100 * p.error, "+.1f", "%"),
            optional_number(p.replayed, ".2f"),
            optional_number(p.replay_error and 100 * p.replay_error, "+.1f", "%"),
        )
    Console().print(table)
    left_out = 0 if args.traces else sum(r.controlled for r in records)
    if left_out:
        Console().print(f"{left_out} runs made with the controller are left out: give their teacher-forced traces (--traces).")
    if any(p.measured is not None for p in predictions):
        Console().print(
            "predicted: costs measured per network profile and temperature (its cloud's stretch of the run); "
            "replayed: each run with its own compute costs (the protocol model alone)."
        )
    return 0


def _custom_link(args: argparse.Namespace, costs: CostProfile) -> LinkProfile | None:
    """The link given on the command line (either value defaulting to the profile's), or None."""
    if args.rtt_ms is None and args.bandwidth_mbps is None:
        return costs.link if args.profile else None
    rtt = costs.link.rtt_ms if args.rtt_ms is None else args.rtt_ms
    bandwidth = costs.link.bandwidth_mbps if args.bandwidth_mbps is None else args.bandwidth_mbps
    return LinkProfile(rtt, bandwidth)
