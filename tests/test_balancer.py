"""Two cloud replicas of the default pair behind nginx, as deploy/ runs them: every session goes
through the balancer's one address, spreads over both replicas, and gives the target's own greedy
tokens; a replica told to drain says NOT_SERVING while the other takes the new sessions; the edge's
token passes through nginx to the cloud.

nginx proxies with deploy/nginx/picospec-grpc.conf, the file the example deployment ships. `make
test` and `make test-fast` set PICOSPEC_REQUIRE_NGINX (and install nginx): there a missing nginx
fails the tests instead of skipping them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from picospec.cloud.health import check_health
from picospec.edge.client import CloudError, generate
from picospec.edge.config import EdgeConfig, Method
from picospec.launch import CloudProcessConfig, LocalCloud
from picospec.runners.toy import ToyRunner
from picospec.sampling import SamplingParams
from picospec.security import ChannelSecurity, ServerSecurity
from picospec.verify import VerifyConfig, VerifyMode
from clouds import cloud_thread
from test_real_pair import PROMPTS, greedy_reference

REQUIRE_NGINX_ENV = "PICOSPEC_REQUIRE_NGINX"
GRPC_CONF = Path(__file__).resolve().parents[1] / "deploy" / "nginx" / "picospec-grpc.conf"
EDGES = 8
TOKENS = 20  # greedy_reference's length
# Greedy, exact verification, a deterministic cloud: every session must give the target's greedy tokens.
CONFIG = EdgeConfig(method=Method.PICOSPEC, params=SamplingParams(temperature=0), verify=VerifyConfig(mode=VerifyMode.EXACT),
                    max_new_tokens=TOKENS)  # fmt: skip
START_TIMEOUT_S = 30.0


def nginx_binary() -> str:
    """nginx's path; without one, skip, or fail where $PICOSPEC_REQUIRE_NGINX says it must be there."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found:
        return found
    message = "nginx is not installed (apt-get install nginx-light; `make test` installs it)"
    if os.environ.get(REQUIRE_NGINX_ENV):
        pytest.fail(f"{message}, and ${REQUIRE_NGINX_ENV} says this run needs it")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def nginx_config(directory: Path, port: int, upstreams: list[str]) -> str:
    """A foreground nginx (one process, files under `directory`) proxying port to the upstreams
    with the deployment's gRPC settings."""
    servers = "".join(f"        server {address} max_fails=1 fail_timeout=10s;\n" for address in upstreams)
    temp = "".join(f"    {kind}_temp_path {directory / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""daemon off;
master_process off;
pid {directory / "nginx.pid"};
error_log {directory / "error.log"} info;
events {{ worker_connections 256; }}
http {{
    log_format grpc '"$request" $status grpc-status=$upstream_trailer_grpc_status$upstream_http_grpc_status upstream=$upstream_addr';
    access_log {directory / "access.log"} grpc;
{temp}    upstream picospec {{
{servers}    }}
    server {{
        listen 127.0.0.1:{port} http2;
        location / {{
            include {GRPC_CONF};
        }}
    }}
}}
"""


class Nginx:
    """nginx in the foreground on a free port in front of `upstreams`; a context manager."""

    def __init__(self, directory: Path, upstreams: list[str]) -> None:
        self.directory, self.port = directory, free_port()
        self.config = directory / "nginx.conf"
        self.config.write_text(nginx_config(directory, self.port, upstreams))
        self._process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> "Nginx":
        command = [nginx_binary(), "-p", str(self.directory), "-e", str(self.directory / "error.log"), "-c", str(self.config)]
        self._process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._listening():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise AssertionError(f"nginx did not start:\n{self._process.stderr.read()}{self.error_log()}")
            time.sleep(0.05)
        return self

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def __exit__(self, *exc_info: object) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=10)

    def error_log(self) -> str:
        path = self.directory / "error.log"
        return path.read_text() if path.exists() else ""

    def log(self) -> str:
        """What nginx logged for each call: the method, the gRPC status, the replica that served it."""
        return (self.directory / "access.log").read_text()


@pytest.fixture(scope="module")
def replicas(target_path):
    """Two deterministic replicas of the default target (batch-invariant: chunking cannot change a logit)."""
    config = CloudProcessConfig(model=str(target_path), deterministic=True, core=None)
    with LocalCloud(config, None) as first, LocalCloud(config, None) as second:
        yield [first, second]


@pytest.fixture(scope="module")
def balancer(replicas, tmp_path_factory):
    with Nginx(tmp_path_factory.mktemp("nginx"), [replica.address for replica in replicas]) as nginx:
        yield nginx


@pytest.fixture(scope="module")
def drafters(draft_path):
    """A drafter per edge: each session drafts on its own context, as separate edges would."""
    from picospec.runners.llama import LlamaRunner

    return [LlamaRunner(draft_path, n_ctx=512, n_threads=1) for _ in range(EDGES)]


@pytest.fixture(scope="module")
def references(target_runner):
    """The target's own greedy tokens per prompt, computed in this process."""
    references = {text: greedy_reference(target_runner, text) for text in PROMPTS}
    target_runner.rollback(0)
    return references


def run_edges(address: str, drafters, texts: list[str]) -> list:
    """One real edge session per text, all at once, each with its drafter and its own event loop."""
    with ThreadPoolExecutor(len(texts)) as pool:
        jobs = [pool.submit(generate, address, drafter, drafter.chat_tokens(text), CONFIG) for drafter, text in zip(drafters, texts)]
        return [job.result() for job in jobs]


def sessions_ended(replica: LocalCloud) -> int:
    return replica.stats()["sessions_ended"]


def settled_sessions_ended(replicas: list[LocalCloud], at_least: int, timeout_s: float = 10.0) -> list[int]:
    """Each replica's sessions_ended once they add up to at_least, or as they are after timeout_s:
    a replica counts a session when its stream has closed, which can be just after the edge returned."""
    deadline = time.monotonic() + timeout_s
    counts = [sessions_ended(replica) for replica in replicas]
    while sum(counts) < at_least and time.monotonic() < deadline:
        time.sleep(0.05)
        counts = [sessions_ended(replica) for replica in replicas]
    return counts


@pytest.mark.real
def test_eight_edges_through_the_balancer_spread_over_both_replicas_and_are_exact(replicas, balancer, drafters, references):
    assert check_health(balancer.address) == "SERVING"  # the health service answers through nginx too
    before = [sessions_ended(replica) for replica in replicas]
    texts = [PROMPTS[i % len(PROMPTS)] for i in range(EDGES)]
    started = time.perf_counter()
    reports = run_edges(balancer.address, drafters, texts)
    elapsed = time.perf_counter() - started
    after = settled_sessions_ended(replicas, sum(before) + EDGES + sum(report.resumes for report in reports))
    served = [count - earlier for count, earlier in zip(after, before)]
    print(f"{EDGES} edges in {elapsed:.1f} s; sessions per replica {served}; resumes {[r.resumes for r in reports]}")
    assert [report.token_ids for report in reports] == [references[text] for text in texts]
    assert all(count > 0 for count in served), served
    assert sum(served) == EDGES + sum(report.resumes for report in reports)  # a refused try is a session too
    assert balancer.log().count("/picospec.v1.Verifier/Generate") >= EDGES


@pytest.mark.real
def test_a_draining_replica_says_not_serving_and_the_other_takes_the_new_sessions(replicas, balancer, drafters, references):
    """SIGTERM one replica while it serves a session: its health turns NOT_SERVING at once; new
    sessions through nginx all succeed on the other (those nginx sends to the draining one are refused
    with UNAVAILABLE, and the edge's retry goes to the next replica); the held session ends exactly."""
    draining, other = replicas
    held, release = threading.Event(), threading.Event()

    def hold_once(tokens, source) -> None:  # on the drafting thread: the session waits, the cloud keeps it
        if not held.is_set():
            held.set()
            release.wait(START_TIMEOUT_S)

    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(generate, draining.address, drafters[0], drafters[0].chat_tokens(PROMPTS[0]), CONFIG, hold_once)
        assert held.wait(START_TIMEOUT_S)
        try:
            draining.drain()
            deadline = time.monotonic() + START_TIMEOUT_S
            while check_health(draining.address) == "SERVING":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert check_health(draining.address) == "NOT_SERVING"
            before = sessions_ended(other)
            texts = [PROMPTS[i % len(PROMPTS)] for i in range(4)]
            reports = run_edges(balancer.address, drafters[1:], texts)
            assert [report.token_ids for report in reports] == [references[text] for text in texts]
            assert settled_sessions_ended([other], before + len(texts))[0] - before == len(texts)
            refused = sum(report.resumes for report in reports)
            print(f"new sessions refused by the draining replica and retried elsewhere: {refused}")
            assert refused > 0  # nginx did send some to the draining replica: the edges' retries moved them
        finally:
            release.set()
        assert running.result().token_ids == references[PROMPTS[0]]
    assert draining.wait(START_TIMEOUT_S) == 0


def test_the_edges_token_reaches_the_cloud_through_nginx(tmp_path):
    """nginx passes the `authorization` header on: the cloud, not the balancer, checks the token."""
    toy = ToyRunner.create(5, seed=11)
    config = EdgeConfig(method=Method.AR, params=SamplingParams(temperature=0), max_new_tokens=4)
    with cloud_thread(lambda: ToyRunner.create(5, seed=11), model_name="toy", security=ServerSecurity(token="secret")) as cloud:
        with Nginx(tmp_path, [f"127.0.0.1:{cloud.port}"]) as nginx:
            report = generate(nginx.address, toy, [0, 1], config, security=ChannelSecurity(token="secret"))
            assert report.new_tokens == 4
            with pytest.raises(CloudError, match="UNAUTHENTICATED|token"):
                generate(nginx.address, toy, [0, 1], config, security=ChannelSecurity(token="wrong"))
