"""The benchmark matrix: every method x verify mode x network profile x prompt x temperature x
repeat, run for real between this process (the edge) and a cloud, one RunRecord per run.

The drafter is loaded once for the whole benchmark; each network profile gets one cloud (which
serves all of that profile's runs, one session each) and one unrecorded warm-up generation, so
model loading and first-touch page faults never land in a measurement. Every finished run is
appended to the results file at once, so an interrupted benchmark resumes where it stopped.
"""

from __future__ import annotations

import itertools
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from picospec.bench.aggregate import aggregate, write_aggregates
from picospec.bench.assumed import planning_profile
from picospec.bench.bound import Acceptance, Policy, ideal_wall_s
from picospec.bench.costs import CostProfile
from picospec.bench.profiles import NamedProfile, parse_profile
from picospec.bench.results import MODELESS_VERIFY, NO_NETWORK, CellKey, RunRecord, append_records, load_records
from picospec.bench.workloads import WORKLOADS, Prompt, select_prompts
from picospec.edge.client import generate, warm_up
from picospec.edge.config import DrafterConfig, EdgeConfig, Method
from picospec.edge.controller import DEFAULT_POLICY, ControllerConfig
from picospec.edge.lookup import LookupConfig
from picospec.cloud.config import CloudConfig
from picospec.launch import CloudProcessConfig
from picospec.models.registry import DEFAULT_DRAFT, DEFAULT_TARGET
from picospec.errors import InvalidInputError
from picospec.runners.base import ModelRunner
from picospec.sampling import SamplingParams
from picospec.transport.netem import LinkProfile
from picospec.verify import VerifyConfig, VerifyMode


# The BenchConfig fields that picospec.options.add_edge_options sets (each flag's dest is the field's name).
EDGE_OPTION_FIELDS = ("top_k", "top_p", "topk_entries", "candidates", "chunk_len", "lookahead", "policy",
                      "fallback", "confidence", "lookup", "deterministic", "draft", "target", "draft_threads",
                      "draft_gpu_layers", "target_threads", "target_gpu_layers")  # fmt: skip

# Opens a cloud behind the given link and yields the address edges connect to.
CloudFactory = Callable[[LinkProfile], AbstractContextManager[str]]


