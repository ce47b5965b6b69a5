"""What a target pass over m tokens costs, in decode steps, up to 64 tokens (session 38): the target
alone, pinned to core 1, after a 64-token context, medians of 5 passes (9 for the decode step).

    .venv/bin/python docs/benchmarks/controller/session38/pass_costs.py
"""

import os
import statistics
import time

from picospec.runners.load import load_runner

CONTEXT = 64
SIZES = (2, 4, 8, 12, 16, 17, 20, 24, 28, 32, 33, 40, 48, 64)


def main() -> None:
    os.sched_setaffinity(0, {1})
    runner = load_runner("target")
    n_vocab = runner.n_vocab
    runner.prefill([(7 * i + 3) % n_vocab for i in range(CONTEXT)])

    def pass_s(m: int, repeats: int = 5) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            runner.extend([(11 * i + 5) % n_vocab for i in range(m)])
            times.append(time.perf_counter() - started)
            runner.rollback(CONTEXT)
        return statistics.median(times)

    pass_s(32, 1)  # warm-up: llama.cpp allocates its compute buffers
    decode_s = pass_s(1, 9)
    print(f"decode {decode_s * 1000:.1f} ms")
    for m in SIZES:
        steps = pass_s(m) / decode_s
        print(f"V({m}) = {steps:.2f} steps, per token {steps / m:.3f}")


if __name__ == "__main__":
    main()
