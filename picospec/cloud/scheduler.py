"""Batched evaluation across sessions: one scheduler thread owns a MultiSeqRunner and, pass after
pass, evaluates the pending work of every session together.

Each session's TargetVerifier runs unchanged over a SequenceView, a ModelRunner on one sequence of
the shared runner. The view's extend and prefill block their session's thread until the scheduler
has evaluated them, so every verify, decode step and prompt piece waiting when a pass starts
shares that pass. No maths lives here: the verifier decides what to evaluate and what the rows mean.

Per pass the scheduler takes waiting requests oldest first up to a token budget, cutting the last
one it takes; a request not finished goes back to the end of the queue, so a long prompt is
evaluated piece by piece between the other sessions' steps instead of stalling them, and no
request waits longer than one pass per request ahead of it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from picospec.errors import InvalidInputError, PicoSpecError
from picospec.runners.base import MultiSeqRunner, SeqEval, TokenList, VocabInfo, check_rollback, check_token_ids

logger = logging.getLogger("picospec.cloud")


@dataclass(frozen=True)
class StepPolicy:
    """What one pass may hold. token_budget None: requests are never cut; max_requests 1: one
    request per pass, i.e. no batching (every session's work in a pass of its own, FIFO).

    gather_s: how long a pass may wait for the sessions of the pass before it to bring their next
    work. Their threads wake when that pass ends and need a moment (the verdict, the next chunk
    from the inbox, or from the edge a round trip away) to queue it; a pass started at once would
    hold only the other sessions' work, and passes would alternate between halves of the sessions,
    each half as big. A session that did not come back within it is not waited for again until it
    does (its generation ended, or its edge is busy), so the wait costs little where it buys nothing.
    """

    token_budget: int | None
    max_requests: int | None
    gather_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("token_budget", "max_requests"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InvalidInputError(f"{name} must be >= 1 or None, got {value}")
        if not 0 <= self.gather_s <= 10:
            raise InvalidInputError(f"gather_s must be in [0, 10] seconds, got {self.gather_s}")


def plan_step(remaining: Sequence[int], policy: StepPolicy, pass_cost: Callable[[int], float] | None = None) -> list[int]:
    """How many tokens of each waiting request (oldest first, by tokens left) the next pass takes:
    whole requests in order while the budget lasts, the last one cut to what is left of it.

    Given pass_cost (seconds of a pass over m tokens), the pass is cut, in the same order, to the
    size that evaluates the most tokens per second: on a CPU a pass over 9 tokens can cost 6 decode
    steps where one over 7 costs 4 and one over 16 costs 7 (docs/design.md), so the next pass may
    hold fewer tokens than wait, or as many as the budget allows.
    """
    budget = policy.token_budget if policy.token_budget is not None else sum(remaining)
    limit = policy.max_requests if policy.max_requests is not None else len(remaining)
    if pass_cost is not None:
        budget = max(range(1, min(budget, sum(remaining[:limit])) + 1), key=lambda m: (m / pass_cost(m), m), default=0)
    taken: list[int] = []
    for left in remaining[:limit]:
        if budget == 0:
            break
        taken.append(min(left, budget))
        budget -= taken[-1]
    return taken


@dataclass
class SchedulerStats:
    """What the scheduler did since it started."""

    passes: int = 0
    tokens: int = 0  # evaluated, all sequences together
    pieces: int = 0  # (sequence, tokens) parts of passes
    busy_s: float = 0.0  # time inside the runner
    longest_wait_s: float = 0.0  # the longest a request (or its next piece) waited for a pass
    most_sequences: int = 0  # the most sequences one pass held
    started_at: float = field(default_factory=time.perf_counter)

    @property
    def busy_fraction(self) -> float:
        """Share of the time since start spent evaluating."""
        return self.busy_s / max(time.perf_counter() - self.started_at, 1e-9)

    def summary(self) -> str:
        """One log line."""
        per_pass = self.tokens / self.passes if self.passes else 0.0
        return (
            f"{self.passes} passes, {self.tokens} tokens ({per_pass:.1f} per pass, up to {self.most_sequences} "
            f"sequences), busy {self.busy_fraction:.0%}, longest wait {self.longest_wait_s:.3f} s"
        )


@dataclass
class _Request:
    """A view's extend or prefill, evaluated in one or more pieces."""

    seq: int
    start: int
    tokens: tuple[int, ...]
    n_rows: int  # rows wanted for the last n_rows tokens
    waiting_since: float
    future: Future = field(default_factory=Future)
    done: int = 0  # tokens evaluated so far
    rows: list[np.ndarray] = field(default_factory=list)
    compute_s: float = 0.0  # the time of the passes its pieces were in
    shared_tokens: int = 0  # other sequences' tokens in those passes

    def piece(self, n: int) -> SeqEval:
        """The next n tokens, with the rows among them that the request wants."""
        end = self.done + n
        first_row = len(self.tokens) - self.n_rows
        n_rows = max(0, end - max(self.done, first_row))
        return SeqEval(self.seq, self.start + self.done, self.tokens[self.done : end], n_rows)


class SchedulerClosed(PicoSpecError):
    """The scheduler stopped before evaluating a request (the cloud is shutting down)."""


class BatchScheduler:
    """Owns a MultiSeqRunner; evaluates the requests of its SequenceViews in shared passes on its own
    thread. Use as a context manager, or start() and close()."""

    def __init__(self, runner: MultiSeqRunner, policy: StepPolicy) -> None:
        self.runner, self.policy = runner, policy
        # Seconds of a pass over m tokens, once measured (plan_step sizes passes by it); None: FIFO.
        self.pass_cost: Callable[[int], float] | None = None
        self.stats = SchedulerStats()
        self._cond = threading.Condition()
        self._queue: deque[_Request] = deque()
        self._rollbacks: list[tuple[int, int]] = []  # applied before the next pass, in order
        self._missed: set[int] = set()  # sequences that did not come back within the last gather window
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="picospec-scheduler", daemon=True)

    def start(self) -> "BatchScheduler":
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop after the pass in flight; requests still waiting fail with SchedulerClosed."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def __enter__(self) -> "BatchScheduler":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def view(self, seq: int) -> "SequenceView":
        """A ModelRunner over sequence `seq`; the caller gives each session its own sequence."""
        return SequenceView(self, seq)

    def evaluate(self, seq: int, start: int, tokens: Sequence[int], n_rows: int) -> tuple[np.ndarray, float, int]:
        """Queue tokens of sequence `seq` and block until passes have evaluated them; their rows
        (n_rows, V), the seconds of those passes (waits left out) and the other sequences' tokens in them."""
        request = _Request(seq, start, tuple(tokens), n_rows, time.perf_counter())
        with self._cond:
            if self._closed:
                raise SchedulerClosed("the cloud's scheduler has stopped")
            self._queue.append(request)
            self._cond.notify()
        return request.future.result(), request.compute_s, request.shared_tokens

    def rollback(self, seq: int, n: int) -> None:
        """Truncate sequence `seq` to n tokens before its next evaluation (on the scheduler's thread,
        which alone touches the runner)."""
        with self._cond:
            self._rollbacks.append((seq, n))

    def _run(self) -> None:
        served: set[int] = set()  # sequences whose work the last pass finished
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                self._gather(served)
                if self._closed:
                    break
                rollbacks, self._rollbacks = self._rollbacks, []
                plan = plan_step([len(r.tokens) - r.done for r in self._queue], self.policy, self.pass_cost)
                batch = [(self._queue.popleft(), n) for n in plan]
            served = self._pass(rollbacks, batch)
        with self._cond:
            for request in self._queue:
                request.future.set_exception(SchedulerClosed("the cloud's scheduler stopped"))
            self._queue.clear()

    def _gather(self, served: set[int]) -> None:
        """Wait (lock held) up to policy.gather_s for the sequences in `served` to queue their next
        work, except those that missed the last window; note which miss this one."""
        awaited = served - self._missed
        deadline = time.perf_counter() + self.policy.gather_s
        while not self._closed and not awaited <= {r.seq for r in self._queue}:
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            self._cond.wait(left)
        queued = {r.seq for r in self._queue}
        self._missed = (self._missed - queued) | (served - queued)

    def _pass(self, rollbacks: list[tuple[int, int]], batch: list[tuple[_Request, int]]) -> set[int]:
        """One evaluation of the planned pieces; finished requests get their rows, the rest requeue.
        The sequences whose requests finished."""
        started = time.perf_counter()
        for request, _ in batch:
            self.stats.longest_wait_s = max(self.stats.longest_wait_s, started - request.waiting_since)
        try:
            for seq, n in rollbacks:
                self.runner.rollback_seq(seq, n)
            results = self.runner.evaluate([request.piece(n) for request, n in batch])
        except Exception as exc:  # noqa: BLE001 (every request of the failed pass learns why)
            logger.exception("a batched pass failed")
            for request, _ in batch:
                request.future.set_exception(exc)
            return set()
        finished = time.perf_counter()
        self._record(batch, finished - started)
        requeue, finished_seqs = [], set()
        pass_tokens = sum(n for _, n in batch)
        for (request, n), rows in zip(batch, results):
            request.done += n
            request.compute_s += finished - started
            request.shared_tokens += pass_tokens - n
            request.rows.append(rows)
            if request.done < len(request.tokens):
                request.waiting_since = finished
                requeue.append(request)
            else:
                request.future.set_result(np.concatenate(request.rows) if len(request.rows) > 1 else rows)
                finished_seqs.add(request.seq)
        if requeue:
            with self._cond:
                self._queue.extend(requeue)
        return finished_seqs

    def _record(self, batch: list[tuple[_Request, int]], seconds: float) -> None:
        stats = self.stats
        stats.passes += 1
        stats.pieces += len(batch)
        stats.tokens += sum(n for _, n in batch)
        stats.busy_s += seconds
        stats.most_sequences = max(stats.most_sequences, len(batch))


