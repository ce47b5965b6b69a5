"""`picospec generate` and `picospec demo`: one generation between a local edge and a cloud."""

from __future__ import annotations

import argparse
import codecs
import json
import sys
from contextlib import nullcontext

from rich.console import Console
from rich.table import Table

from picospec.edge.client import CloudError, generate, warm_up
from picospec.edge.config import CloudLoss, DrafterConfig, EdgeConfig, Method, Recovery
from picospec.edge.controller import ControllerConfig
from picospec.edge.lookup import LookupConfig
from picospec.edge.pipeline import EDGE_ONLY
from picospec.edge.report import EdgeReport
from picospec.affinity import EDGE_CORE, pin_to_cores
from picospec.launch import CloudProcessConfig, LocalCloud
from picospec.models.registry import model_path
from picospec.runners.base import ModelRunner
from picospec.runners.load import load_runner
from picospec.sampling import SamplingParams
from picospec.options import CLOUD_PROCESS, EDGE, SAMPLING, VERIFY, add_edge_options
from picospec.security import ChannelSecurity, add_edge_arguments
from picospec.transport.netem import WAN, LinkProfile
from picospec.verify import VerifyConfig, VerifyMode
from picospec.wire.liveness import add_liveness_arguments, liveness_from_args

DEMO_PROMPT = "Write a Python function that returns the n-th Fibonacci number iteratively."
SOURCE_STYLES = {"draft": "green", "cloud": "bold red", "edge": "bold yellow", EDGE_ONLY: "dim italic"}


def add_generation_args(parser: argparse.ArgumentParser) -> None:
    """Flags shared by generate and demo: the prompt, then everything `serve` shares too."""
    add_prompt_args(parser)
    add_edge_args(parser)


def add_prompt_args(parser: argparse.ArgumentParser) -> None:
    """What one generation asks for (`serve` takes these from each request instead)."""
    parser.add_argument("--prompt", default=DEMO_PROMPT, help="the prompt text")
    parser.add_argument("--chat", action=argparse.BooleanOptionalAction, default=True, help="wrap the prompt in the chat template")
    add_session_args(parser)


def add_session_args(parser: argparse.ArgumentParser) -> None:
    """The length and seed of each generation, whatever its prompt (generate, demo, loadtest; serve takes
    them from each request)."""
    parser.add_argument("--max-tokens", type=int, default=EDGE.max_new_tokens, help="most new tokens")
    parser.add_argument("--seed", type=int, default=VERIFY.seed, help="the session seed (sampling, gumbel noise)")


