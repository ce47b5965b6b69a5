"""The standard gRPC health service (grpc.health.v1) of the cloud, and `picospec health`, its probe.

A cloud reports SERVING, for the whole server ("") and for the Verifier service, while it accepts
sessions, and NOT_SERVING from the moment it starts draining (SIGTERM), so that whatever routes
edges to replicas (a Kubernetes readiness probe, a compose healthcheck, a balancer with active
checks) stops sending it new sessions while its running ones finish. The health service answers
without the bearer token (picospec/security.py): probes cannot carry one, and it tells nothing but
whether the cloud takes sessions.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from picospec.security import ChannelSecurity, add_edge_arguments
from picospec.wire import picospec_pb2 as pb

VERIFIER_SERVICE = pb.DESCRIPTOR.services_by_name["Verifier"].full_name  # picospec.v1.Verifier
SERVICES = ("", VERIFIER_SERVICE)  # "" is the whole server, what probes ask by default
SERVING = health_pb2.HealthCheckResponse.SERVING


class CloudHealth:
    """The health service of one cloud: SERVING once started, NOT_SERVING for good once draining."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._servicer = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)

    async def serving(self) -> None:
        """Report SERVING for the server and the Verifier (call once the server listens)."""
        for service in SERVICES:
            await self._servicer.set(service, SERVING)

    async def draining(self) -> None:
        """Report NOT_SERVING for every service from now on (later set() calls are ignored)."""
        await self._servicer.enter_graceful_shutdown()


@dataclass(frozen=True)
class HealthProbe:
    """What `picospec health` asks, and how long it waits for the answer."""

    service: str = ""
    timeout_s: float = 5.0


def check_health(address: str, security: ChannelSecurity = ChannelSecurity(), probe: HealthProbe = HealthProbe()) -> str:
    """The serving status of probe.service at HOST:PORT by name (SERVING, NOT_SERVING,
    SERVICE_UNKNOWN); raises grpc.RpcError if the cloud cannot be reached or does not know the service."""
    credentials = security.credentials()
    channel = grpc.insecure_channel(address) if credentials is None else grpc.secure_channel(address, credentials)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=probe.service)
        reply = stub.Check(request, timeout=probe.timeout_s, metadata=security.metadata())
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


# -- `picospec health` ----------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `health` command: a probe for compose healthchecks, Kubernetes exec probes and scripts."""
    defaults = HealthProbe()
    parser = subparsers.add_parser("health", help="ask a cloud's gRPC health service; exit 0 only when SERVING")
    parser.add_argument("address", metavar="HOST:PORT", help="the cloud (or a balancer in front of clouds)")
    parser.add_argument("--service", default=defaults.service,
                        help=f"the service to ask about: '' for the whole server, or {VERIFIER_SERVICE}")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=defaults.timeout_s, metavar="S",
                        help="seconds to wait for the answer before calling the cloud unreachable")  # fmt: skip
    add_edge_arguments(parser)
    parser.set_defaults(func=_health_command)


def _health_command(args: argparse.Namespace) -> int:
    probe = HealthProbe(args.service, args.timeout)
    what = f"{args.address} ({args.service})" if args.service else args.address
    try:
        status = check_health(args.address, ChannelSecurity.from_args(args), probe)
    except grpc.RpcError as exc:  # an unreachable cloud is unhealthy, not a usage error
        print(f"picospec health: {what} unreachable: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    print(f"picospec health: {what} {status}")
    return 0 if status == "SERVING" else 1
