"""Teacher-forced traces: how the drafter would have fared at every position of the target's own
output (an ar run's tokens), for the ideal bound of the adaptive policy (bound.best_cut_policy).

position_trace is the maths (pure); force runs the models; traces are kept in a JSONL file beside
the results, one per (prompt, temperature), so the models run once per file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from picospec.bench.bound import PositionTrace
from picospec.bench.results import RunRecord
from picospec.edge.config import Method
from picospec.errors import InvalidInputError
from picospec.runners.base import ModelRunner
from picospec.sampling import SamplingParams, logits_to_probs
from picospec.verify import VerifyMode
from picospec.verify.gumbel import agreement_chance


def position_trace(
    draft_logits: np.ndarray, output: Sequence[int], params: SamplingParams, target_logits: np.ndarray | None = None
) -> PositionTrace:
    """The drafter's confidence and the chance its draft passes at each position of `output`.

    draft_logits, target_logits: (n, V), row i the logits for output[i]. Confidence is the drafter's
    probability of its argmax at temperature 1 (what the controller cuts on). Acceptance: under
    greedy decoding whether the argmax is output[i]; otherwise sum_x min(p, q), the chance that
    rejection sampling accepts a draft drawn from q (target_logits needed), and in gumbel mode the
    chance that the shared noise makes both pick one token (verify.gumbel.agreement_chance).
    """
    draft_logits = np.asarray(draft_logits, dtype=np.float64)  # (n, V)
    if draft_logits.shape[0] != len(output):
        raise InvalidInputError(f"{draft_logits.shape[0]} drafter rows for {len(output)} output tokens")
    shifted = np.exp(draft_logits - draft_logits.max(axis=1, keepdims=True))  # (n, V)
    confidence = 1.0 / shifted.sum(axis=1)  # the argmax's softmax probability, (n,)
    if params.greedy:
        acceptance = (draft_logits.argmax(axis=1) == np.asarray(output)).astype(np.float64)
    else:
        if target_logits is None or np.shape(target_logits) != draft_logits.shape:
            raise InvalidInputError("sampled decoding needs the target's logits at every position")
        draft_probs = logits_to_probs(draft_logits, params)  # (n, V)
        target_probs = logits_to_probs(target_logits, params)  # (n, V)
        acceptance = np.minimum(draft_probs, target_probs).sum(axis=1)
        return PositionTrace(confidence, acceptance, agreement_chance(draft_probs, target_probs))
    return PositionTrace(confidence, acceptance)


def output_logits(runner: ModelRunner, prompt: Sequence[int], output: Sequence[int]) -> np.ndarray:
    """Rows (n, V) of `runner`'s logits for each token of `output` after `prompt`, teacher-forced."""
    runner.rollback(0)
    if len(prompt) > 1:
        runner.prefill(list(prompt[:-1]))
    rows = runner.extend([prompt[-1], *output[:-1]])
    runner.rollback(0)
    return rows


TRACE_ARRAYS = tuple(f.name for f in fields(PositionTrace))  # the arrays a kept trace holds


# Whose output a trace is forced along: ar's (exact, topk and full sample the target as ar does,
# so their sessions write the same kind of text), or, when sampling, gumbel mode's own (its shared
# noise writes another text from the same seed: after 0-9 tokens on HumanEval at T = 1).
TEXTS = ("ar", "gumbel")


@dataclass(frozen=True)
class ForcedTrace:
    """One teacher-forced trace and what it was forced on: a prompt ("workload:prompt_id") at a
    temperature, along the output of one run whose text is `text` (TEXTS)."""

    prompt: str
    temperature: float
    trace: PositionTrace
    text: str = TEXTS[0]

    @property
    def key(self) -> "TraceKey":
        return (self.prompt, self.temperature, self.text)

    def to_json(self) -> str:
        data = {"prompt": self.prompt, "temperature": self.temperature, "text": self.text}
        for name in TRACE_ARRAYS:
            values = getattr(self.trace, name)
            if values is not None:
                data[name] = values.round(6).tolist()
        return json.dumps(data)

    @staticmethod
    def from_json(line: str) -> "ForcedTrace":
        data = json.loads(line)
        arrays = {name: np.array(data[name], dtype=np.float64) for name in TRACE_ARRAYS if name in data}
        return ForcedTrace(data["prompt"], float(data["temperature"]), PositionTrace(**arrays), data.get("text", TEXTS[0]))


