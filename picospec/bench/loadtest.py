"""`picospec loadtest`: many edges at once against one cloud, the batching cloud beside the unbatched one.

Each of N edges runs generation after generation (prompts from a workload, round robin) for a
fixed time; every token is timestamped as it reaches the edge. Reported per cloud: aggregate
tokens/s over the window, per-session tokens/s (p50, p95), time per token (p50, p99), time to
first token (p50, p95), the cloud's busy fraction and tokens per pass over the window, errors.

Edges replay recorded drafts by default (`--edge-mode replay`, temperature 0 only): the real
drafter runs once per prompt, teacher-forced on the target's greedy continuation, and each edge
then answers from that recording and sleeps the drafter's measured pass time instead of computing
(picospec/runners/replay.py), so N edges need no N cores. `--edge-mode live` gives every edge its
own drafter, all on the edge's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from rich.console import Console
from rich.table import Table

from picospec.app import add_edge_args, add_session_args, channel_security, cloud_context, edge_config, load_drafter
from picospec.options import CLOUD_PROCESS
from picospec.edge.client import CloudGeneration, generate
from picospec.edge.config import EdgeConfig, Method
from picospec.errors import InvalidInputError, PicoSpecError
from picospec.runners.base import ModelRunner
from picospec.security import ChannelSecurity

logger = logging.getLogger("picospec.loadtest")

EDGE_MODES = {
    "replay": "replayed drafts: the real drafter's rows recorded once per prompt (teacher-forced on the target's "
    "greedy output), replayed with its measured pass time slept, not computed",
    "live": "live drafters: a drafter per edge, computing on the edge's cores",
}


CLOUD_CHOICES = {"both": {"batched": True, "unbatched": False}, "batched": {"batched": True},
                 "unbatched": {"batched": False}}  # fmt: skip


@dataclass(frozen=True)
class LoadtestConfig:
    """How many edges, for how long, on which prompts."""

    edges: int = 4
    duration_s: float = 60.0
    # Load before the window opens: the first generations all start at once, their prompts queue,
    # and the window should see the cloud in its steady state.
    warmup_s: float = 30.0
    edge_mode: str = "replay"
    workload: str = "humaneval"
    n_prompts: int = 8
    seed: int = 0  # picks the prompts; base of the session seeds
    clouds: str = "both"  # local clouds to load: both (side by side), batched or unbatched
    rss_every_s: float = 30.0  # how often the window samples the cloud's resident memory

    def __post_init__(self) -> None:
        if self.edges < 1 or self.n_prompts < 1 or not self.duration_s > 0 or not self.warmup_s >= 0:
            raise InvalidInputError("edges, prompts and the duration must be positive, the warm-up not negative")
        if self.clouds not in CLOUD_CHOICES:
            raise InvalidInputError(f"clouds must be one of {', '.join(CLOUD_CHOICES)}, got {self.clouds!r}")
        if self.edge_mode not in EDGE_MODES:
            raise InvalidInputError(f"edge mode must be one of {', '.join(EDGE_MODES)}, got {self.edge_mode!r}")


@dataclass
class SessionSample:
    """One generation of one edge: when each batch of tokens arrived (edge clock), and how it ended."""

    started: float
    arrivals: list[tuple[float, int]] = field(default_factory=list)  # (time, tokens)
    ttft_s: float | None = None
    wall_s: float = 0.0
    error: str | None = None
    decoded: int = 0  # tokens the cloud decoded itself (no speculation)
    chunk_tokens: int = 0  # draft tokens the edge sent for verification
    chunks: int = 0  # verified chunks (rounds)
    accepted: int = 0  # of which passed

    @property
    def tokens(self) -> int:
        return sum(n for _, n in self.arrivals)

    def token_gaps(self) -> list[float]:
        """Seconds per token after the first: a batch of k tokens after a gap g counts k times g/k."""
        gaps = []
        for (before, _), (at, n) in zip(self.arrivals, self.arrivals[1:]):
            gaps += [(at - before) / n] * n
        return gaps


def _percentiles(values: Sequence[float], *qs: float) -> dict[str, float | None]:
    return {f"p{q:g}": (float(np.percentile(values, q)) if len(values) else None) for q in qs}


def summarize(samples: Sequence[SessionSample], window: tuple[float, float], cloud: Sequence[dict] | None) -> dict:
    """The load test's figures for one cloud: tokens that arrived in the window per second, the times
    of the sessions that started in it, errors of all, and, given the cloud's counters sampled over
    the window (its two ends included), its busy fraction and how its resident memory grew."""
    start, end = window
    in_window = sum(n for s in samples for at, n in s.arrivals if start <= at <= end)
    started = [s for s in samples if start <= s.started <= end]
    finished = [s for s in started if s.error is None and s.wall_s > 0]
    result = {
        "aggregate_tokens_per_s": in_window / (end - start),
        "sessions": len(started),
        "errors": sum(s.error is not None for s in samples),
        "first_errors": sorted({s.error for s in samples if s.error})[:3],
        "session_tokens_per_s": _percentiles([s.tokens / s.wall_s for s in finished], 50, 95),
        "time_per_token_s": _percentiles([g for s in finished for g in s.token_gaps()], 50, 99),
        "ttft_s": _percentiles([s.ttft_s for s in finished if s.ttft_s is not None], 50, 95),
        "edges": _edge_figures(finished),
    }
    if cloud is not None:
        before, after = cloud[0], cloud[-1]
        passes = after["passes"] - before["passes"]
        rss = [s["rss_bytes"] for s in cloud if s.get("rss_bytes")]
        result["cloud"] = {
            "busy_fraction": (after["busy_s"] - before["busy_s"]) / (end - start),
            "passes": passes,
            "tokens_per_pass": (after["tokens"] - before["tokens"]) / passes if passes else 0.0,
            "most_sequences_per_pass": after["most_sequences"],
            "longest_wait_s": after["longest_wait_s"],
            "rss_mib": {"start": rss[0] / 2**20, "max": max(rss) / 2**20, "end": rss[-1] / 2**20,
                        "samples": [round(r / 2**20, 1) for r in rss]} if rss else None,  # fmt: skip
            "rss_growth": max(rss) / rss[0] - 1 if rss else None,
            "heap_mib": _heap_series(cloud),
        }
    return result


def _heap_series(cloud: Sequence[dict]) -> dict | None:
    """glibc's heap at each sample, MiB: live allocations and freed memory it still holds (which
    tells fragmentation from a leak when the resident size grows)."""
    heaps = [s["heap_bytes"] for s in cloud if s.get("heap_bytes")]
    if not heaps:
        return None
    return {key: [round(h[key] / 2**20, 1) for h in heaps] for key in ("in_use", "free_held")}


def _edge_figures(samples: Sequence[SessionSample]) -> dict:
    """How the edges' controllers spent the generations: the share the cloud decoded itself, the
    mean chunk, and the share of draft tokens that passed."""
    tokens, chunks = sum(s.tokens for s in samples), sum(s.chunk_tokens for s in samples)
    return {
        "cloud_decoded_share": sum(s.decoded for s in samples) / tokens if tokens else None,
        "draft_tokens_sent": chunks,
        "mean_chunk": chunks / sum(s.chunks for s in samples) if chunks else None,
        "draft_acceptance": sum(s.accepted for s in samples) / chunks if chunks else None,
    }


def run_load(
    address: str,
    runner_for: Callable[[int, int], ModelRunner],
    prompts: Sequence[list[int]],
    edge_config: EdgeConfig,
    config: LoadtestConfig,
    cloud_stats: Callable[[], dict] | None = None,
    security: ChannelSecurity = ChannelSecurity(),
) -> dict:
    """config.edges edges, each starting generations (edge i at prompt i) until the window of
    config.duration_s after config.warmup_s closes; summarize() of what they measured in the window.
    runner_for(edge, prompt index) gives the drafter; `security` reaches the cloud. Choose a duration many generations long: the
    window counts only the tokens that arrive in it."""
    return asyncio.run(_run_load(address, runner_for, prompts, edge_config, config, cloud_stats, security))


async def _run_load(address, runner_for, prompts, edge_config, config, cloud_stats, security) -> dict:
    # Every edge on this one event loop; each speculative session drafts on a thread of its own
    # (edge/loop.py), and the cloud's counters are read on another whatever the edges do.
    samples: list[SessionSample] = []
    start = time.perf_counter() + config.warmup_s
    deadline = start + config.duration_s

    async def edge(index: int) -> None:
        for count in itertools.count():
            if time.perf_counter() >= deadline:
                return
            prompt_index = (index + count * config.edges) % len(prompts)
            seed = config.seed + count * config.edges + index
            sample = SessionSample(time.perf_counter())
            sink = lambda tokens, _source: sample.arrivals.append((time.perf_counter(), len(tokens)))  # noqa: E731
            session_config = dataclasses.replace(edge_config, verify=dataclasses.replace(edge_config.verify, seed=seed))
            runner = runner_for(index, prompt_index)
            try:
                generation = CloudGeneration(address, security, runner, prompts[prompt_index], session_config, sink)
                report = await generation.run()
                sample.ttft_s, sample.wall_s = report.ttft_s, report.wall_s
                sample.decoded, sample.accepted = report.decoded, sum(report.accepted_lengths)
                sample.chunk_tokens, sample.chunks = sum(report.chunk_lengths), len(report.chunk_lengths)
            except Exception as exc:  # noqa: BLE001 (an edge's failure is a measured error, not the test's end)
                sample.error = f"{type(exc).__name__}: {exc}"
            samples.append(sample)

    edges = asyncio.gather(*(edge(i) for i in range(config.edges)))
    await asyncio.sleep(max(0.0, start - time.perf_counter()))
    cloud = [await _read_stats(cloud_stats)] if cloud_stats else None
    while (left := deadline - time.perf_counter()) > 0:
        await asyncio.sleep(min(left, config.rss_every_s))
        if cloud is not None:  # the last read at the window's end: generations still running finish after it
            cloud.append(await _read_stats(cloud_stats))
    await edges
    if cloud is not None and (cloud[0] is None or cloud[-1] is None):
        logger.warning("the cloud's counters were not read at both ends of the window: no cloud figures")
        cloud = None
    return summarize(samples, (start, deadline), [s for s in cloud if s is not None] if cloud else None)


async def _read_stats(cloud_stats: Callable[[], dict]) -> dict | None:
    """The cloud's counters, or None when it does not answer in time (the edges' figures stand without them)."""
    try:
        return await asyncio.to_thread(cloud_stats)
    except PicoSpecError as exc:
        logger.warning("%s", exc)
        return None


# -- `picospec loadtest` ------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `loadtest` command."""
    defaults = LoadtestConfig()
    parser = subparsers.add_parser("loadtest", help="many concurrent edges against a cloud: batching on vs off")
    parser.add_argument("--method", choices=[m.value for m in (Method.PICOSPEC, Method.SYNC, Method.AR)],
                        default=Method.PICOSPEC.value, help="what every edge runs")  # fmt: skip
    parser.add_argument("--edges", type=int, default=defaults.edges, metavar="N", help="concurrent edge sessions")
    parser.add_argument("--duration", type=float, default=defaults.duration_s, metavar="S",
                        help="seconds of load per cloud")  # fmt: skip
    parser.add_argument("--warmup", type=float, default=defaults.warmup_s, metavar="S",
                        help="seconds of load before the window opens (the first prompts all queue at once)")  # fmt: skip
    parser.add_argument("--edge-mode", choices=list(EDGE_MODES), default=defaults.edge_mode,
                        help="; ".join(f"{k}: {v}" for k, v in EDGE_MODES.items()))  # fmt: skip
    parser.add_argument("--workload", default=defaults.workload, help="prompts: humaneval or mtbench")
    parser.add_argument("--prompts", type=int, default=defaults.n_prompts, dest="n_prompts", metavar="N",
                        help="prompts of the workload, used round robin")  # fmt: skip
    parser.add_argument("--clouds", choices=list(CLOUD_CHOICES), default=defaults.clouds,
                        help="local clouds to load in turn: both (batching gain side by side), or only one (a soak)")  # fmt: skip
    parser.add_argument("--step-tokens", type=int, default=CLOUD_PROCESS.step_tokens, metavar="N",
                        help="the batching local cloud's --step-tokens")  # fmt: skip
    parser.add_argument("--gather-ms", type=float, default=CLOUD_PROCESS.gather_s * 1000, metavar="MS",
                        help="the batching local cloud's --gather-ms")  # fmt: skip
    add_session_args(parser)
    add_edge_args(parser)  # --cloud HOST:PORT (None: a batching and an unbatched local cloud in turn), ...
    parser.add_argument("--json", action="store_true",
                        help="print one object: batched, unbatched (or cloud, with --cloud) and gain")  # fmt: skip
    parser.set_defaults(func=_run_loadtest)


