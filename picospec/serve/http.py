"""The HTTP layer of `picospec serve` (Starlette): routes, authentication, JSON and server-sent
events. It holds no decoding logic: requests go to an EdgeEngine, answers come from protocol.py."""

from __future__ import annotations

import hmac
import json
import logging
import uuid
from typing import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from picospec.errors import PicoSpecError
from picospec.serve.engine import ContextOverflow, EdgeEngine, Finished, QueueFull
from picospec.serve.protocol import ApiError, ResponseShape, Usage, models_body, parse_request

logger = logging.getLogger("picospec.serve")


def create_app(engine: EdgeEngine, model_name: str, api_key: str | None = None) -> Starlette:
    """The ASGI application over `engine`; with `api_key`, every /v1 route wants `Authorization: Bearer <key>`."""

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        # compare_digest: the time taken must not tell an attacker how much of the key was right.
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), api_key.encode()):
            raise ApiError(401, "invalid or missing API key (Authorization: Bearer ...)", code="invalid_api_key",
                           kind="authentication_error")  # fmt: skip

    async def health(request: Request) -> Response:
        admission = engine.admission
        return JSONResponse({"status": "ok", "running": admission.running, "waiting": admission.waiting})

    async def models(request: Request) -> Response:
        authorize(request)
        return JSONResponse(models_body([model_name]))

    async def chat_completions(request: Request) -> Response:
        return await complete(request, chat=True)

    async def completions(request: Request) -> Response:
        return await complete(request, chat=False)

    async def complete(request: Request, chat: bool) -> Response:
        authorize(request)
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(400, "the request body is not valid JSON") from None
        parsed = parse_request(body, chat)
        try:
            prompt = engine.prompt_tokens(parsed)
            config = engine.edge_config(parsed, len(prompt))
        except ContextOverflow as exc:
            raise ApiError(400, str(exc), param="max_tokens", code="context_length_exceeded") from None
        except PicoSpecError as exc:  # a prompt the model cannot take (bad token ids, no chat template, ...)
            raise ApiError(400, str(exc), param="messages" if chat else "prompt") from None
        shape = ResponseShape(parsed, f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", model_name)
        events = engine.run(parsed, prompt, config)
        try:
            # Wait for a slot before answering, so a full queue is a 429, not a broken stream.
            first = await anext(events)
        except QueueFull as exc:
            raise ApiError(429, str(exc), code="queue_full", kind="rate_limit_error",
                           headers={"Retry-After": str(exc.retry_after_s)}) from None  # fmt: skip
        except PicoSpecError as exc:
            raise ApiError(502, f"the generation failed: {exc}", kind="server_error") from None
        if parsed.stream:
            return StreamingResponse(sse(shape, first, events, parsed.include_usage), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})  # fmt: skip
        parts = [first] if isinstance(first, str) else []
        try:
            async for event in events:
                parts.append(event)
        except PicoSpecError as exc:
            raise ApiError(502, f"the generation failed: {exc}", kind="server_error") from None
        finished = first if isinstance(first, Finished) else parts.pop()
        usage = Usage(finished.prompt_tokens, finished.completion_tokens, finished.report)
        return JSONResponse(shape.complete("".join(parts), finished.finish_reason, usage))

    async def api_error(request: Request, exc: ApiError) -> Response:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={ApiError: api_error})


async def sse(shape: ResponseShape, first: str | Finished, events: AsyncIterator[str | Finished], include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events: text chunks, a last chunk with the finish reason, [optionally the usage,] [DONE].

    If the client goes away, Starlette stops iterating this generator; closing `events` then
    cancels the generation.
    """
    try:
        yield _event(shape.chunk(None, first=True))
        event = first
        while not isinstance(event, Finished):
            yield _event(shape.chunk(event))
            event = await anext(events)
        yield _event(shape.chunk(None, event.finish_reason))
        if include_usage:
            yield _event(shape.usage_chunk(Usage(event.prompt_tokens, event.completion_tokens, event.report)))
    except PicoSpecError as exc:  # the status line is sent: the error travels as an event
        logger.warning("generation failed mid-stream: %s", exc)
        yield _event(ApiError(502, f"the generation failed: {exc}", kind="server_error").body())
    finally:
        await events.aclose()
    yield "data: [DONE]\n\n"


def _event(payload: dict) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"
