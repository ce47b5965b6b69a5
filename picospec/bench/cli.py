"""`picospec bench run` (the benchmark matrix on the real default pair) and `picospec bench report`."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Collection, Iterator

from picospec.bench import compare as compare_module
from picospec.bench.profiles import PROFILES
from picospec.bench.runner import BenchConfig, estimate_config_s, run_benchmark
from picospec.bench.workloads import WORKLOADS
from picospec.edge.config import Method
from picospec.edge.controller import POLICIES
from picospec.transport.netem import LinkProfile
from picospec.verify import VerifyMode

# Small enough for a check of the whole chain in minutes; its own file, so it never mixes
# with the default run's results (other max_new_tokens).
QUICK = BenchConfig(
    workloads=("humaneval",),
    n_prompts=1,
    methods=(Method.AR, Method.VANILLA, Method.SYNC, Method.PICOSPEC),
    verify={Method.SYNC: (VerifyMode.EXACT,), Method.PICOSPEC: (VerifyMode.EXACT,)},
    profiles=("wan",),
    max_new_tokens=32,
    out=Path("results/bench-quick.jsonl"),
)
DEFAULT = BenchConfig()
SPECULATIVE_WITH_MODES = (Method.SYNC, Method.PICOSPEC)  # vanilla always runs full


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `bench` with its actions `run` and `report`."""
    bench = subparsers.add_parser("bench", help="the benchmark: run the matrix, report on the results")
    actions = bench.add_subparsers(dest="action", required=True, metavar="ACTION")
    _add_run_action(actions)
    _add_report_action(actions)
    compare = actions.add_parser("compare", help="side-by-side speed ratios of every method to ar (median per cell)")
    compare_module.add_arguments(compare)
    compare.set_defaults(func=compare_module.main)


def _describe(config: BenchConfig) -> str:
    verify = "; ".join(f"{m.value}: {','.join(v.value for v in modes)}" for m, modes in config.verify.items())
    return (f"{'+'.join(config.workloads)} x {config.n_prompts} prompts, profiles {','.join(config.profiles)}, "
            f"methods {','.join(m.value for m in config.methods)} (verify {verify}), "
            f"temperatures {','.join(f'{t:g}' for t in config.temperatures)}, {config.repeats} repeat(s), "
            f"{config.max_new_tokens} tokens: about {estimate_config_s(config) / 60:.0f} min")  # fmt: skip


