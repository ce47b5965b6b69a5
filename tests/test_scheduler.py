"""The batch scheduler over toy runners: logits exactly as unbatched, passes within budget, fair."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from picospec.cloud.scheduler import BatchScheduler, SchedulerClosed, StepPolicy, _Request, plan_step
from picospec.errors import InvalidInputError
from picospec.runners.base import ModelRunner, MultiSeqRunner, SeqEval
from picospec.runners.separate import SeparateRunners
from picospec.runners.toy import ToyRunner

V, SEED = 6, 3
TIMEOUT_S = 30


def toy() -> ToyRunner:
    return ToyRunner.create(V, seed=SEED, order=3)


class RecordingRunners(SeparateRunners):
    """Toy sequences that record what each pass held; `gate`, when set up, holds the first pass until opened."""

    def __init__(self, n_seq: int) -> None:
        super().__init__(toy, n_seq, seq_capacity=1000)
        self.passes: list[list[tuple[int, int, int]]] = []  # per pass: (seq, tokens, rows)
        self.first_pass, self.gate = threading.Event(), threading.Event()
        self.gate.set()

    def evaluate(self, evals):
        self.passes.append([(e.seq, len(e.tokens), e.n_rows) for e in evals])
        self.first_pass.set()
        assert self.gate.wait(TIMEOUT_S)
        return super().evaluate(evals)


def test_a_pass_takes_waiting_requests_oldest_first_and_cuts_the_last_to_the_budget():
    assert plan_step([3, 5, 2], StepPolicy(6, None)) == [3, 3]
    assert plan_step([3, 5, 2], StepPolicy(20, None)) == [3, 5, 2]
    assert plan_step([30], StepPolicy(8, None)) == [8]
    assert plan_step([3, 5, 2], StepPolicy(None, 1)) == [3]  # unbatched: one whole request per pass
    assert plan_step([3, 5, 2], StepPolicy(4, 2)) == [3, 1]
    assert plan_step([], StepPolicy(4, None)) == []
    with pytest.raises(InvalidInputError):
        StepPolicy(0, None)


def test_separate_runners_and_the_llama_runner_are_multi_sequence_runners():
    assert isinstance(SeparateRunners(toy, 2, 10), MultiSeqRunner)
    assert isinstance(BatchScheduler(SeparateRunners(toy, 2, 10), StepPolicy(4, None)).view(1), ModelRunner)


@pytest.mark.parametrize("policy", [StepPolicy(3, None), StepPolicy(64, None), StepPolicy(None, 1)], ids=str)
def test_sessions_at_once_get_exactly_the_logits_of_runners_of_their_own(policy):
    """Several threads extend, prefill and roll back their own views at once; each sees exactly what
    a ToyRunner of its own gives, however the passes mixed and cut their work."""
    n_seq, steps = 4, 40
    failures: list[BaseException] = []

    with BatchScheduler(SeparateRunners(toy, n_seq, seq_capacity=1000), policy) as scheduler:

        def session(seq: int) -> None:
            try:
                rng = np.random.default_rng(seq)
                view, alone = scheduler.view(seq), toy()
                for _ in range(steps):
                    op = rng.integers(3)
                    tokens = rng.integers(0, V, size=int(rng.integers(1, 8))).tolist()
                    if op == 0:
                        np.testing.assert_array_equal(view.extend(tokens), alone.extend(tokens))
                    elif op == 1:
                        np.testing.assert_array_equal(view.prefill(tokens), alone.prefill(tokens))
                    else:
                        n = int(rng.integers(0, view.n_tokens + 1))
                        view.rollback(n)
                        alone.rollback(n)
                    assert view.tokens == alone.tokens
            except BaseException as exc:  # noqa: BLE001 (reported by the main thread)
                failures.append(exc)

        threads = [threading.Thread(target=session, args=(seq,)) for seq in range(n_seq)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT_S)
    assert not failures, failures[0]
    stats = scheduler.stats
    assert stats.passes > 0 and stats.tokens > 0
    if policy.max_requests == 1:
        assert stats.most_sequences == 1


def run_in_thread(fn, *args) -> tuple[threading.Thread, dict]:
    result: dict = {}

    def run() -> None:
        try:
            result["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 (checked by the test)
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def test_a_long_prompt_is_evaluated_in_pieces_between_other_sessions_steps():
    runner = RecordingRunners(2)
    runner.gate.clear()
    prompt = list(np.random.default_rng(0).integers(0, V, size=40))
    with BatchScheduler(runner, StepPolicy(8, None)) as scheduler:
        long_thread, long_result = run_in_thread(scheduler.view(0).prefill, prompt)
        assert runner.first_pass.wait(TIMEOUT_S)  # the prompt's first piece is being evaluated
        short_view = scheduler.view(1)
        short_thread, short_result = run_in_thread(short_view.extend, [1, 2])
        while not scheduler._queue:  # the short request waits for the next pass  # noqa: SLF001
            threading.Event().wait(0.001)
        waited = 0.3
        threading.Event().wait(waited)
        runner.gate.set()
        long_thread.join(TIMEOUT_S)
        short_thread.join(TIMEOUT_S)
    assert runner.passes[0] == [(0, 8, 0)]
    # The short request came during the first pass: it goes first in the second, the prompt's rest after it.
    assert runner.passes[1] == [(1, 2, 2), (0, 6, 0)]
    assert all(sum(n for _, n, _ in p) <= 8 for p in runner.passes)
    assert sum(n for p in runner.passes for seq, n, _ in p if seq == 0) == 40
    prompt_rows = [rows for p in runner.passes for seq, _, rows in p if seq == 0]
    assert prompt_rows[-1] == 1 and not any(prompt_rows[:-1])  # only the prompt's last row is computed
    np.testing.assert_array_equal(long_result["value"], toy().prefill(prompt))
    np.testing.assert_array_equal(short_result["value"], toy().extend([1, 2]))
    assert scheduler.stats.longest_wait_s >= waited and scheduler.stats.most_sequences == 2
    # The short request's compute is its one pass, not its wait behind the held first pass.
    assert 0 < short_view.compute_clock() < waited / 3


@pytest.mark.parametrize("policy, shared", [(StepPolicy(8, None), (0, 1, 2)), (StepPolicy(None, 1), (0, 0, 0))], ids=str)
def test_each_view_counts_the_other_sessions_tokens_in_its_passes(policy, shared):
    """What a session tells its edge: a batching pass's other tokens; none when passes are not shared."""
    runner = RecordingRunners(3)
    runner.gate.clear()
    with BatchScheduler(runner, policy) as scheduler:
        views = [scheduler.view(seq) for seq in range(3)]
        threads = [run_in_thread(views[0].extend, [1, 2, 3])[0]]
        assert runner.first_pass.wait(TIMEOUT_S)  # held alone in the first pass
        for view, tokens in ((views[1], [1, 2]), (views[2], [3])):
            threads.append(run_in_thread(view.extend, tokens)[0])
            while len(scheduler._queue) < len(threads) - 1:  # noqa: SLF001
                threading.Event().wait(0.001)
        runner.gate.set()
        for thread in threads:
            thread.join(TIMEOUT_S)
    assert tuple(view.shared_tokens() for view in views) == shared


