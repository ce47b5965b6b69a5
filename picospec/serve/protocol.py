"""The OpenAI API's request and response shapes, as far as PicoSpec serves them.

Parsing is strict: a field PicoSpec does not implement (n > 1, tools, logprobs, penalties, ...)
is refused with a 400 that names it, never silently ignored, since a client that asked for it
would otherwise get an answer it did not ask for. No I/O here: the HTTP layer calls these.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from picospec.edge.report import EdgeReport

MAX_STOP_SEQUENCES = 4  # as the OpenAI API
SEED_MODULUS = 2**64  # the wire's seed is a uint64; any JSON integer maps onto it


class ApiError(Exception):
    """An error answered in the OpenAI shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None,
        kind: str = "invalid_request_error", headers: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = dict(headers or {})

    def body(self) -> dict:
        """The JSON body of the error response."""
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def invalid(param: str, message: str, code: str | None = None) -> ApiError:
    """A 400 about one request field."""
    return ApiError(400, message, param=param, code=code)


@dataclass(frozen=True)
class ChatMessage:
    """One turn of a conversation; content is plain text."""

    role: str
    content: str


@dataclass(frozen=True)
class GenerationRequest:
    """What a /v1/chat/completions or /v1/completions request asks for, validated.

    None means "the server's default" (its flags; for max_tokens, the room left in the context;
    for seed, a fresh random one).
    """

    chat: bool
    model: str | None
    messages: tuple[ChatMessage, ...] = ()  # chat
    prompt: str | tuple[int, ...] = ""  # completions: text, or token ids
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # not OpenAI's; accepted as vLLM and llama.cpp's servers do
    stop: tuple[str, ...] = ()
    seed: int | None = None
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: a last chunk with the usage


# Fields PicoSpec reads; fields it accepts only at their no-op value; fields it ignores because
# they change nothing about the output.
_COMMON = {"model", "max_tokens", "temperature", "top_p", "top_k", "stop", "seed", "stream", "stream_options", "n"}
_CHAT = _COMMON | {"messages", "max_completion_tokens"}
_COMPLETION = _COMMON | {"prompt"}
_IGNORED = {"user", "metadata", "store", "service_tier"}
_ONLY_AT = {  # field: the values that mean "not used"
    "n": (1,),
    "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0),
    "logprobs": (False, None),
    "top_logprobs": (0, None),
    "logit_bias": ({}, None),
    "tools": ([], None),
    "tool_choice": ("none", None),
    "functions": ([], None),
    "function_call": ("none", None),
    "parallel_tool_calls": (False, None, True),
    "echo": (False,),
    "best_of": (1,),
    "suffix": (None, ""),
    "response_format": ({"type": "text"}, None),
}


