"""`picospec bench report` and `picospec simulate` on a committed results file give, byte for byte,
what they gave before bench/ was split into analysis, rendering and commands (tests/golden/, made
by the code before the split), but for changes made on purpose since: module names in the report's
prose; and the runs made with the controller, which were replayed as fixed chunks and are now
left out without their traces (with their first draft no longer taken for the drafter's prompt
pass, which moves the HumanEval edge, vanilla and sync predictions), and the per-token decode
overhead in the costs section."""

from __future__ import annotations

from pathlib import Path

import pytest

from picospec.cli import main

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"
RESULTS = "docs/benchmarks/controller/vanilla.jsonl"  # relative: the report names its source


@pytest.fixture
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def test_the_report_on_committed_results_is_unchanged(at_root, tmp_path):
    assert main(["bench", "report", RESULTS, "--out", str(tmp_path)]) == 0
    assert (tmp_path / "README.md").read_text() == (GOLDEN / "report_controller_vanilla.md").read_text()


def test_simulate_on_committed_results_is_unchanged(at_root, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")  # the width the golden table was rendered at
    assert main(["simulate", RESULTS]) == 0
    assert capsys.readouterr().out == (GOLDEN / "simulate_controller_vanilla.txt").read_text()