class SequenceView(TokenList):
    """A ModelRunner over one sequence of a scheduler's MultiSeqRunner: what a session's TargetVerifier
    runs on. Its evaluations block until the scheduler has run them in a shared pass."""

    def __init__(self, scheduler: BatchScheduler, seq: int) -> None:
        if not 0 <= seq < scheduler.runner.n_seq:
            raise InvalidInputError(f"sequence {seq} is outside [0, {scheduler.runner.n_seq})")
        self.scheduler, self.seq = scheduler, seq
        self._runner = scheduler.runner
        self._tokens: list[int] = []
        self._compute_s = 0.0
        self._shared_tokens = 0

    @property
    def n_vocab(self) -> int:
        return self._runner.n_vocab

    def vocab_info(self) -> VocabInfo:
        return self._runner.vocab_info()

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        return self._runner.tokenize(text, add_special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self._runner.detokenize(tokens)

    def chat_tokens(self, user_message: str) -> list[int]:
        return self._runner.chat_tokens(user_message)

    def chat_messages_tokens(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        return self._runner.chat_messages_tokens(messages)

    def extend(self, tokens: Sequence[int]) -> np.ndarray:
        """Evaluate `tokens` after the sequence; their logits rows, shape (len(tokens), n_vocab)."""
        ids = self._checked_new(tokens)
        return self._evaluate(ids, len(ids))

    def prefill(self, tokens: Sequence[int]) -> np.ndarray:
        """Evaluate a prompt after the sequence, in pieces between other sessions' work; its last row (V,)."""
        ids = self._checked_new(tokens)
        if not ids:
            raise InvalidInputError("prefill needs at least one token")
        return self._evaluate(ids, 1)[0]

    def compute_clock(self) -> float:
        """Seconds of the passes that evaluated this sequence's work so far: a clock that runs only
        while the model computes for it (shared passes count whole, waits for a pass not at all)."""
        return self._compute_s

    def shared_tokens(self) -> int:
        """Other sequences' tokens in the passes that evaluated this sequence's work so far: what the
        session tells its edge, which plans chunks by the cost of the passes it shares."""
        return self._shared_tokens

    def rollback(self, n: int) -> None:
        """Truncate the sequence (and, before its next evaluation, its KV range) to n tokens."""
        check_rollback(n, self.n_tokens)
        self.scheduler.rollback(self.seq, n)
        del self._tokens[n:]

    def _checked_new(self, tokens: Sequence[int]) -> list[int]:
        """Checked here, on the session's thread, so a bad request fails alone and never reaches a shared pass."""
        ids = check_token_ids(tokens, self.n_vocab).tolist()
        if self.n_tokens + len(ids) > self._runner.seq_capacity:
            raise InvalidInputError(
                f"context overflow: {self.n_tokens} tokens held + {len(ids)} new > {self._runner.seq_capacity}"
            )
        return ids

    def _evaluate(self, ids: list[int], n_rows: int) -> np.ndarray:
        if not ids:
            return np.empty((0, self.n_vocab), dtype=np.float32)
        rows, seconds, shared = self.scheduler.evaluate(self.seq, self.n_tokens, ids, n_rows)
        self._tokens.extend(ids)
        self._compute_s += seconds
        self._shared_tokens += shared
        return rows
