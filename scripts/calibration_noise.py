"""How much the cloud's cost calibration moves from one calibration to the next on this machine.

Loads the target on the cloud's core and runs the cloud's own calibration (`measure_cost_curve`)
--repeats times back to back, printing each pass size's time in decode steps. With --twice every
size is timed twice and the faster kept (what the cloud did before session 29), to compare the
noise a second pass removes with the drift between calibrations.

    .venv/bin/python scripts/calibration_noise.py [--target target] [--repeats 3] [--twice]
"""

from __future__ import annotations

import argparse
import time

from picospec.affinity import CLOUD_CORE, pin_to_cores
from picospec.cloud.calibrate import CALIBRATION_SIZES, CONTEXT_TOKENS, measure_cost_curve
from picospec.runners.load import load_runner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="target", help="a default model name or a GGUF path")
    parser.add_argument("--repeats", type=int, default=3, help="calibrations, back to back")
    parser.add_argument("--twice", action="store_true", help="time every size twice, keep the faster")
    args = parser.parse_args()
    pin_to_cores({CLOUD_CORE})
    runner = load_runner(args.target)
    sizes = CALIBRATION_SIZES * (2 if args.twice else 1)  # measure_cost_curve keeps each size's fastest
    for repeat in range(args.repeats):
        started = time.perf_counter()
        curve = measure_cost_curve(runner, sizes, CONTEXT_TOKENS)
        steps = " ".join(f"{m}:{curve.verify_s[m - 1] / curve.decode_s:.2f}" for m in CALIBRATION_SIZES)
        print(f"calibration {repeat}: {time.perf_counter() - started:.1f} s, decode step {curve.decode_s * 1000:.0f} ms; V(m) in steps {steps}", flush=True)


if __name__ == "__main__":
    main()
