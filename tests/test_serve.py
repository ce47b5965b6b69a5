"""`picospec serve` driven by the official openai client: the toy pair in-process (fast), and the
real pair through the command line (marked real)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import openai
import pytest
import uvicorn

from picospec.cli import build_parser
from picospec.cloud.server import CloudServerThread
from picospec.decoding import generate_autoregressive
from picospec.runners.toy import ToyRunner
from picospec.sampling import SamplingParams
from picospec.serve.engine import EdgeEngine
from picospec.serve.http import create_app
from picospec.verify import VerifyConfig
from clouds import cloud_thread

V = 5
TARGET_SEED = 7
PROMPT = "bc"  # toy tokens 1, 2
API_KEY = "sk-test-key"


def toy_target() -> ToyRunner:
    return ToyRunner.create(V, seed=TARGET_SEED)


def toy_drafter() -> ToyRunner:
    return toy_target().drafter(seed=3, noise=0.8)


class SlowToy(ToyRunner):
    """A toy target whose every evaluation takes 20 ms, so a long generation takes seconds."""

    def extend(self, tokens):
        time.sleep(0.02)
        return super().extend(tokens)


def slow_toy_target() -> ToyRunner:
    target = toy_target()
    return SlowToy(target._table, target.order)


def greedy_reference(n: int) -> str:
    """The toy target's greedy continuation of PROMPT, as text."""
    target = toy_target()
    params = SamplingParams(temperature=0)
    tokens = generate_autoregressive(target, target.tokenize(PROMPT), params, VerifyConfig(), np.random.default_rng(0), n)
    return target.detokenize(tokens.token_ids)


class ServerThread:
    """uvicorn serving `app` on a free loopback port, in a thread."""

    def __init__(self, app) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        return self

    @property
    def base_url(self) -> str:
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    def __exit__(self, *exc_info) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@contextmanager
def toy_server(cloud: CloudServerThread, *flags: str):
    """`picospec serve` on the toy drafter, its flags parsed by the real parser, against `cloud`."""
    args = build_parser().parse_args(["serve", "--cloud", f"127.0.0.1:{cloud.port}", *flags])
    engine = EdgeEngine(toy_drafter(), args.cloud, args, args.max_context, args.max_queue)
    try:
        with ServerThread(create_app(engine, "toy", args.api_key)) as server:
            server.engine = engine
            yield server
    finally:
        engine.close()


def client(server: ServerThread, api_key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=api_key, max_retries=0, timeout=30)


