"""`picospec bench report` on a small synthetic results file made by the simulator."""

from __future__ import annotations

import re

import pytest
from PIL import Image

from picospec.bench.analysis import token_identity
from picospec.bench.results import append_records, load_records
from picospec.cli import main
from picospec.edge.config import Method
from picospec.transport.netem import LinkProfile
from test_bench_model import costs, simulated_records

VARIANTS = (
    ("ar", "exact"),
    ("vanilla", "full"),
    ("sync", "exact"),
    ("picospec", "exact"),
    ("picospec", "topk"),
    ("picospec", "gumbel"),
)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Two workloads, two networks, every method; one topk run with dropped mass, one run that went astray."""
    profile = costs(cloud_prefill=0.3, edge_prefill=0.1, overhead=0.002)
    records = simulated_records(
        profile,
        links=(LinkProfile(20.0, 100.0), LinkProfile(60.0, 10.0)),
        n=24,
        prompts=("0",),
        workloads=("humaneval", "mtbench"),
        variants=VARIANTS,
    )
    topk = next(r for r in records if r.key.verify == "topk")
    topk.topk_tail_mass = [0.01, 0.03]
    astray = next(r for r in records if r.key.method == "sync" and r.key.workload == "mtbench")
    astray.token_ids[5] += 1000
    path = tmp_path_factory.mktemp("results") / "bench.jsonl"
    append_records(path, records)
    return path


@pytest.fixture(scope="module")
def report(results, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    assert main(["bench", "report", str(results), "--out", str(out)]) == 0
    return out


def test_the_report_mentions_every_method_and_section(report):
    text = (report / "README.md").read_text()
    for method in Method:
        assert re.search(rf"\| {method.value}(/\w+)? \|", text), method
    for section in (
        "Table 1",
        "Without the pipeline",
        "Without separate rejection sampling",
        "Bytes per output token",
        "against RTT and bandwidth",
        "Timelines",
        "ideal bound",
        "simulator against measurement",
        "orin-a100-llama",
        "Token identity",
        "tail mass",
        "Costs measured",
    ):
        assert section in text, section


def test_every_figure_exists_and_is_a_real_png(report):
    text = (report / "README.md").read_text()
    linked = set(re.findall(r"\]\(([^)]+\.png)\)", text))
    assert linked == {p.name for p in report.glob("*.png")} and len(linked) >= 8
    for name in linked:
        path = report / name
        assert path.stat().st_size > 0
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 100
            image.verify()


def test_the_report_flags_runs_whose_tokens_differ_and_reports_topk_tail_mass(report):
    text = (report / "README.md").read_text()
    assert "**1 runs differ**" in text and re.search(
        r"\| mtbench:0 \| sync/exact over 20/100 \| ar over 20/100 \| 5 \|", text
    )
    assert "2.00e-02" in text  # the topk run's mean tail mass


def test_the_token_identity_check_names_the_run_that_differs_and_where(results):
    check = token_identity(load_records(results))
    assert check.prompts == 2  # one per workload
    assert [(m.workload, m.run.key.method, m.reference.key.method, m.first_difference) for m in check.mismatches] == [
        ("mtbench", Method.SYNC, Method.AR, 5)
    ]


def test_the_simulator_section_matches_simulated_runs(report):
    text = (report / "README.md").read_text()
    for kind in ("predicted", "replayed"):
        cells = re.search(rf"- {kind}: (\d+) of (\d+) cells within 10%", text)
        assert cells and cells.group(1) == cells.group(2) != "0", kind
    assert "Per network profile" in text and re.search(r"\| 60/10 \| 0 \| 40\.0 \|", text)  # t_d of edge-only runs


def test_an_empty_results_file_is_an_error(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["bench", "report", str(empty), "--out", str(tmp_path / "out")]) == 2
    assert "holds no runs" in capsys.readouterr().err
