"""`picospec bench run` (the benchmark matrix on the real default pair), `picospec bench report` and
`picospec bench compare`."""

from __future__ import annotations

import argparse
import dataclasses
import functools
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Collection, Iterator

from picospec.bench.compare import compare, render
from picospec.bench.forced import load_traces
from picospec.bench.profiles import PROFILES
from picospec.bench.results import load_runs
from picospec.bench.runner import EDGE_OPTION_FIELDS, BenchConfig, estimate_config_s, run_benchmark
from picospec.bench.workloads import WORKLOADS
from picospec.edge.config import Method
from picospec.errors import InvalidInputError
from picospec.options import HelpFormatter, add_edge_options
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
    """Add `bench` with its actions `run`, `report` and `compare`."""
    bench = subparsers.add_parser("bench", help="the benchmark: run the matrix, report on the results")
    actions = bench.add_subparsers(dest="action", required=True, metavar="ACTION")
    _add_run_action(actions)
    _add_report_action(actions)
    _add_ideal_action(actions)
    compare = actions.add_parser("compare", help="side-by-side speed ratios of every method to ar (median per cell, with a 90%% bootstrap interval after the first token)")
    compare.add_argument("results", type=Path, nargs="+", help="results JSONL files (each compared on its own)")
    compare.add_argument("--baseline", default=Method.AR.value, help="the method every other is paired with")
    compare.set_defaults(func=_compare)


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
                             formatter_class=HelpFormatter)  # fmt: skip
    run.add_argument("--quick", action="store_true", help="a small matrix for checking the whole chain")
    run.add_argument("--out", type=Path, metavar="PATH", help=f"results JSONL (None: {DEFAULT.out}; --quick: {QUICK.out})")
    run.add_argument("--workloads", metavar="LIST", type=_names(WORKLOADS), help=f"from {','.join(WORKLOADS)}")
    run.add_argument("--prompts", metavar="N", type=int, dest="n_prompts", help="prompts per workload (a seeded subset)")
    run.add_argument("--profiles", metavar="LIST", type=_names(None), help=f"from {','.join(PROFILES)} or RTT_MS/MBPS, e.g. 40/20")
    run.add_argument("--methods", metavar="LIST", type=_names([m.value for m in Method]), help="from " + ",".join(m.value for m in Method))
    run.add_argument("--verify", metavar="LIST", type=_names([m.value for m in VerifyMode]),
                     help="verify modes of sync and picospec (vanilla always runs full)")  # fmt: skip
    run.add_argument("--temperatures", metavar="LIST", type=_floats, help="e.g. 0,1")
    run.add_argument("--repeats", metavar="R", type=int, help="runs of each prompt and cell")
    run.add_argument("--max-tokens", metavar="N", type=int, dest="max_new_tokens", help="new tokens per run")
    run.add_argument("--seed", metavar="S", type=int, help="prompt subsets, and base of the session seeds")
    add_edge_options(run, with_defaults=False)  # None: the benchmark's configuration (the same defaults as generate)
    run.add_argument("--dry-run", action="store_true", help="print the plan and its time estimate only")
    run.set_defaults(func=_run)


def _add_report_action(actions: argparse._SubParsersAction) -> None:
    parser = actions.add_parser("report", help="tables and figures from benchmark results")
    parser.add_argument("results", type=Path, help="a results JSONL file written by `picospec bench run`")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="where README.md and the PNGs go (None: RESULTS' folder/<RESULTS' name>-report, so the "
                        "committed docs/benchmarks is written only when named)")  # fmt: skip
    parser.set_defaults(func=_report)