def http(url: str, body: bytes | dict | None = None) -> tuple[int, dict]:
    """(status, JSON body) of a GET, or of a POST of `body` (raw bytes or a JSON object), without the openai client."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def wait_until(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def cloud():
    with cloud_thread(toy_target, max_sessions=4) as server:
        yield server


@pytest.fixture(scope="module")
def server(cloud):
    """Gumbel mode: a seed fixes the output, so streamed and non-streamed answers can be compared."""
    with toy_server(cloud, "--verify", "gumbel") as server:
        yield server


def chat(api, **kwargs):
    return api.chat.completions.create(model="toy", messages=[{"role": "user", "content": PROMPT}], **kwargs)


def streamed_text(stream) -> tuple[str, str | None, list]:
    """(text, finish reason, chunks) of a streamed chat or completion."""
    text, finish, chunks = "", None, []
    for chunk in stream:
        chunks.append(chunk)
        for choice in chunk.choices:
            piece = choice.delta.content if hasattr(choice, "delta") else choice.text
            text += piece or ""
            finish = choice.finish_reason or finish
    return text, finish, chunks


# -- answers ------------------------------------------------------------------------------------


def test_greedy_chat_answer_is_the_targets_greedy_text_with_usage(server):
    reply = chat(client(server), max_tokens=20, temperature=0)
    assert reply.choices[0].message.content == greedy_reference(20)
    assert reply.choices[0].finish_reason == "length"
    usage = reply.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (2, 20, 22)
    picospec = usage.model_extra["picospec"]
    assert picospec["method"] == "picospec" and picospec["verify"] == "gumbel"
    assert picospec["bytes_up"] > 0 and picospec["bytes_down"] > 0 and picospec["cloud_passes"] > 0
    assert picospec["rounds"] + picospec["decoded_by_cloud"] > 0


@pytest.mark.parametrize("method", ["ar", "sync", "edge"])
def test_every_method_serves(cloud, method):
    with toy_server(cloud, "--method", method) as server:
        reply = chat(client(server), max_tokens=12, temperature=0)
    # The edge method decodes with the drafter alone: its own greedy text, not the target's.
    expected = greedy_reference(12) if method != "edge" else toy_drafter().detokenize(
        generate_autoregressive(toy_drafter(), [1, 2], SamplingParams(temperature=0), VerifyConfig(), np.random.default_rng(0), 12).token_ids)
    assert reply.choices[0].message.content == expected
    assert reply.usage.model_extra["picospec"]["method"] == method


def test_completion_streamed_and_not(server):
    api = client(server)
    whole = api.completions.create(model="toy", prompt=PROMPT, max_tokens=15, temperature=0)
    assert whole.choices[0].text == greedy_reference(15) and whole.object == "text_completion"
    text, finish, chunks = streamed_text(api.completions.create(model="toy", prompt=PROMPT, max_tokens=15, temperature=0, stream=True))
    assert text == whole.choices[0].text and finish == "length"
    assert len(chunks) > 2  # streamed as it was verified, not in one piece


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_streamed_text_equals_the_non_streamed_text_for_the_same_seed(server, seed):
    api = client(server)
    whole = chat(api, max_tokens=30, temperature=1.0, seed=seed).choices[0].message.content
    text, finish, _ = streamed_text(chat(api, max_tokens=30, temperature=1.0, seed=seed, stream=True))
    assert text == whole and len(whole) == 30 and finish == "length"


def test_different_seeds_give_different_samples(server):
    api = client(server)
    texts = {chat(api, max_tokens=30, temperature=1.0, seed=seed).choices[0].message.content for seed in range(4)}
    assert len(texts) > 1


def test_stream_usage_is_sent_last_when_asked(server):
    _, _, chunks = streamed_text(chat(client(server), max_tokens=8, temperature=0, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8
    assert all(chunk.usage is None for chunk in chunks[:-1])


def test_a_stop_sequence_ends_the_answer_before_it(server):
    reference = greedy_reference(40)
    stop = reference[10:13]
    expected = reference[: reference.find(stop)]
    api = client(server)
    reply = chat(api, max_tokens=40, temperature=0, stop=[stop, "zz"])
    assert reply.choices[0].message.content == expected and reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens < 40
    text, finish, _ = streamed_text(chat(api, max_tokens=40, temperature=0, stop=stop, stream=True))
    assert (text, finish) == (expected, "stop")


def test_models_and_health(server):
    assert [m.id for m in client(server).models.list()] == ["toy"]
    assert http(server.base_url.removesuffix("/v1") + "/health") == (200, {"status": "ok", "running": 0, "waiting": 0})


# -- bad requests -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"n": 2}, "n"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        ({"temperature": 5}, "temperature"),
        ({"logprobs": True}, "logprobs"),
        ({"extra_body": {"frobnicate": 1}}, "frobnicate"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ],
)
def test_unsupported_or_malformed_fields_are_a_400_naming_the_field(server, extra, param):
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client(server), **extra)
    assert caught.value.status_code == 400
    assert caught.value.body["param"] == param and caught.value.body["message"]


def test_a_malformed_body_is_a_400_and_the_server_keeps_serving(server):
    url = server.base_url + "/chat/completions"
    status, body = http(url, b"{not json")
    assert status == 400 and "not valid JSON" in body["error"]["message"]
    status, body = http(url, {"messages": [{"role": "tool", "content": "x"}]})
    assert status == 400 and body["error"]["param"] == "messages[0].role"
    assert http(url, {"model": "toy"}) == (400, {"error": {"message": "messages must be a non-empty list",
                                                            "type": "invalid_request_error", "param": "messages", "code": None}})
    status, body = http(server.base_url + "/completions", {"prompt": [1, 99]})  # a token id beyond the toy's 5
    assert status == 400 and "prompt token ids" in body["error"]["message"]
    assert chat(client(server), max_tokens=3, temperature=0).choices[0].message.content == greedy_reference(3)


def test_max_tokens_beyond_the_context_is_a_400_and_without_it_the_context_is_the_limit(cloud):
    with toy_server(cloud, "--max-context", "12") as server:
        with pytest.raises(openai.BadRequestError) as caught:
            chat(client(server), max_tokens=11)
        assert caught.value.code == "context_length_exceeded" and "12 tokens" in caught.value.message
        reply = chat(client(server), temperature=0)  # no max_tokens: up to the context (2 prompt tokens + 10)
        assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 10


def test_an_api_key_is_required_when_set(cloud):
    with toy_server(cloud, "--api-key", API_KEY) as server:
        with pytest.raises(openai.AuthenticationError):
            chat(client(server, "sk-wrong"), max_tokens=2)
        assert http(server.base_url + "/chat/completions", {})[0] == 401
        assert chat(client(server, API_KEY), max_tokens=2, temperature=0).choices[0].message.content == greedy_reference(2)


# -- load and cancellation ----------------------------------------------------------------------


@pytest.fixture
def slow_cloud():
    with cloud_thread(slow_toy_target, max_sessions=4) as server:
        yield server


def test_a_client_that_leaves_mid_stream_cancels_the_generation_and_frees_the_cloud_session(slow_cloud):
    with toy_server(slow_cloud) as server:
        stream = chat(client(server), max_tokens=1000, temperature=0, stream=True)
        received = 0
        for chunk in stream:
            received += bool(chunk.choices and chunk.choices[0].delta.content)
            if received == 3:
                break
        wait_until(lambda: slow_cloud.server.pool.in_use == 1)
        left_at = time.monotonic()
        stream.close()  # the client goes away
        wait_until(lambda: slow_cloud.server.sessions_ended == 1 and slow_cloud.server.pool.in_use == 0, timeout_s=5)
        wait_until(lambda: server.engine.admission.running == 0, timeout_s=5)
        # 1000 tokens at 20 ms per target pass take far longer than it took to end the session.
        session = slow_cloud.server.finished[-1]
        assert time.monotonic() - left_at < 5 and session.passes < 100
        # The edge serves the next request.
        assert chat(client(server), max_tokens=3, temperature=0).choices[0].message.content == greedy_reference(3)


def test_requests_beyond_the_queue_are_refused_with_429_and_retry_after(slow_cloud):
    with toy_server(slow_cloud, "--max-queue", "1") as server:
        api = client(server)
        running = chat(api, max_tokens=1000, temperature=0, stream=True)
        next(iter(running))  # the first is running
        queued_reply: list = []
        queued = threading.Thread(target=lambda: queued_reply.append(chat(api, max_tokens=2, temperature=0)))
        queued.start()
        wait_until(lambda: server.engine.admission.waiting == 1)
        with pytest.raises(openai.RateLimitError) as caught:
            chat(api, max_tokens=2)
        assert caught.value.status_code == 429 and int(caught.value.response.headers["retry-after"]) >= 1
        assert caught.value.code == "queue_full"
        running.close()  # the queued request runs once the first one's client has gone
        queued.join(timeout=20)
        assert queued_reply and queued_reply[0].choices[0].message.content == greedy_reference(2)


# -- the real pair, through the command line -----------------------------------------------------


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.real
def test_serve_on_the_real_pair_answers_the_openai_client():
    port = free_port()
    command = [sys.executable, "-m", "picospec.cli", "serve", "--port", str(port), "--verify", "gumbel", "--deterministic"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = process.stdout.readline()  # printed once the drafter and the local cloud are up
        assert "picospec serve" in line, line + process.stdout.read()
        api = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=300)
        question = [{"role": "system", "content": "You answer in one short sentence."},
                    {"role": "user", "content": "What is the capital of France?"}]  # fmt: skip
        reply = api.chat.completions.create(model="x", messages=question, max_tokens=12, temperature=0.7, seed=5)
        text = reply.choices[0].message.content
        assert "Paris" in text and reply.usage.model_extra["picospec"]["method"] == "picospec"
        streamed, finish, _ = streamed_text(
            api.chat.completions.create(model="x", messages=question, max_tokens=12, temperature=0.7, seed=5, stream=True)
        )
        assert streamed == text and finish == reply.choices[0].finish_reason
        clouds = child_pids(process.pid)
        assert clouds  # the local cloud
    finally:
        process.terminate()
        process.wait(timeout=30)
    # Stopping serve stops the local cloud it started.
    wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in clouds), timeout_s=15)
