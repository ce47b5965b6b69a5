"""Acceptance traces: which draft tokens the simulator (simulator.py) sees accepted.

Whether the draft at output position p is accepted depends, for greedy decoding with
batch-invariant numerics, only on p (the context before p is the target's own output). Traces
come from the recorded rounds: accepted_lengths and chunk_lengths say which positions were
agreements and where a disagreement fell; positions never drafted are filled by a Bernoulli with
the measured alpha. At temperature 0 the runs of a prompt share one trace (their majority); above
it every run samples its own text, so a run's trace is its own, and a cell that was not measured
is predicted from every speculative run of the prompt (a majority would vote the rejections,
scattered over different positions, away).
"""

from __future__ import annotations

import random
import zlib
from collections import defaultdict
from typing import Iterable, Sequence

from picospec.bench.bound import Acceptance
from picospec.bench.costs import SPECULATIVE, STOP_AND_WAIT
from picospec.bench.results import RunRecord
from picospec.verify import VerifyMode


class AgreementTrace:
    """Whether the draft token at output position p is accepted: known positions first, the rest
    Bernoulli(alpha), drawn once per position so that asking again gives the same answer."""

    def __init__(self, known: dict[int, bool], alpha: float, seed: int = 0) -> None:
        self._known = dict(known)
        self.alpha = alpha
        self._rng = random.Random(seed)

    def __call__(self, position: int) -> bool:
        if position not in self._known:
            self._known[position] = self._rng.random() < self.alpha
        return self._known[position]

    def accepted(self, start: int, n: int) -> int:
        """Leading agreements of a chunk of n drafts at positions start .. start + n - 1."""
        return next((i for i in range(n) if not self(start + i)), n)


def observed_agreement(record: RunRecord) -> dict[int, bool]:
    """Positions whose drafts a run saw accepted (True) or rejected (False); none for a run made
    with the controller, whose rounds fall between tokens the cloud decoded (where is not recorded)."""
    if record.controlled:
        return {}
    bonus = record.key.method in STOP_AND_WAIT
    known, position = {}, 0
    for accepted, length in zip(record.accepted_lengths, record.chunk_lengths):
        known.update((position + i, True) for i in range(accepted))
        if accepted < length:
            known[position + accepted] = False
        position += accepted + (accepted < length or bonus)
    return known


def pooled_agreement(records: Iterable[RunRecord]) -> dict[int, bool]:
    """Majority of the runs' observations per position (ties count as agreement)."""
    votes: dict[int, int] = defaultdict(int)
    for record in records:
        for position, agrees in observed_agreement(record).items():
            votes[position] += 1 if agrees else -1
    return {position: vote >= 0 for position, vote in votes.items()}


class TraceSource:
    """Acceptance traces of one (workload, temperature) group: a run's own observations, then (at
    temperature 0) the group's majority for its prompt, then Bernoulli(alpha) with the group's
    measured alpha."""

    def __init__(self, group: Sequence[RunRecord], alpha: float | None, seed: int) -> None:
        self.override, self.seed = alpha, seed
        self.alpha = Acceptance.from_records(group).alpha if alpha is None else alpha
        self.greedy = all(record.key.temperature == 0 for record in group)
        self.by_prompt: dict[str, list[RunRecord]] = defaultdict(list)
        for record in group:
            self.by_prompt[record.key.prompt].append(record)

    def trace(self, record: RunRecord) -> AgreementTrace:
        seed = zlib.crc32(f"{self.seed}:{record.key.prompt}:{record.key.repeat}".encode())  # hash() is salted
        if self.override is not None:
            return AgreementTrace({}, self.override, seed)
        known = pooled_agreement(self.by_prompt[record.key.prompt]) if self.greedy else {}
        if record.key.method in SPECULATIVE:
            known.update(observed_agreement(record))
        return AgreementTrace(known, self.alpha, seed)

    def representatives(self, mode: VerifyMode | None = None) -> list[RunRecord]:
        """The runs standing in for a cell that was not measured: at temperature 0 one per prompt
        (its longest, whose trace is the prompt's); above it every speculative run in verify
        `mode` (each trace is one sampled text, and modes accept differently), else in any mode,
        else the prompt's longest run."""
        chosen = []
        for _, runs in sorted(self.by_prompt.items()):
            sampled = [] if self.greedy else [r for r in runs if r.key.method in SPECULATIVE]
            same_mode = [r for r in sampled if r.key.verify == mode]
            chosen += same_mode or sampled or [max(runs, key=lambda r: r.summary["new_tokens"])]
        return chosen