def _run_loadtest(args: argparse.Namespace) -> int:
    from picospec.bench.workloads import select_prompts
    from picospec.runners.replay import DraftRecording, ReplayRunner, record_drafts

    load = LoadtestConfig(args.edges, args.duration, args.warmup, args.edge_mode, args.workload, args.n_prompts, args.seed,
                          args.clouds)  # fmt: skip
    config = edge_config(args, Method(args.method))
    if load.edge_mode == "replay" and config.params.temperature != 0:
        raise InvalidInputError("replayed drafts follow the target's greedy path: use --temperature 0 or --edge-mode live")
    if args.deterministic and not args.cloud:
        raise InvalidInputError("--deterministic turns batching off, and the load test compares batching on and off")
    security = channel_security(args)
    drafter = load_drafter(args)
    prompts = [drafter.chat_tokens(p.text) for p in select_prompts([load.workload], load.n_prompts, load.seed)]
    live = [drafter] + [load_drafter(args) for _ in range(load.edges - 1)] if load.edge_mode == "live" else []
    recordings: list[DraftRecording] = []
    results: dict = {"edges": load.edges, "duration_s": load.duration_s, "warmup_s": load.warmup_s,
                     "edge_mode": EDGE_MODES[load.edge_mode]}  # fmt: skip
    clouds = {"cloud": None} if args.cloud else CLOUD_CHOICES[load.clouds]
    console = Console(stderr=True, highlight=False)
    for name, batching in clouds.items():
        process = {"batching": bool(batching), "max_sessions": max(load.edges, CLOUD_PROCESS.max_sessions),
                   "step_tokens": args.step_tokens, "gather_s": args.gather_ms / 1000}  # fmt: skip
        with cloud_context(args, **process) as local:
            address = args.cloud or local.address
            if load.edge_mode == "replay" and not recordings:
                console.print(f"recording the drafter on {len(prompts)} prompts ...")
                greedy = dataclasses.replace(config, method=Method.AR)
                recordings = [record_drafts(drafter, p, generate(address, drafter, p, greedy, security=security).token_ids)
                              for p in prompts]  # fmt: skip
            vocab = drafter.vocab_info()

            def runner_for(edge: int, prompt: int) -> ModelRunner:
                return ReplayRunner(recordings[prompt], vocab) if recordings else live[edge]

            console.print(f"{name}: {load.edges} edges, {load.warmup_s:g} s of warm-up, then {load.duration_s:g} s measured ...")
            results[name] = run_load(address, runner_for, prompts, config, load, local.stats if local else None, security)
    if len(clouds) == 2:
        results["gain"] = results["batched"]["aggregate_tokens_per_s"] / max(results["unbatched"]["aggregate_tokens_per_s"], 1e-9)
    if args.json:
        print(json.dumps(results))
    else:
        print_results(Console(highlight=False), results)
    return 0