def add_edge_args(parser: argparse.ArgumentParser) -> None:
    """Sampling, verification, chunking, the models and the cloud: what generate, demo and serve share."""
    parser.add_argument("--temperature", type=float, default=SAMPLING.temperature, help="0 is greedy")
    parser.add_argument("--verify", choices=[m.value for m in VerifyMode],
                        help="verification mode (None: full for vanilla, else exact)")  # fmt: skip
    add_edge_options(parser)
    parser.add_argument("--device", default=CLOUD_PROCESS.device,
                        help="where a Hugging Face checkpoint directory runs: cpu, cuda, cuda:1, ... (GGUF: cpu only)")  # fmt: skip
    parser.add_argument("--cloud", metavar="HOST:PORT", help="an existing cloud (None: start one locally)")
    add_edge_arguments(parser)
    parser.add_argument(
        "--on-cloud-loss", choices=[c.value for c in CloudLoss], default=EDGE.recovery.on_loss.value,
        help="when the cloud is lost mid-generation: fail; resume (reconnect with backoff, continue from the verified "
        "tokens, exactly); local (resume, and once the retries run out finish with the drafter alone, marking those "
        "tokens edge-only)",
    )  # fmt: skip
    parser.add_argument("--retries", type=int, default=EDGE.recovery.retries,
                        help="reconnection attempts in a row that commit nothing")  # fmt: skip
    add_liveness_arguments(parser)
    parser.add_argument("--rtt-ms", type=float, default=WAN.rtt_ms, help="emulated round-trip time (local cloud)")
    parser.add_argument("--bandwidth-mbps", type=float, default=WAN.bandwidth_mbps, help="emulated bandwidth (local cloud)")
    parser.add_argument("--startup-timeout", type=float, default=CLOUD_PROCESS.startup_timeout_s, metavar="S",
                        help="local cloud: fail if it is not serving after this many seconds")  # fmt: skip


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `generate` and `demo`."""
    gen = subparsers.add_parser("generate", help="one generation between the edge and a cloud")
    gen.add_argument("--method", choices=[m.value for m in Method], default=EDGE.method.value, help="decoding method")
    add_generation_args(gen)
    gen.add_argument("--json", action="store_true", help="print one JSON object instead of streaming text")
    gen.set_defaults(func=_run_generate)
    demo = subparsers.add_parser("demo", help="PicoSpec vs cloud-only decoding on the default pair, streamed")
    add_generation_args(demo)
    demo.set_defaults(func=_run_demo)


def edge_config(args: argparse.Namespace, method: Method) -> EdgeConfig:
    """The EdgeConfig the flags describe."""
    mode = VerifyMode(args.verify) if args.verify else method.default_mode
    return EdgeConfig(
        method=method,
        params=SamplingParams(args.temperature, args.top_k, args.top_p),
        verify=VerifyConfig(mode=mode, topk=args.topk_entries, n_candidates=args.candidates, seed=args.seed),
        max_new_tokens=args.max_tokens,
        chunk_len=args.chunk_len,
        max_lookahead=args.lookahead,
        controller=ControllerConfig.for_policy(args.policy, args.fallback, args.confidence),
        lookup=LookupConfig() if args.lookup else None,
        recovery=Recovery(on_loss=args.on_cloud_loss, retries=args.retries, liveness=liveness_from_args(args)),
    )


def cloud_context(args: argparse.Namespace, **process: object):
    """A LocalCloud behind the emulated link, or nothing when --cloud names one; `process` sets
    CloudProcessConfig fields the flags do not (batching, max_sessions, ...)."""
    if args.cloud:
        return nullcontext(None)
    profile = LinkProfile(rtt_ms=args.rtt_ms, bandwidth_mbps=args.bandwidth_mbps)
    config = CloudProcessConfig(model=str(model_path(args.target)), threads=args.target_threads,
                                gpu_layers=args.target_gpu_layers, deterministic=args.deterministic,
                                startup_timeout_s=args.startup_timeout, device=args.device, **process)  # fmt: skip
    return LocalCloud(config, profile)


def channel_security(args: argparse.Namespace) -> ChannelSecurity:
    """How to reach --cloud (TLS, token); the local cloud listens on loopback and needs neither."""
    return ChannelSecurity.from_args(args) if args.cloud else ChannelSecurity()


def prompt_tokens(args: argparse.Namespace, runner: ModelRunner) -> list[int]:
    """The flags' prompt, tokenized (in the chat template unless --no-chat)."""
    return runner.chat_tokens(args.prompt) if args.chat else runner.tokenize(args.prompt)


def run_one(args, runner: ModelRunner, method: Method, address: str | None, on_tokens=None) -> EdgeReport:
    """One generation of `method` with the flags' settings."""
    prompt = prompt_tokens(args, runner)
    report = generate(address, runner, prompt, edge_config(args, method), on_tokens, security=channel_security(args))
    report.text = runner.detokenize(report.token_ids)
    return report


def load_drafter(args: argparse.Namespace) -> ModelRunner:
    """The drafter the flags name (a GGUF file or a checkpoint directory), on the edge's core."""
    if not args.cloud:  # the local cloud has core 1; a remote one leaves this machine's cores free
        pin_to_cores({EDGE_CORE})
    drafter = DrafterConfig(args.draft_threads, args.draft_gpu_layers)
    return load_runner(args.draft, n_threads=drafter.threads, deterministic=args.deterministic, device=args.device,
                       gpu_layers=drafter.gpu_layers)  # fmt: skip