def _add_run_action(actions: argparse._SubParsersAction) -> None:
    epilog = (
        f"default: {_describe(DEFAULT)}.\n--quick: {_describe(QUICK)}.\n"
        "Estimates are for a 2-core CPU without AVX-512 (1.5B target ~135 ms/token, 0.5B drafter "
        "~67 ms/token); the plan and its estimate are printed before anything runs. "
        "Flags given with --quick override its settings.\nRuns are appended to the results JSONL as they finish "
        "(a rerun skips those done), then per-cell medians and spread go to PATH.csv and PATH.summary.json."
    )
    run = actions.add_parser("run", help="run the benchmark matrix and write results", epilog=epilog,
                             formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    run.add_argument("--quick", action="store_true", help="a small matrix for checking the whole chain")
    run.add_argument("--out", type=Path, metavar="PATH", help=f"results JSONL (default {DEFAULT.out}; --quick: {QUICK.out})")
    run.add_argument("--workloads", metavar="LIST", type=_names(WORKLOADS), help=f"from {','.join(WORKLOADS)}")
    run.add_argument("--prompts", metavar="N", type=int, dest="n_prompts", help="prompts per workload (a seeded subset)")
    run.add_argument("--profiles", metavar="LIST", type=_names(None), help=f"from {','.join(PROFILES)} or RTT_MS/MBPS, e.g. 40/20")
    run.add_argument("--methods", metavar="LIST", type=_names([m.value for m in Method]), help="from " + ",".join(m.value for m in Method))
    run.add_argument("--verify", metavar="LIST", type=_names([m.value for m in VerifyMode]),
                     help="verify modes of sync and picospec (vanilla always runs full)")  # fmt: skip
    run.add_argument("--temperatures", metavar="LIST", type=_floats, help="e.g. 0,1")
    run.add_argument("--repeats", metavar="R", type=int, help="runs of each prompt and cell")
    run.add_argument("--max-tokens", metavar="N", type=int, dest="max_new_tokens", help="new tokens per run")
    run.add_argument("--chunk-len", metavar="N", type=int, help="most draft tokens per chunk")
    run.add_argument("--seed", metavar="S", type=int, help="prompt subsets, and base of the session seeds")
    run.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=None,
                     help="batch-invariant llama.cpp on both sides (default: off, the fast configuration)")  # fmt: skip
    run.add_argument("--policy", choices=POLICIES, default=None,
                     help="picospec: the cost-model controller (default) or fixed chunks of --chunk-len")  # fmt: skip
    run.add_argument("--fallback", action=argparse.BooleanOptionalAction, default=None,
                     help="adaptive: let the cloud decode where speculation does not pay (default: on)")  # fmt: skip
    run.add_argument("--confidence", action=argparse.BooleanOptionalAction, default=None,
                     help="adaptive: cut chunks by the drafter's confidence (default: on)")  # fmt: skip
    run.add_argument("--draft", metavar="MODEL", help="drafter: a default model name (draft-q4_0, draft) or a GGUF path")
    run.add_argument("--target", metavar="MODEL", help="target: 'target' or a GGUF path")
    run.add_argument("--dry-run", action="store_true", help="print the plan and its time estimate only")
    run.set_defaults(func=_run)


def _add_report_action(actions: argparse._SubParsersAction) -> None:
    try:
        report = importlib.import_module("picospec.bench.report")
    except ModuleNotFoundError as exc:
        if exc.name != "picospec.bench.report":
            raise
        return  # the report is written separately; `bench report` appears once it exists
    parser = actions.add_parser("report", help="tables and figures from benchmark results")
    report.add_arguments(parser)
    parser.set_defaults(func=report.main)


def _names(allowed: Collection[str] | None) -> Callable[[str], tuple[str, ...]]:
    """A parser of comma-separated names, each from `allowed` (None: any)."""
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(n.strip() for n in text.split(",") if n.strip())
        bad = [n for n in names if allowed is not None and n not in allowed]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(allowed)}" if bad else "empty list")
        return names

    return parse


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The default (or --quick) config with the flags given on top."""
    fields = ("workloads", "n_prompts", "profiles", "methods", "temperatures", "repeats", "max_new_tokens",
              "chunk_len", "policy", "fallback", "confidence", "seed", "deterministic", "draft", "target", "out")  # fmt: skip
    overrides = {name: getattr(args, name) for name in fields if getattr(args, name) is not None}
    if args.verify is not None:
        overrides["verify"] = {method: args.verify for method in SPECULATIVE_WITH_MODES}
    return dataclasses.replace(QUICK if args.quick else DEFAULT, **overrides)


def _run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    run_benchmark(config, lambda: _load_drafter(config), lambda profile: _local_cloud(config, profile),
                  dry_run=args.dry_run)  # fmt: skip
    return 0


def _load_drafter(config: BenchConfig):
    from picospec.affinity import EDGE_CORE, pin_to_cores
    from picospec.runners.load import load_runner  # imported here: only running needs a model backend

    # The bench process is the edge: the drafter, the gRPC client and the link emulator share core 0.
    pin_to_cores({EDGE_CORE})
    return load_runner(config.draft, n_threads=1, deterministic=config.deterministic)


@contextmanager
def _local_cloud(config: BenchConfig, profile: LinkProfile) -> Iterator[str]:
    from picospec.launch import CloudProcessConfig, LocalCloud
    from picospec.models.registry import model_path

    cloud_config = CloudProcessConfig(model=str(model_path(config.target)), deterministic=config.deterministic)
    with LocalCloud(cloud_config, profile) as cloud:
        yield cloud.address