@pytest.mark.parametrize("gather_s, second_pass", [(0.0, [(1, 2, 2)]), (1.0, [(1, 2, 2), (0, 1, 1)])])
def test_a_pass_waits_for_the_sessions_just_served_to_bring_their_next_work(gather_s, second_pass):
    """A session's next request comes a moment after its pass ends (here 50 ms): with a gather window
    the next pass holds it beside the other session's, without one it goes alone."""
    runner = RecordingRunners(2)
    runner.gate.clear()
    with BatchScheduler(runner, StepPolicy(8, None, gather_s)) as scheduler:
        first, other = scheduler.view(0), scheduler.view(1)

        def two_steps() -> None:
            first.extend([1, 2, 3])
            threading.Event().wait(0.05)
            first.extend([4])

        thread = run_in_thread(two_steps)[0]
        assert runner.first_pass.wait(TIMEOUT_S)
        other_thread = run_in_thread(other.extend, [5, 1])[0]
        while not scheduler._queue:  # noqa: SLF001
            threading.Event().wait(0.001)
        runner.gate.set()
        thread.join(TIMEOUT_S)
        other_thread.join(TIMEOUT_S)
    assert runner.passes[0] == [(0, 3, 3)] and runner.passes[1] == second_pass


def test_a_session_that_missed_the_gather_window_is_not_waited_for_until_it_comes_back():
    scheduler = BatchScheduler(RecordingRunners(2), StepPolicy(8, None, gather_s=0.2))  # not started: _gather alone
    scheduler._queue.append(_Request(1, 0, (1,), 1, time.perf_counter()))  # noqa: SLF001

    def gather(served: set[int]) -> float:
        started = time.perf_counter()
        with scheduler._cond:  # noqa: SLF001
            scheduler._gather(served)  # noqa: SLF001
        return time.perf_counter() - started

    assert gather({0, 1}) >= 0.2 and scheduler._missed == {0}  # noqa: SLF001
    assert gather({0, 1}) < 0.1  # sequence 0 missed: not waited for
    scheduler._queue.append(_Request(0, 0, (1,), 1, time.perf_counter()))  # noqa: SLF001
    assert gather({1}) < 0.1 and scheduler._missed == set()  # noqa: SLF001  (it came back)