def parse_request(body: Any, chat: bool) -> GenerationRequest:
    """Validate a request body; raise ApiError(400) naming the first field that is wrong or unsupported."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    known = _CHAT if chat else _COMPLETION
    for name, value in body.items():
        if name in _ONLY_AT:
            if not any(value == ok and type(value) is type(ok) for ok in _ONLY_AT[name]):
                raise invalid(name, f"{name}={value!r} is not supported by this server", "unsupported_parameter")
        elif name not in known and name not in _IGNORED:
            raise invalid(name, f"unrecognized request argument: {name}", "unsupported_parameter")
    max_tokens = _optional_int(body, "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens", 1)
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict) or set(stream_options) - {"include_usage"}:
        raise invalid("stream_options", "stream_options may hold only include_usage")
    common = dict(
        chat=chat,
        model=_optional(body, "model", str),
        max_tokens=max_tokens,
        temperature=_optional_number(body, "temperature", 0.0, 2.0),
        top_p=_optional_number(body, "top_p", 0.0, 1.0, low_open=True),
        top_k=_optional_int(body, "top_k", 0),
        stop=_stop(body.get("stop")),
        seed=None if body.get("seed") is None else _optional_int(body, "seed", None) % SEED_MODULUS,
        stream=bool(_optional(body, "stream", bool)),
        include_usage=bool(_optional(stream_options, "include_usage", bool)),
    )
    if chat:
        return GenerationRequest(messages=_messages(body.get("messages")), **common)
    return GenerationRequest(prompt=_prompt(body.get("prompt")), **common)


def _optional(body: Mapping, name: str, kind: type) -> Any:
    value = body.get(name)
    if value is not None and type(value) is not kind:  # type(), not isinstance(): JSON true is not 1
        raise invalid(name, f"{name} must be a {kind.__name__}, got {type(value).__name__}")
    return value


def _optional_int(body: Mapping, name: str, minimum: int | None) -> int | None:
    value = _optional(body, name, int)
    if value is not None and minimum is not None and value < minimum:
        raise invalid(name, f"{name} must be >= {minimum}, got {value}")
    return value


def _optional_number(body: Mapping, name: str, low: float, high: float, low_open: bool = False) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if type(value) not in (int, float):
        raise invalid(name, f"{name} must be a number, got {type(value).__name__}")
    if not (low < value if low_open else low <= value) or value > high:
        raise invalid(name, f"{name} must be in {'(' if low_open else '['}{low}, {high}], got {value}")
    return float(value)


def _stop(value: Any) -> tuple[str, ...]:
    stops = [value] if isinstance(value, str) else value if value is not None else []
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise invalid("stop", "stop must be a non-empty string or a list of them")
    if len(stops) > MAX_STOP_SEQUENCES:
        raise invalid("stop", f"at most {MAX_STOP_SEQUENCES} stop sequences, got {len(stops)}")
    return tuple(stops)


def _messages(value: Any) -> tuple[ChatMessage, ...]:
    if not isinstance(value, list) or not value:
        raise invalid("messages", "messages must be a non-empty list")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise invalid(f"messages[{i}]", "each message must be an object")
        role = message.get("role")
        if role not in ("system", "developer", "user", "assistant"):
            raise invalid(f"messages[{i}].role", f"role {role!r} is not supported (system, developer, user, assistant)")
        if set(message) - {"role", "content", "name"}:
            extra = sorted(set(message) - {"role", "content", "name"})
            raise invalid(f"messages[{i}]", f"message fields {extra} are not supported (tool calls, audio, ...)")
        # Templates know "system"; OpenAI's newer "developer" role means the same to a local model.
        out.append(ChatMessage("system" if role == "developer" else role, _content(message.get("content"), i)))
    return tuple(out)


def _content(value: Any, i: int) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in value):
        return "".join(part["text"] for part in value)
    raise invalid(f"messages[{i}].content", "content must be a string or a list of text parts")


def _prompt(value: Any) -> str | tuple[int, ...]:
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], (str, list)):
        value = value[0]  # a batch of one
    if isinstance(value, str) and value:
        return value
    if isinstance(value, list) and value and all(type(t) is int for t in value):
        return tuple(value)
    raise invalid("prompt", "prompt must be a non-empty string, a list of token ids, or a list of one of either")


# -- responses --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """Token counts, plus what the edge-cloud generation measured (the `picospec` extension)."""

    prompt_tokens: int
    completion_tokens: int
    report: EdgeReport

    def body(self) -> dict:
        """The `usage` object: OpenAI's three counts and a `picospec` object (docs/design.md, "HTTP layer")."""
        r = self.report
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "picospec": {
                "method": r.method,
                "verify": r.verify,
                "rounds": r.rounds,
                "mean_accepted": r.mean_accepted,
                "drafted": r.drafted,
                "discarded": r.discarded,
                "decoded_by_cloud": r.decoded,
                "cloud_decode_s": r.cloud_decode_s,
                "mode_switches": r.mode_switches,
                "bytes_up": r.bytes_up,
                "bytes_down": r.bytes_down,
                "cloud_passes": r.cloud_passes,
                "ttft_s": r.ttft_s,
                "wall_s": r.wall_s,
                "tokens_per_s": r.tokens_per_s,
            },
        }


class ResponseShape:
    """Builds the response objects of one request: same id, model and creation time throughout."""

    def __init__(self, request: GenerationRequest, request_id: str, model: str) -> None:
        self.chat, self.id, self.model = request.chat, request_id, model
        self.created = int(time.time())
        self.object = "chat.completion" if self.chat else "text_completion"

    def _envelope(self, obj: str, choices: list[dict]) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model, "choices": choices}

    def complete(self, text: str, finish_reason: str, usage: Usage) -> dict:
        """The non-streamed response."""
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason, "logprobs": None}
        else:
            choice = {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}
        return {**self._envelope(self.object, [choice]), "usage": usage.body()}

    def chunk(self, text: str | None, finish_reason: str | None = None, first: bool = False) -> dict:
        """One streamed chunk; the chat stream's first chunk also carries the role."""
        if self.chat:
            delta: dict = {"role": "assistant", "content": text or ""} if first else ({"content": text} if text else {})
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            return self._envelope("chat.completion.chunk", [choice])
        choice = {"index": 0, "text": text or "", "finish_reason": finish_reason, "logprobs": None}
        return self._envelope("text_completion", [choice])

    def usage_chunk(self, usage: Usage) -> dict:
        """The stream's last chunk when stream_options.include_usage: no choices, the usage."""
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return {**self._envelope(obj, []), "usage": usage.body()}


def models_body(names: Sequence[str], owned_by: str = "picospec") -> dict:
    """The /v1/models list."""
    return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": owned_by} for n in names]}