@dataclass(frozen=True)
class BenchConfig:
    """What the benchmark runs. The session seed of a run is seed + repeat."""

    workloads: tuple[str, ...] = ("humaneval", "mtbench")
    n_prompts: int = 2  # per workload
    seed: int = 0  # picks the prompt subsets; base of the session seeds
    methods: tuple[Method, ...] = tuple(Method)
    # Verify modes per speculative method; vanilla always runs full, ar and edge need none.
    verify: dict[Method, tuple[VerifyMode, ...]] = field(
        default_factory=lambda: {
            Method.SYNC: (VerifyMode.EXACT,),
            Method.PICOSPEC: (VerifyMode.EXACT, VerifyMode.TOPK, VerifyMode.GUMBEL),
        }
    )
    profiles: tuple[str, ...] = ("wan", "cellular", "constrained")  # names or RTT_MS/MBPS
    temperatures: tuple[float, ...] = (0.0,)
    repeats: int = 2  # medians and spread per cell; more to narrow them (each adds ~25 min)
    max_new_tokens: int = 48
    # The edge settings `generate` takes, with its defaults (picospec.options.add_edge_options):
    top_k: int = SamplingParams.top_k
    top_p: float = SamplingParams.top_p
    topk_entries: int = VerifyConfig.topk
    candidates: int = VerifyConfig.n_candidates
    chunk_len: int = EdgeConfig.chunk_len  # the fixed policy's (and sync's and vanilla's) chunk
    lookahead: int | None = None  # the fixed policy's; None: EdgeConfig's (twice chunk_len)
    # picospec's policy: "adaptive" (the cost-model controller) or "fixed"; the controller's two
    # switches, for the ablation.
    policy: str = DEFAULT_POLICY
    fallback: bool = ControllerConfig.fallback
    confidence: bool = ControllerConfig.confidence
    lookup: bool = EdgeConfig().lookup is not None  # prompt lookup drafts where the context repeats itself
    # Batch-invariant llama.cpp on both sides (--deterministic): at temperature 0 every method then
    # yields the target's greedy tokens exactly. Off by default: the fast configuration users run.
    deterministic: bool = CloudProcessConfig.deterministic
    draft: str = DEFAULT_DRAFT  # a default model name or a GGUF path
    target: str = DEFAULT_TARGET
    draft_threads: int = DrafterConfig.threads
    draft_gpu_layers: int = DrafterConfig.gpu_layers
    target_threads: int = CloudProcessConfig.threads
    target_gpu_layers: int = CloudProcessConfig.gpu_layers
    out: Path = Path("results/bench.jsonl")

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", tuple(Method(m) for m in self.methods))
        verify = {Method(m): tuple(VerifyMode(v) for v in modes) for m, modes in self.verify.items()}
        object.__setattr__(self, "verify", verify)
        object.__setattr__(self, "out", Path(self.out))
        unknown = set(self.workloads) - set(WORKLOADS)
        if unknown:
            raise InvalidInputError(f"unknown workloads {sorted(unknown)}; choose from {', '.join(WORKLOADS)}")
        ControllerConfig.for_policy(self.policy)  # refuses bad edge settings before anything loads
        SamplingParams(top_k=self.top_k, top_p=self.top_p)
        VerifyConfig(topk=self.topk_entries, n_candidates=self.candidates)
        EdgeConfig(chunk_len=self.chunk_len, max_lookahead=self.lookahead)
        DrafterConfig(self.draft_threads, self.draft_gpu_layers)
        CloudConfig(threads=self.target_threads, gpu_layers=self.target_gpu_layers)
        if min(self.n_prompts, self.repeats, self.max_new_tokens) < 1:
            raise InvalidInputError("prompts, repeats and max tokens must be >= 1")
        if not (self.workloads and self.methods and self.temperatures):
            raise InvalidInputError("the benchmark needs at least one workload, method and temperature")
        for temperature in self.temperatures:
            SamplingParams(temperature=temperature)  # refuses negative and non-finite ones
        for method in self.methods:
            if method in (Method.SYNC, Method.PICOSPEC) and not self.verify.get(method):
                raise InvalidInputError(f"no verify mode given for {method.value}")
        self.named_profiles()  # reject bad profiles before anything loads

    def named_profiles(self) -> list[NamedProfile]:
        """The network profiles, parsed."""
        return [parse_profile(p) for p in self.profiles]

    def settings(self) -> dict:
        """What a record's CellKey leaves out but its numbers depend on (see RunRecord.settings)."""
        return {"max_new_tokens": self.max_new_tokens, "chunk_len": self.chunk_len,
                "lookahead": self.chunking().max_lookahead,
                "policy": self.policy, "fallback": self.fallback, "confidence": self.confidence,
                "lookup": self.lookup, "deterministic": self.deterministic, "seed": self.seed, "top_k": self.top_k, "top_p": self.top_p,
                "topk": self.topk_entries, "n_candidates": self.candidates, "draft": self.draft,
                "target": self.target, "draft_threads": self.draft_threads, "draft_gpu_layers": self.draft_gpu_layers,
                "target_threads": self.target_threads, "target_gpu_layers": self.target_gpu_layers}  # fmt: skip

    def chunking(self) -> Policy:
        """The fixed chunking of the runs, the lookahead as EdgeConfig resolves it."""
        edge = EdgeConfig(chunk_len=self.chunk_len, max_lookahead=self.lookahead)
        return Policy(edge.chunk_len, edge.max_lookahead)

    def variants(self) -> list[tuple[Method, VerifyMode]]:
        """Each (method, verify mode) the matrix runs, in the order of `methods`."""
        result = []
        for method in self.methods:
            if method is Method.VANILLA:
                result.append((method, VerifyMode.FULL))
            elif method.speculative:
                result.extend((method, mode) for mode in self.verify[method])
            else:
                result.append((method, MODELESS_VERIFY))
        return result


@dataclass(frozen=True)
class PlannedRun:
    """One generation the benchmark will make."""

    key: CellKey
    prompt: Prompt


