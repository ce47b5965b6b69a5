"""How much the drafter slows the target when both run on one machine (the benchmark's emulation).

The target (cloud core) times passes over m = 1, 2, 4, 8, 16 new tokens (--sizes), once alone and
once while the drafter (edge core, its own process, as in the benchmark) runs passes over
--draft-batch tokens without pause (1: drafting; more: following the cloud's decoded tokens that
many at a time; a few hundred: passes of a prompt's size, though with logits at every position,
which a prompt pass does not compute). On two machines the second figure would equal the first; on
one, the two models share the memory bus and the cache.

    .venv/bin/python scripts/contention.py [--draft draft-q4_0] [--target target] [--repeats 15] [--draft-batch 1] [--sizes 1,2,4,8,16]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time

from picospec.affinity import CLOUD_CORE, EDGE_CORE, pin_to_cores
from picospec.runners.load import load_runner

PROMPT = "Write a Python function that merges two sorted lists into one sorted list, with a docstring and tests."


def draft_forever(model: str, batch: int, ready, stop) -> None:
    """The edge: passes of the drafter over `batch` new tokens, one after another, until told to stop."""
    pin_to_cores({EDGE_CORE})
    drafter = load_runner(model)
    tokens = drafter.chat_tokens(PROMPT)
    drafter.prefill(tokens)

    def step() -> None:
        if drafter.n_tokens > 1500:
            drafter.rollback(len(tokens))
        drafter.extend([int(drafter.tokens[-1])] * batch)

    started = time.perf_counter()
    for _ in range(40):  # the target is idle, waiting for `ready`
        step()
    alone_ms = (time.perf_counter() - started) / 40 * 1000
    ready.set()
    steps, started = 0, time.perf_counter()
    while not stop.is_set():
        step()
        steps += 1
    beside_ms = (time.perf_counter() - started) / max(1, steps) * 1000
    print(f"drafter pass over {batch}: {alone_ms:.1f} ms alone, {beside_ms:.1f} ms beside the target's passes")


def pass_times(target, base: int, repeats: int, sizes: list[int]) -> dict[int, float]:
    """Median seconds of a target pass over m new tokens after `base` context tokens, per m in sizes."""
    times: dict[int, list[float]] = {m: [] for m in sizes}
    for _ in range(repeats):
        for m in sizes:
            started = time.perf_counter()
            target.extend([target.tokens[-1]] * m)
            times[m].append(time.perf_counter() - started)
            target.rollback(base)
    return {m: statistics.median(t) for m, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draft", default="draft-q4_0")
    parser.add_argument("--target", default="target")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--draft-batch", type=int, default=1, help="new tokens per drafter pass")
    parser.add_argument("--sizes", default="1,2,4,8,16", help="new tokens of the target's passes, comma-separated")
    args = parser.parse_args()
    sizes = [int(m) for m in args.sizes.split(",")]
    pin_to_cores({CLOUD_CORE})
    target = load_runner(args.target)
    target.prefill(target.chat_tokens(PROMPT))
    base = target.n_tokens
    pass_times(target, base, 2, sizes)  # warm-up
    alone = pass_times(target, base, args.repeats, sizes)
    ready, stop = mp.Event(), mp.Event()
    edge = mp.Process(target=draft_forever, args=(args.draft, args.draft_batch, ready, stop))
    edge.start()
    ready.wait()
    time.sleep(1.0)
    beside = pass_times(target, base, args.repeats, sizes)
    stop.set()
    edge.join()
    print("| new tokens m | target pass alone, ms | beside the drafter, ms | slowdown |")
    print("|---|---|---|---|")
    for m in sizes:
        print(f"| {m} | {alone[m] * 1000:.1f} | {beside[m] * 1000:.1f} | {beside[m] / alone[m]:.2f}x |")


if __name__ == "__main__":
    main()