def print_results(console: Console, results: dict) -> None:
    """The figures of each cloud side by side."""
    names = [k for k in ("batched", "unbatched", "cloud") if k in results]
    table = Table(title=f"{results['edges']} edges, {results['duration_s']:g} s each; {results['edge_mode']}")
    table.add_column("")
    for name in names:
        table.add_column(name, justify="right")

    def cell(value) -> str:
        return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    rows = {
        "aggregate tokens/s": lambda r: r["aggregate_tokens_per_s"],
        "sessions / errors": lambda r: f"{r['sessions']} / {r['errors']}",
        "session tokens/s p50 / p95": lambda r: " / ".join(cell(v) for v in r["session_tokens_per_s"].values()),
        "time per token s p50 / p99": lambda r: " / ".join(cell(v) for v in r["time_per_token_s"].values()),
        "ttft s p50 / p95": lambda r: " / ".join(cell(v) for v in r["ttft_s"].values()),
        "cloud busy": lambda r: r["cloud"]["busy_fraction"] if "cloud" in r else None,
        "tokens per pass": lambda r: r["cloud"]["tokens_per_pass"] if "cloud" in r else None,
        "longest wait s": lambda r: r["cloud"]["longest_wait_s"] if "cloud" in r else None,
        "cloud RSS growth in the window": lambda r: r["cloud"]["rss_growth"] if "cloud" in r else None,
        "cloud-decoded share": lambda r: r["edges"]["cloud_decoded_share"],
        "draft acceptance": lambda r: r["edges"]["draft_acceptance"],
    }
    for label, get in rows.items():
        table.add_row(label, *(cell(get(results[n])) for n in names))
    console.print(table)
    if "gain" in results:
        console.print(f"batching gain (aggregate tokens/s): {results['gain']:.2f}x")
    for name in names:
        for error in results[name]["first_errors"]:
            console.print(f"[red]{name}: {error}[/]")
