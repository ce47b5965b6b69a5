"""How both sides notice a peer that went silent (a partition, a frozen process), not just one
that closed its socket: HTTP/2 keepalive pings, and a deadline on the welcome.

A side that hears nothing for keepalive_s pings; a ping unanswered for keepalive_timeout_s closes
the connection, which ends the stream: the edge resumes (or fails), the cloud frees the session
and its runner. So silence is detected within `bound_s` of its start, on both sides.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from picospec.errors import InvalidInputError


@dataclass(frozen=True)
class Liveness:
    """Keepalive settings shared by the edge's channel and the cloud's server."""

    keepalive_s: float = 5.0  # ping after this long without hearing from the peer
    keepalive_timeout_s: float = 5.0  # a ping unanswered this long means the peer is gone
    welcome_timeout_s: float = 30.0  # hello to welcome, connecting and the cloud's session set-up included

    def __post_init__(self) -> None:
        for name in ("keepalive_s", "keepalive_timeout_s", "welcome_timeout_s"):
            if not getattr(self, name) > 0:
                raise InvalidInputError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def bound_s(self) -> float:
        """The longest a silent peer goes unnoticed once a session runs."""
        return self.keepalive_s + self.keepalive_timeout_s

    def _ms(self, seconds: float) -> int:
        return max(1, round(seconds * 1000))

    def _ping_options(self) -> list[tuple[str, int]]:
        return [
            # By default a side stops pinging after 2 pings with no data sent, and at most every
            # 5 minutes: keep pinging at keepalive_s while a session waits on a long pass.
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.http2.min_time_between_pings_ms", self._ms(self.keepalive_s)),
            # gRPC folds a keepalive ping into an outstanding (e.g. flow-control) ping, which then
            # times out after ping_timeout_ms (default 1 minute), not keepalive_timeout_ms.
            ("grpc.http2.ping_timeout_ms", self._ms(self.keepalive_timeout_s)),
        ]

    def channel_options(self) -> list[tuple[str, int]]:
        """gRPC options for the edge's channel."""
        return [
            ("grpc.keepalive_time_ms", self._ms(self.keepalive_s)),
            ("grpc.keepalive_timeout_ms", self._ms(self.keepalive_timeout_s)),
            ("grpc.keepalive_permit_without_calls", 1),
            *self._ping_options(),
        ]

    def server_options(self) -> list[tuple[str, int]]:
        """gRPC options for the cloud's server: ping its edges, and accept their pings."""
        return [
            ("grpc.keepalive_time_ms", self._ms(self.keepalive_s)),
            ("grpc.keepalive_timeout_ms", self._ms(self.keepalive_timeout_s)),
            ("grpc.keepalive_permit_without_calls", 1),
            *self._ping_options(),
            # An edge pinging as often as this cloud itself does is not abusive: without this the
            # server would answer its pings with GOAWAY (too_many_pings) and drop healthy edges.
            ("grpc.http2.min_ping_interval_without_data_ms", self._ms(self.keepalive_s / 2)),
            ("grpc.http2.max_ping_strikes", 0),
        ]


def add_liveness_arguments(parser: argparse.ArgumentParser) -> None:
    """The keepalive flags, the same on the cloud and the edge (each side detects on its own)."""
    defaults = Liveness()
    parser.add_argument("--keepalive-s", type=float, default=defaults.keepalive_s,
                        help="ping the peer after this much silence")  # fmt: skip
    parser.add_argument("--keepalive-timeout-s", type=float, default=defaults.keepalive_timeout_s,
                        help="drop the connection when a ping goes unanswered this long; a silent peer is noticed "
                        "within the sum")  # fmt: skip


def liveness_from_args(args: argparse.Namespace) -> Liveness:
    """The Liveness the flags of add_liveness_arguments describe."""
    return Liveness(keepalive_s=args.keepalive_s, keepalive_timeout_s=args.keepalive_timeout_s)
