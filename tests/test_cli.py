"""The command line: what runs without llama.cpp, and which modules the maths may import."""

from __future__ import annotations

import argparse
import os
import ast
import subprocess
import sys
import time
from pathlib import Path

import pytest

from picospec.app import edge_config
from picospec.bench.cli import config_from_args
from picospec.bench.runner import BenchConfig
from picospec.cli import all_parsers, build_parser
from picospec.edge.config import DrafterConfig, EdgeConfig, Method
from picospec.errors import InvalidInputError
from picospec.launch import CloudProcessConfig
from picospec.models.registry import DEFAULT_DRAFT, DEFAULT_TARGET
from picospec.verify import VerifyConfig

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "benchmarks" / "controller" / "vanilla.jsonl"

# Runs the CLI in a fresh interpreter in which `import llama_cpp` fails, as on a machine without it.
WITHOUT_LLAMA = """
import sys
import time
sys.modules["llama_cpp"] = None
from picospec.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_without_llama(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_LLAMA, *args], capture_output=True, text=True, timeout=120, cwd=REPO)


@pytest.mark.parametrize("args", [["--help"], ["models", "--help"], ["netem", "--help"], ["bench", "--help"]])
def test_help_needs_no_llama_cpp(args: list[str]) -> None:
    result = run_without_llama(*args)
    assert result.returncode == 0, result.stderr
    assert "usage: picospec" in result.stdout


def test_report_and_simulate_need_no_llama_cpp(tmp_path: Path) -> None:
    report = run_without_llama("bench", "report", str(RESULTS), "--out", str(tmp_path))
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "README.md").stat().st_size > 0
    simulated = run_without_llama("simulate", str(RESULTS))
    assert simulated.returncode == 0, simulated.stderr
    assert "vanilla" in simulated.stdout


def test_a_missing_llama_cpp_is_a_clear_error_where_it_is_needed() -> None:
    result = run_without_llama("generate", "--max-tokens", "1")
    assert result.returncode == 2
    assert "llama-cpp-python 0.3.36 is needed" in result.stderr and "Traceback" not in result.stderr


def test_the_maths_imports_no_network_code() -> None:
    maths = ["picospec.sampling", "picospec.verify", "picospec.decoding", "picospec.costmodel", "picospec.edge.controller"]
    code = f"import sys\nfor m in {maths!r}: __import__(m)\nprint(sorted(m for m in sys.modules if m.startswith(('picospec.wire', 'grpc', 'llama_cpp'))))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# -------------------------------------------------------------------------------------------------
# Defaults and help


def _add_argument_calls():
    for path in sorted((REPO / "picospec").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
                yield path.relative_to(REPO), node


def test_no_option_default_is_a_literal() -> None:
    """A flag's default is read from the dataclass that uses it, never written again as a literal."""
    literal = [
        f"{path}:{node.lineno}"
        for path, node in _add_argument_calls()
        for keyword in node.keywords
        if keyword.arg == "default" and isinstance(keyword.value, ast.Constant) and keyword.value.value not in (None, True, False)
    ]
    assert literal == []


def test_every_option_has_help() -> None:
    missing = [
        f"{' '.join(command.prog.split()[1:]) or 'picospec'} {action.option_strings or action.dest}"
        for command in all_parsers(build_parser())
        for action in command._actions
        if action.help is None and not isinstance(action, argparse._SubParsersAction)
    ]
    assert missing == []


def test_edge_defaults_come_from_the_configs() -> None:
    args = build_parser().parse_args(["generate"])
    config = edge_config(args, Method(args.method))
    assert config == EdgeConfig(verify=VerifyConfig(mode=EdgeConfig().method.default_mode))
    assert (args.draft, args.target, args.deterministic) == (DEFAULT_DRAFT, DEFAULT_TARGET, False)
    assert (args.draft_threads, args.draft_gpu_layers) == (DrafterConfig.threads, DrafterConfig.gpu_layers)
    assert (args.target_threads, args.target_gpu_layers) == (CloudProcessConfig.threads, CloudProcessConfig.gpu_layers)
    bench = config_from_args(build_parser().parse_args(["bench", "run"]))
    assert bench == BenchConfig()
    assert (bench.chunk_len, bench.top_k, bench.top_p, bench.topk_entries, bench.candidates) == (
        config.chunk_len, config.params.top_k, config.params.top_p, config.verify.topk, config.verify.n_candidates
    )
    assert (bench.draft, bench.target, bench.policy, bench.fallback) == (args.draft, args.target, args.policy, args.fallback)


def test_a_lookahead_shorter_than_the_chunk_is_refused_not_clamped() -> None:
    args = build_parser().parse_args(["generate", "--chunk-len", "6", "--lookahead", "3"])
    with pytest.raises(InvalidInputError, match=r"lookahead \(3\) must be at least the chunk length \(6\)"):
        edge_config(args, Method.PICOSPEC)
    assert edge_config(build_parser().parse_args(["generate", "--chunk-len", "6"]), Method.PICOSPEC).max_lookahead == 12


def test_help_shows_defaults() -> None:
    text = build_parser()._subparsers._group_actions[0].choices["generate"].format_help()
    assert "(default: 128)" in text and "(default: draft-q4_0)" in text


# -------------------------------------------------------------------------------------------------
# Failures that must not hang


def test_a_local_cloud_that_never_serves_fails_generate_within_its_timeout(tmp_path: Path) -> None:
    # sitecustomize runs at every interpreter start: this one makes the cloud process hang before it serves.
    (tmp_path / "sitecustomize.py").write_text("import sys, time\nif 'cloud' in sys.argv:\n    time.sleep(3600)\n")
    target = tmp_path / "target.gguf"
    target.write_bytes(b"GGUF")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    command = [sys.executable, "-m", "picospec.cli", "generate", "--target", str(target), "--startup-timeout", "3"]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO, env=env)
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    assert "the cloud process was not serving after 3 s" in result.stderr
    assert 3 <= elapsed < 20


def test_bench_report_writes_beside_its_results_unless_told(tmp_path: Path) -> None:
    results = tmp_path / "runs.jsonl"
    results.write_bytes(RESULTS.read_bytes())
    written = run_without_llama("bench", "report", str(results))
    assert written.returncode == 0, written.stderr
    assert (tmp_path / "runs-report" / "README.md").is_file()