def _add_ideal_action(actions: argparse._SubParsersAction) -> None:
    parser = actions.add_parser(
        "ideal", formatter_class=HelpFormatter,
        help="picospec's runs against the ideal of the adaptive policy (confidence cut-off with fallback)",
        description="Forces the drafter (and, when sampling, the target) along each prompt's ar output to learn "
        "its confidence and acceptance at every position, then compares each picospec run's tokens/s after the "
        "first token with the best cut-off policy's ideal at the costs measured in that cell.",
    )  # fmt: skip
    parser.add_argument("results", type=Path, help="a results JSONL file with ar and picospec runs")
    parser.add_argument("--traces", type=Path, metavar="PATH",
                        help="teacher-forced traces, computed where missing (None: RESULTS with .traces.jsonl)")  # fmt: skip
    parser.set_defaults(func=_ideal)


def _ideal(args: argparse.Namespace) -> int:
    from picospec.bench.forced import collect_traces
    from picospec.bench.ideal import ideal_rows, render

    records = load_runs(args.results)
    settings = records[0].settings
    traces = collect_traces(
        records, args.traces or args.results.with_suffix(".traces.jsonl"),
        lambda: _trace_runner(settings.get("draft", "draft"), settings), lambda: _trace_runner(settings.get("target", "target"), settings),
        _prompt_tokens, _sampling,
    )  # fmt: skip
    print(render(ideal_rows(records, traces)))
    return 0


def _trace_runner(model: str, settings: dict):
    from picospec.runners.load import load_runner

    return load_runner(model, deterministic=bool(settings.get("deterministic", False)))


def _prompt_tokens(runner, prompt: str) -> list[int]:
    """The chat tokens of a "workload:prompt_id" prompt, as the benchmark gave them."""
    workload, _, prompt_id = prompt.partition(":")
    texts = _prompt_texts(workload)
    if prompt_id not in texts:
        raise InvalidInputError(f"no prompt {prompt_id!r} in workload {workload!r}")
    return runner.chat_tokens(texts[prompt_id])


@functools.lru_cache(maxsize=None)
def _prompt_texts(workload: str) -> dict[str, str]:
    """Every prompt of a workload by id, read once per command."""
    from picospec.bench.workloads import load_workload

    return {p.prompt_id: p.text for p in load_workload(workload)}


def _sampling(record):
    from picospec.sampling import SamplingParams

    s = record.settings
    return SamplingParams(record.key.temperature, int(s.get("top_k", 0)), float(s.get("top_p", 1.0)))


def report_folder(results: Path) -> Path:
    """Where `bench report` writes unless told: beside the results, never over the committed docs."""
    return results.with_name(f"{results.stem}-report")


def _report(args: argparse.Namespace) -> int:
    """Write the report; print where it went."""
    from picospec.bench.report import write_report  # imported here: only the report needs matplotlib

    records = load_runs(args.results)
    out = args.out or report_folder(args.results)
    # The traces `bench ideal` keeps beside the results let the simulator replay the controller's runs.
    path = write_report(records, out, str(args.results), load_traces(args.results.with_suffix(".traces.jsonl")))
    print(f"wrote {path} and {len(list(out.glob('*.png')))} figures")
    return 0


def _compare(args: argparse.Namespace) -> int:
    for path in args.results:
        print(f"## {path}\n\n{render(compare(load_runs(path), args.baseline), args.baseline)}\n")
    return 0


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
    fields = ("workloads", "n_prompts", "profiles", "methods", "temperatures", "repeats", "max_new_tokens", "seed",
              "out", *EDGE_OPTION_FIELDS)  # fmt: skip
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
    return load_runner(config.draft, n_threads=config.draft_threads, deterministic=config.deterministic,
                       gpu_layers=config.draft_gpu_layers)  # fmt: skip


@contextmanager
def _local_cloud(config: BenchConfig, profile: LinkProfile) -> Iterator[str]:
    from picospec.launch import CloudProcessConfig, LocalCloud
    from picospec.models.registry import model_path

    cloud_config = CloudProcessConfig(model=str(model_path(config.target)), threads=config.target_threads,
                                      gpu_layers=config.target_gpu_layers, deterministic=config.deterministic)  # fmt: skip
    with LocalCloud(cloud_config, profile) as cloud:
        yield cloud.address
