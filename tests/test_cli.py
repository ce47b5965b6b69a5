"""The command line: what runs without llama.cpp, and which modules the maths may import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "benchmarks" / "controller" / "vanilla.jsonl"

# Runs the CLI in a fresh interpreter in which `import llama_cpp` fails, as on a machine without it.
WITHOUT_LLAMA = """
import sys
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