def _run_generate(args: argparse.Namespace) -> int:
    console = Console(highlight=False)
    with cloud_context(args) as local:
        runner = load_drafter(args)
        address = args.cloud or local.address
        printer = None if args.json else TokenPrinter(console, runner)
        try:
            report = run_one(args, runner, Method(args.method), address, printer)
        except CloudError as exc:
            if args.json and exc.report is not None:  # the verified tokens are not lost with the cloud
                exc.report.text = runner.detokenize(exc.report.token_ids)
                print(json.dumps({**report_json(exc.report), "error": str(exc)}))
            raise
    if args.json:
        print(json.dumps(report_json(report)))
    else:
        console.print()
        print_summary(console, [report])
    return 0


def report_json(report: EdgeReport) -> dict:
    """The object `generate --json` prints."""
    return {"method": report.method, "verify": report.verify, "text": report.text, "token_ids": report.token_ids,
            **report.summary()}  # fmt: skip


def _run_demo(args: argparse.Namespace) -> int:
    console = Console(highlight=False)
    console.print(f"[bold]PicoSpec demo[/] — link {args.rtt_ms:g} ms RTT, {args.bandwidth_mbps:g} Mbps. "
                  "[green]green[/]: accepted drafts, [bold red]red[/]: cloud corrections/bonus, "
                  "[bold yellow]yellow[/]: corrections sampled on the edge\n")  # fmt: skip
    reports = []
    with cloud_context(args) as local:
        runner = load_drafter(args)
        address = args.cloud or local.address
        # Unrecorded: the cloud's first session is slower, and picospec's run comes first.
        warm_up(address, runner, prompt_tokens(args, runner), edge_config(args, Method.SYNC), channel_security(args))
        for method in (Method.PICOSPEC, Method.AR):
            console.rule(f"{method.value}")
            reports.append(run_one(args, runner, method, address, TokenPrinter(console, runner)))
            console.print()
    print_summary(console, reports)
    return 0


class TokenPrinter:
    """Streams verified tokens to the terminal, coloured by where they came from."""

    def __init__(self, console: Console, runner) -> None:
        self.console, self.runner = console, runner
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def __call__(self, tokens: list[int], source: str) -> None:
        text = self._decoder.decode(b"".join(self.runner.token_bytes(t, special=False) for t in tokens))
        self.console.print(text, style=SOURCE_STYLES[source], end="", soft_wrap=True, markup=False)
        sys.stdout.flush()


def print_summary(console: Console, reports: list[EdgeReport]) -> None:
    """A table of the measurements, one column per run, with speedups over the ar run if there is one."""
    baseline = next((r.tokens_per_s for r in reports if r.method == "ar"), None)
    table = Table(title="summary")
    table.add_column("")
    for r in reports:
        table.add_column(f"{r.method} ({r.verify})" if r.method != "ar" else "ar", justify="right")
    rows = {
        "tokens": lambda r: str(r.new_tokens),
        "tokens/s": lambda r: f"{r.tokens_per_s:.2f}",
        "speedup over ar": lambda r: f"{r.tokens_per_s / baseline:.2f}x" if baseline else "-",
        "time to first token s": lambda r: f"{r.ttft_s or 0:.2f}",
        "mean accepted length": lambda r: f"{r.mean_accepted:.2f}" if r.rounds else "-",
        "bytes up / down": lambda r: f"{r.bytes_up} / {r.bytes_down}",
        "cloud passes": lambda r: str(r.cloud_passes),
        "tokens decoded by the cloud": lambda r: str(r.decoded) if r.method != "ar" else "all",
        "drafts thrown away": lambda r: str(r.discarded),
        "finish reason": lambda r: r.finish_reason,
        "sessions resumed after losing the cloud": lambda r: str(r.resumes),
        "edge-only tokens (drafter alone, not the target's)": lambda r: str(r.edge_only),
    }
    for name, cell in rows.items():
        table.add_row(name, *(cell(r) for r in reports))
    console.print(table)
