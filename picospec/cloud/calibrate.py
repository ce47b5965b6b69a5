"""The cloud measures what a target pass costs, once when it starts: the curve the edges' controllers
plan with (refined afterwards from real passes, see picospec/costmodel.py's CostTracker)."""

from __future__ import annotations

import time

import numpy as np

from picospec.costmodel import CostCurve
from picospec.runners.base import ModelRunner
from picospec.sampling import SamplingParams, logits_to_probs, sample

# Pass sizes measured: every one up to a chunk of 16 and the correction before it (the controller's
# longest pass). None is interpolated: on the AVX2 CPU a pass over 9-15 tokens costs about what
# one over 16 does, or more (V(14) 13.0 decode steps, V(16) 11.2, docs/benchmarks.md), which
# interpolating between 8, 12 and 16 hid, and chunks of 13-15 took 0.095 s a token against 0.074.
CALIBRATION_SIZES = tuple(range(1, 18))
# A batching cloud's passes hold several sessions' tokens: it measures these too, up to its step budget.
SHARED_PASS_SIZES = (24, 32, 48, 64)
CONTEXT_TOKENS = 32  # a short context, so attention costs what it costs early in a generation


def calibration_plan(longest_pass: int, max_context: int) -> tuple[tuple[int, ...], int]:
    """The pass sizes to measure and the context to measure them after: CALIBRATION_SIZES, and the
    shared ones up to longest_pass, all that fit in a sequence of max_context tokens."""
    context_tokens = min(CONTEXT_TOKENS, max_context // 2)
    sizes = CALIBRATION_SIZES + tuple(m for m in SHARED_PASS_SIZES if m <= longest_pass)
    return tuple(m for m in sizes if context_tokens + m <= max_context) or (1,), context_tokens


def measure_cost_curve(
    runner: ModelRunner, sizes: tuple[int, ...] = CALIBRATION_SIZES, context_tokens: int = CONTEXT_TOKENS
) -> CostCurve:
    """Time one pass of each size (after a warm-up) over a synthetic context; leave the runner empty."""
    n_vocab = runner.n_vocab
    context = [(7 * i + 3) % n_vocab for i in range(max(1, context_tokens))]
    runner.rollback(0)
    runner.prefill(context)
    measured: dict[int, float] = {}
    # Once each, after one warm-up pass of the longest (it allocates llama.cpp's compute buffers).
    # The faster of two read the curve 5-10% low on the AVX2 VM (the planner wants a pass's mean
    # cost), calibrations a minute apart differ more than that (docs/benchmarks.md, session 29),
    # and the cloud refines the curve from every real pass (CostTracker).
    for m in (max(sizes), *sizes):
        started = time.perf_counter()
        runner.extend([(11 * i + 5) % n_vocab for i in range(m)])
        measured[m] = min(measured.get(m, float("inf")), time.perf_counter() - started)
        runner.rollback(len(context))
    decode_s = float("inf")
    for token in context[:3]:  # the fastest of three steps: one alone is noisy
        started = time.perf_counter()
        row = runner.extend([token])[0]
        sample(logits_to_probs(row, SamplingParams(temperature=1.0)), np.random.default_rng(0))
        decode_s = min(decode_s, time.perf_counter() - started)
        runner.rollback(len(context))
    runner.rollback(0)
    known = sorted(measured)
    verify_s = np.interp(np.arange(1, max(known) + 1), known, [measured[m] for m in known])  # (M,)
    floor = 1e-6  # a toy model's pass can be below the clock's resolution
    return CostCurve(tuple(max(float(v), floor) for v in verify_s), max(decode_s, floor))
