"""The toy cloud of the edge tests in a process of its own, so that fault tests can SIGKILL it.

python tests/toy_cloud.py PORT [--delay-ms MS] [--max-sessions N]: prints the cloud's
"serving ... on HOST:PORT" line once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from picospec.cloud.config import CloudConfig  # noqa: E402
from picospec.cloud.server import _serve_until_signalled  # noqa: E402
from picospec.runners.toy import ToyRunner  # noqa: E402
from picospec.wire.liveness import Liveness  # noqa: E402
from test_edge import TARGET_SEED, V  # noqa: E402
from clouds import per_session  # noqa: E402

FAST_LIVENESS = Liveness(keepalive_s=0.5, keepalive_timeout_s=0.5, welcome_timeout_s=5.0)


class SlowToy(ToyRunner):
    """The toy target, taking `delay_s` per pass, so a generation lasts long enough to be interrupted."""

    delay_s = 0.0

    def extend(self, tokens):
        time.sleep(self.delay_s)
        return super().extend(tokens)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--max-sessions", type=int, default=8)
    args = parser.parse_args()
    SlowToy.delay_s = args.delay_ms / 1000
    config = CloudConfig(port=args.port, max_sessions=args.max_sessions, model_name="toy", liveness=FAST_LIVENESS)
    return asyncio.run(_serve_until_signalled(config, per_session(functools.partial(SlowToy.create, V, seed=TARGET_SEED))))


if __name__ == "__main__":
    sys.exit(main())