def plan_runs(config: BenchConfig, prompts: Sequence[Prompt]) -> list[PlannedRun]:
    """The whole matrix, grouped by profile (one cloud each); edge-only runs first, once per
    prompt, temperature and repeat, under the profile "none". Within a profile the methods are
    interleaved prompt by prompt, so slow drift of the machine spreads over all of them."""
    variants = config.variants()
    edge_variants = [v for v in variants if v[0] is Method.EDGE]
    cloud_variants = [v for v in variants if v[0] is not Method.EDGE]
    groups = [(NO_NETWORK, 0.0, 0.0, edge_variants)]
    groups += [(p.name, p.link.rtt_ms, p.link.bandwidth_mbps, cloud_variants) for p in config.named_profiles()]
    runs = []
    for profile, rtt, bandwidth, group_variants in groups:
        for prompt, temperature, repeat, (method, mode) in itertools.product(
            prompts, config.temperatures, range(config.repeats), group_variants
        ):
            key = CellKey(prompt.workload, prompt.prompt_id, method, mode, profile,
                          rtt, bandwidth, float(temperature), repeat)  # fmt: skip
            runs.append(PlannedRun(key, prompt))
    return runs


def pending_runs(plan: Iterable[PlannedRun], done: Iterable[CellKey]) -> list[PlannedRun]:
    """The planned runs whose key is not among the finished ones."""
    finished = set(done)
    return [run for run in plan if run.key not in finished]


def finished_keys(records: Iterable[RunRecord], settings: dict, path: Path) -> set[CellKey]:
    """Keys already in a results file, which must hold only runs made with these settings."""
    keys = set()
    for record in records:
        if record.settings != settings:
            raise InvalidInputError(
                f"{path} holds runs made with other settings ({record.settings}, now {settings}); "
                "choose another --out to keep both"
            )
        keys.add(record.key)
    return keys


# -- planning estimate ----------------------------------------------------------------------------

# The ideal bound (bound.py) on the benchmark machine's assumed costs (assumed.py's BENCH_MACHINE),
# with the acceptance of the benchmark those costs come from (docs/benchmarks.md, temperature 0:
# 1.00 on HumanEval, 0.91 on MT-bench).
PLANNING_ACCEPTANCE = Acceptance(alpha=0.95)
CLOUD_START_S = 25.0  # cloud process, model load and the warm-up generation


# Qwen2.5's tokenizer on these workloads: about 0.3 tokens per character, plus ~20 for the chat template.
def approx_prompt_tokens(text: str) -> int:
    """Prompt tokens of a chat prompt, near enough for planning."""
    return 20 + round(0.3 * len(text))


MEDIAN_PROMPT_CHARS = {"humaneval": 451, "mtbench": 185}  # for estimates before a workload loads


def estimate_run_s(run: PlannedRun, config: BenchConfig, costs: CostProfile) -> float:
    """Seconds one run should take on `costs` (planning_profile of the run's prompt)."""
    key = run.key
    link = costs.link if key.method is Method.EDGE else LinkProfile(key.rtt_ms, key.bandwidth_mbps)
    return ideal_wall_s(key.method, key.verify, costs.with_link(link), PLANNING_ACCEPTANCE, config.chunking(),
                        config.max_new_tokens, key.prompt)  # fmt: skip


def estimate_total_s(runs: Sequence[PlannedRun], config: BenchConfig) -> float:
    """Seconds for the runs plus a start-up and warm-up per cloud they need."""
    costs = planning_profile({run.key.prompt: approx_prompt_tokens(run.prompt.text) for run in runs})
    clouds = {run.key.profile for run in runs} - {NO_NETWORK}
    return sum(estimate_run_s(run, config, costs) for run in runs) + len(clouds) * CLOUD_START_S


def estimate_config_s(config: BenchConfig) -> float:
    """Seconds the whole matrix of `config` should take, before any workload loads: its prompts
    are taken to have their workload's median length."""
    placeholders = [Prompt(w, str(i), " " * MEDIAN_PROMPT_CHARS[w])
                    for w in config.workloads for i in range(config.n_prompts)]  # fmt: skip
    return estimate_total_s(plan_runs(config, placeholders), config)


def print_plan(console: Console, plan: Sequence[PlannedRun], todo: Sequence[PlannedRun], config: BenchConfig) -> None:
    """A table of runs and estimated minutes per profile, and the total."""
    table = Table(title=f"benchmark plan: {len(todo)} of {len(plan)} runs to do")
    for column in ("profile", "runs", "done", "estimate min"):
        table.add_column(column, justify="right")
    for profile, group in itertools.groupby(plan, key=lambda run: run.key.profile):
        group = list(group)
        group_todo = [run for run in todo if run.key.profile == profile]
        table.add_row(profile, str(len(group)), str(len(group) - len(group_todo)),
                      f"{estimate_total_s(group_todo, config) / 60:.1f}")  # fmt: skip
    console.print(table)
    console.print(f"estimated time: {estimate_total_s(todo, config) / 60:.1f} min (results: {config.out})")


