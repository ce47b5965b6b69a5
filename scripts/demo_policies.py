"""The demo's prompt (or --prompt) under several policies against one local cloud, each run beside
an `ar` run of the same prompt, as ratios of tokens/s (time to first token included).

    .venv/bin/python scripts/demo_policies.py [--repeats 2] [any `picospec demo` flag]
"""

from __future__ import annotations

import argparse
import copy
import sys

from picospec import app, cli
from picospec.edge.config import Method

POLICIES = {
    "adaptive": {},
    "no fallback": {"fallback": False},
    "fixed 4": {"policy": "fixed", "chunk_len": 4},
    "fixed 8": {"policy": "fixed", "chunk_len": 8},
}


def main(argv: list[str]) -> None:
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--repeats", type=int, default=2)
    ours, rest = own.parse_known_args(argv)
    base = cli.build_parser().parse_args(["demo", *rest])
    with app.cloud_context(base) as local:
        runner = app.load_drafter(base)
        address = base.cloud or local.address
        for repeat in range(ours.repeats):
            for name, flags in POLICIES.items():
                ar = app.run_one(base, runner, Method.AR, address)
                args = copy.copy(base)
                vars(args).update(flags)
                run = app.run_one(args, runner, Method.PICOSPEC, address)
                print(f"#{repeat} {name:12s} {run.tokens_per_s:6.2f} vs ar {ar.tokens_per_s:6.2f} tokens/s = "
                      f"{run.tokens_per_s / ar.tokens_per_s:.2f}x, decoded by the cloud {run.decoded}/{run.new_tokens}, "
                      f"mean accepted {run.mean_accepted if run.rounds else 0:.2f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