TraceKey = tuple[str, float, str]  # (prompt, temperature, text)


def load_traces(path: Path) -> dict[TraceKey, PositionTrace]:
    """The traces kept in `path` (none if it does not exist)."""
    if not path.exists():
        return {}
    with open(path) as f:
        traces = [ForcedTrace.from_json(line) for line in f if line.strip()]
    return {t.key: t.trace for t in traces}


def trace_of(forced: Mapping[TraceKey, PositionTrace], record: RunRecord, mode: VerifyMode | None = None) -> PositionTrace | None:
    """The trace a run met, or would meet verified in `mode` (default: its own): its prompt's at its
    temperature along the text that mode writes (ar's where that one's was not forced), as that
    mode meets it (None if there is none)."""
    mode = mode or record.key.verify
    prompt, temperature = record.key.prompt, record.key.temperature
    trace = forced.get((prompt, temperature, _text(mode, temperature))) or forced.get((prompt, temperature, TEXTS[0]))
    return None if trace is None else trace.for_mode(mode)


def _text(mode: VerifyMode, temperature: float) -> str:
    """Whose text a session in `mode` writes (greedy: everyone's is ar's)."""
    return TEXTS[1] if mode is VerifyMode.GUMBEL and temperature > 0 else TEXTS[0]


def forced_outputs(records: Iterable[RunRecord]) -> dict[TraceKey, RunRecord]:
    """The run whose output each (prompt, temperature, text) is forced along: the first in the file
    of ar's, and of picospec's in gumbel mode when sampling."""
    outputs: dict[TraceKey, RunRecord] = {}
    for r in records:
        gumbel_text = r.key.method is Method.PICOSPEC and _text(r.key.verify, r.key.temperature) == TEXTS[1]
        if r.token_ids and (r.key.method is Method.AR or gumbel_text):
            outputs.setdefault((r.key.prompt, r.key.temperature, TEXTS[1] if gumbel_text else TEXTS[0]), r)
    return outputs


def collect_traces(
    records: Sequence[RunRecord],
    path: Path,
    drafter: Callable[[], ModelRunner],
    target: Callable[[], ModelRunner],
    prompt_tokens: Callable[[ModelRunner, str], list[int]],
    params: Callable[[RunRecord], SamplingParams],
) -> dict[TraceKey, PositionTrace]:
    """The traces of every (prompt, temperature, text) forced_outputs finds a run for: those in
    `path`, and the missing ones computed (models loaded only if one is missing) and appended to
    it. A sampled trace kept without gumbel mode's acceptance (before it had its own) is computed
    again."""
    traces = load_traces(path)
    missing = {
        key: r for key, r in forced_outputs(records).items()
        if key not in traces or (not params(r).greedy and traces[key].gumbel_acceptance is None)
    }  # fmt: skip
    if not missing:
        return traces
    draft_runner = drafter()
    target_runner = target() if any(not params(r).greedy for r in missing.values()) else None
    with open(path, "a") as f:
        for (prompt, temperature, text), record in missing.items():
            tokens = prompt_tokens(draft_runner, prompt)
            sampling = params(record)
            target_rows = None if sampling.greedy else output_logits(target_runner, tokens, record.token_ids)
            trace = position_trace(output_logits(draft_runner, tokens, record.token_ids), record.token_ids, sampling, target_rows)
            forced = ForcedTrace(prompt, temperature, trace, text)
            f.write(forced.to_json() + "\n")
            f.flush()
            traces[forced.key] = trace
    return traces