# -- running --------------------------------------------------------------------------------------


def edge_config(config: BenchConfig, key: CellKey, max_new_tokens: int | None = None) -> EdgeConfig:
    """The EdgeConfig of the run `key`."""
    return EdgeConfig(
        method=key.method,
        params=SamplingParams(key.temperature, config.top_k, config.top_p),
        verify=VerifyConfig(mode=key.verify, topk=config.topk_entries, n_candidates=config.candidates,
                            seed=config.seed + key.repeat),  # fmt: skip
        max_new_tokens=max_new_tokens or config.max_new_tokens,
        chunk_len=config.chunk_len,
        max_lookahead=config.lookahead,
        controller=ControllerConfig.for_policy(config.policy, config.fallback, config.confidence),
        lookup=LookupConfig() if config.lookup else None,
    )


def run_benchmark(
    config: BenchConfig,
    load_drafter: Callable[[], ModelRunner],
    open_cloud: CloudFactory,
    console: Console | None = None,
    dry_run: bool = False,
) -> list[dict]:
    """Run every pending run of the matrix, appending records to config.out; then write the
    per-cell aggregate of the whole file next to it (.csv and .summary.json) and return it."""
    console = console or Console()
    plan = plan_runs(config, select_prompts(config.workloads, config.n_prompts, config.seed))
    settings = config.settings()
    todo = pending_runs(plan, finished_keys(load_records(config.out), settings, config.out))
    print_plan(console, plan, todo, config)
    if dry_run:
        return []
    if todo:
        _execute(config, todo, load_drafter(), open_cloud, console)
    rows = aggregate(load_records(config.out))
    write_aggregates(rows, *aggregate_paths(config.out))
    return rows


def aggregate_paths(out: Path) -> tuple[Path, Path]:
    """Where the per-cell CSV and JSON of a results file go."""
    return out.with_suffix(".csv"), out.with_suffix(".summary.json")


def _execute(config: BenchConfig, todo: list[PlannedRun], drafter: ModelRunner, open_cloud: CloudFactory,
             console: Console) -> None:  # fmt: skip
    """Run `todo` (grouped by profile), appending each record as it finishes."""
    settings = config.settings()
    prompt_tokens = {prompt: drafter.chat_tokens(prompt.text) for prompt in {run.prompt for run in todo}}
    profiles = {p.name: p.link for p in config.named_profiles()}
    with _progress(console) as progress:
        task = progress.add_task("", total=len(todo))
        for profile, group in itertools.groupby(todo, key=lambda run: run.key.profile):
            group = list(group)
            progress.update(task, description=f"{profile}: starting the cloud")
            with nullcontext(None) if profile == NO_NETWORK else open_cloud(profiles[profile]) as address:
                _warm_up(config, drafter, address, group[0], prompt_tokens)
                for run in group:
                    progress.update(task, description=_describe(run.key))
                    report = generate(address, drafter, prompt_tokens[run.prompt], edge_config(config, run.key))
                    append_records(config.out, [RunRecord.from_report(run.key, report, settings)])
                    progress.console.print(f"{_describe(run.key)}: {report.new_tokens} tokens in "
                                           f"{report.wall_s:.1f} s, {report.tokens_per_s:.2f} tokens/s")  # fmt: skip
                    progress.advance(task)


def _warm_up(config: BenchConfig, drafter: ModelRunner, address: str | None, first: PlannedRun, prompt_tokens: dict) -> None:
    """edge/client.py's warm_up on the group's first prompt, greedy."""
    key = CellKey(first.key.workload, first.key.prompt_id, Method.SYNC, MODELESS_VERIFY,
                  first.key.profile, first.key.rtt_ms, first.key.bandwidth_mbps, 0.0, 0)  # fmt: skip
    warm_up(address, drafter, prompt_tokens[first.prompt], edge_config(config, key))


def _describe(key: CellKey) -> str:
    return (f"{key.profile} {key.workload}:{key.prompt_id} {key.method.value}/{key.verify.value} "
            f"T={key.temperature:g} #{key.repeat}")  # fmt: skip


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("left"), TimeRemainingColumn(), console=console, refresh_per_second=2,
    )  # fmt: skip