def test_a_bad_request_fails_alone_and_a_failed_pass_does_not_stop_the_scheduler():
    class FailingOnce(SeparateRunners):
        failed = False

        def evaluate(self, evals):
            if not self.failed:
                self.failed = True
                raise RuntimeError("llama_decode returned -3")
            return super().evaluate(evals)

    with BatchScheduler(FailingOnce(toy, 2, seq_capacity=10), StepPolicy(8, None)) as scheduler:
        view = scheduler.view(0)
        with pytest.raises(InvalidInputError, match="outside the vocabulary"):
            view.extend([V])
        with pytest.raises(InvalidInputError, match="context overflow"):
            view.extend([0] * 11)
        assert scheduler.stats.passes == 0  # refused before reaching a pass
        with pytest.raises(RuntimeError, match="returned -3"):
            view.extend([1])
        assert view.n_tokens == 0
        np.testing.assert_array_equal(view.extend([1, 2]), toy().extend([1, 2]))
    with pytest.raises(SchedulerClosed):
        view.extend([1])


def test_a_sequence_view_refuses_a_sequence_the_runner_does_not_hold():
    scheduler = BatchScheduler(SeparateRunners(toy, 2, 10), StepPolicy(4, None))
    with pytest.raises(InvalidInputError, match="outside"):
        scheduler.view(2)


def test_separate_runners_check_where_a_sequence_continues():
    runners = SeparateRunners(toy, 1, 10)
    rows = runners.evaluate([SeqEval(0, 0, (1, 2, 3), 2)])
    np.testing.assert_array_equal(rows[0], toy().extend([1, 2, 3])[1:])
    with pytest.raises(Exception, match="holds 3 tokens, not 1"):
        runners.evaluate([SeqEval(0, 1, (1,), 1)])


def test_a_pass_is_sized_by_the_cost_curve_to_evaluate_the_most_tokens_per_second():
    # design.md's V(m) on our CPU, in decode steps: a pass over 8 tokens costs 6, over 16 not 7.
    steps = {1: 0.93, 2: 1.73, 3: 2.29, 4: 2.52, 5: 3.09, 6: 3.42, 7: 3.84, 8: 6.07, 10: 6.2, 12: 6.5, 16: 6.6,
             24: 10.9, 32: 13.4}  # fmt: skip
    known = sorted(steps)
    cost = lambda m: float(np.interp(m, known, [steps[k] for k in known]))  # noqa: E731
    policy = StepPolicy(32, None)
    assert plan_step([4, 1, 4], policy, cost) == [4, 1, 2]  # 7 tokens for 3.8 steps, not 9 for 6.1
    assert plan_step([4, 4, 4, 4], policy, cost) == [4, 4, 4, 4]  # 16 for 6.6
    assert plan_step([1, 40], policy, cost) == [1, 15]  # a prompt's piece fills the pass to 16
    assert plan_step([1], policy, cost) == [1]
    assert plan_step([], policy, cost) == []
    assert plan_step([5, 5], StepPolicy(None, 1), cost) == [5]  # unbatched: one whole request
