"""The cloud's standard gRPC health service and `picospec health` (draining is in test_cloud.py)."""

from __future__ import annotations

import functools
import socket

import grpc
import pytest

from picospec.cli import main
from picospec.cloud.health import VERIFIER_SERVICE, HealthProbe, check_health
from picospec.runners.toy import ToyRunner
from picospec.security import ServerSecurity
from clouds import cloud_thread

TOY = functools.partial(ToyRunner.create, 5, seed=11)


@pytest.fixture(scope="module")
def cloud():
    with cloud_thread(TOY, model_name="toy") as thread:
        yield f"127.0.0.1:{thread.port}"


def unused_address() -> str:
    """An address nobody listens on (the port was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def test_a_cloud_that_takes_sessions_is_serving_as_a_server_and_as_the_verifier(cloud):
    assert check_health(cloud) == "SERVING"
    assert check_health(cloud, probe=HealthProbe(service=VERIFIER_SERVICE)) == "SERVING"
    assert VERIFIER_SERVICE == "picospec.v1.Verifier"


def test_an_unknown_service_is_not_found(cloud):
    with pytest.raises(grpc.RpcError) as caught:
        check_health(cloud, probe=HealthProbe(service="no.such.Service"))
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


def test_the_health_command_exits_0_only_when_serving(cloud, capsys):
    assert main(["health", cloud]) == 0
    assert capsys.readouterr().out == f"picospec health: {cloud} SERVING\n"
    assert main(["health", cloud, "--service", VERIFIER_SERVICE]) == 0
    assert main(["health", cloud, "--service", "no.such.Service"]) == 1
    assert "unreachable: NOT_FOUND" in capsys.readouterr().err
    nobody = unused_address()
    assert main(["health", nobody, "--timeout", "1"]) == 1
    assert f"picospec health: {nobody} unreachable: " in capsys.readouterr().err


def test_the_health_service_answers_probes_that_carry_no_token():
    """Kubernetes' and balancers' gRPC probes cannot send the token every session needs."""
    with cloud_thread(TOY, model_name="toy", security=ServerSecurity(token="secret")) as thread:
        assert check_health(f"127.0.0.1:{thread.port}") == "SERVING"
