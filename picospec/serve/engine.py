"""The edge side of `picospec serve`: admits requests, runs each as an edge-cloud generation in a
worker thread, and turns its verified tokens into text events.

The edge holds one drafter (one runner, one KV cache), so it runs one generation at a time;
up to `max_queue` more requests wait their turn, and beyond that the server refuses with 429.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import math
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import AsyncIterator

from picospec.app import channel_security, edge_config
from picospec.edge.client import Cancellation, GenerationCancelled, generate
from picospec.edge.config import EdgeConfig, Method
from picospec.edge.report import EdgeReport
from picospec.errors import InvalidInputError
from picospec.runners.base import ModelRunner
from picospec.serve.protocol import GenerationRequest, SEED_MODULUS
from picospec.serve.text import TextAssembler


class QueueFull(Exception):
    """Every slot runs and the queue is full; retry after `retry_after_s`."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"the edge is busy (queue full); retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class Admission:
    """At most `slots` generations run at once and `max_queue` wait; the rest are refused."""

    def __init__(self, slots: int, max_queue: int) -> None:
        if slots < 1 or max_queue < 0:
            raise InvalidInputError(f"slots must be >= 1 and max_queue >= 0, got {slots}, {max_queue}")
        self.slots, self.max_queue = slots, max_queue
        self.running = 0
        self.waiting = 0
        self._semaphore = asyncio.Semaphore(slots)
        self._mean_s = 10.0  # a generation's duration, a prior the measured ones replace

    async def acquire(self) -> None:
        """Wait for a slot, or raise QueueFull at once if the queue holds max_queue already."""
        if self.running + self.waiting >= self.slots + self.max_queue:
            ahead = self.running + self.waiting - self.slots + 1  # generations to finish before a slot frees
            raise QueueFull(max(1, math.ceil(self._mean_s * ahead / self.slots)))
        self.waiting += 1
        try:
            await self._semaphore.acquire()
        finally:
            self.waiting -= 1
        self.running += 1

    def release(self, duration_s: float) -> None:
        """A generation that held a slot for `duration_s` has ended."""
        self.running -= 1
        self._mean_s = 0.8 * self._mean_s + 0.2 * duration_s
        self._semaphore.release()


class ContextOverflow(InvalidInputError):
    """Prompt plus max_tokens does not fit the context."""


@dataclass(frozen=True)
class Finished:
    """The end of one generation: why it ended, and the counts for `usage`."""

    finish_reason: str  # stop (EOS or a stop sequence) | length (max_tokens)
    prompt_tokens: int
    completion_tokens: int
    report: EdgeReport


class EdgeEngine:
    """Runs requests as edge-cloud generations with the server's flags as defaults.

    A request's fields override the flags of the same meaning (temperature, top_p, top_k,
    max_tokens, seed) and app.edge_config builds the generation's EdgeConfig from the result,
    exactly as `picospec generate` does from its command line.
    """

    def __init__(
        self, runner: ModelRunner, cloud: str | None, flags: argparse.Namespace, max_context: int, max_queue: int
    ) -> None:
        """`cloud` is the cloud's HOST:PORT (None for --method edge); `flags` as `picospec serve` parses them."""
        self.runner, self.cloud, self.flags = runner, cloud, flags
        self.security = channel_security(flags)
        self.method = Method(flags.method)
        self.max_context = max_context
        self.admission = Admission(1, max_queue)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="picospec-edge")
        self._stop_ids = frozenset(runner.vocab_info().eos_ids)

    def close(self) -> None:
        """Stop the worker thread once the generation in flight (if any) has ended."""
        self._executor.shutdown(wait=True)

    # -- request -> generation -----------------------------------------------------------------

    def prompt_tokens(self, request: GenerationRequest) -> list[int]:
        """The prompt's token ids: chat messages through the model's chat template, or the completion prompt."""
        if request.chat:
            return self.runner.chat_messages_tokens([{"role": m.role, "content": m.content} for m in request.messages])
        if isinstance(request.prompt, tuple):
            if max(request.prompt) >= self.runner.n_vocab or min(request.prompt) < 0:
                raise InvalidInputError(f"prompt token ids must lie in [0, {self.runner.n_vocab})")
            return list(request.prompt)
        return self.runner.tokenize(request.prompt)

    def edge_config(self, request: GenerationRequest, prompt_len: int) -> EdgeConfig:
        """The request's EdgeConfig; raise ContextOverflow if prompt plus max_tokens exceeds the context."""
        room = self.max_context - prompt_len
        if request.max_tokens is not None and request.max_tokens > room or room < 1:
            raise ContextOverflow(
                f"this server's context holds {self.max_context} tokens; the request asks for "
                f"{prompt_len + (request.max_tokens or 1)} ({prompt_len} in the prompt, "
                f"{request.max_tokens or 1} to generate)"
            )
        overrides = {
            "temperature": request.temperature, "top_p": request.top_p, "top_k": request.top_k,
            "max_tokens": request.max_tokens or room,
            # Without a seed each request draws its own: equal requests then sample independently.
            "seed": request.seed if request.seed is not None else secrets.randbelow(SEED_MODULUS),
        }  # fmt: skip
        flags = vars(self.flags) | {name: value for name, value in overrides.items() if value is not None}
        return edge_config(argparse.Namespace(**flags), self.method)

    async def run(self, request: GenerationRequest, prompt: list[int], config: EdgeConfig) -> AsyncIterator[str | Finished]:
        """Wait for a slot (or raise QueueFull), then yield text deltas and, last, a Finished.

        Closing the iterator early (a client that went away) cancels the generation; the slot is
        freed once the worker thread has stopped and the cloud session is closed.
        """
        loop = asyncio.get_running_loop()
        await self.admission.acquire()
        started = loop.time()
        tokens: asyncio.Queue = asyncio.Queue()
        cancel = Cancellation()

        def on_tokens(ids: list[int], source: str) -> None:  # on the generation's threads
            loop.call_soon_threadsafe(tokens.put_nowait, list(ids))

        def ended(future: asyncio.Future) -> None:
            # The slot is released here, when the runner is idle again, not when the client leaves.
            self.admission.release(loop.time() - started)
            future.exception()  # marks it retrieved: a client that left will not read it
            tokens.put_nowait(future)

        try:
            run = functools.partial(generate, security=self.security)
            work = loop.run_in_executor(self._executor, run, self.cloud, self.runner, prompt, config, on_tokens, cancel)
        except BaseException:
            self.admission.release(0.0)
            raise
        work.add_done_callback(ended)
        try:
            text = TextAssembler(self.runner.detokenize, request.stop)
            received: list[int] = []
            while not isinstance(item := await tokens.get(), asyncio.Future):
                if text.stopped:
                    continue  # tokens verified after a stop sequence, before the cancel took effect
                received += item
                if delta := text.feed(item):
                    yield delta
                if text.stopped:
                    cancel.cancel()
            report = _report_of(item)
            if delta := text.finish():
                yield delta
            stopped = text.stopped or bool(received) and received[-1] in self._stop_ids
            yield Finished("stop" if stopped else "length", len(prompt), len(received), report)
        finally:
            cancel.cancel()  # a no-op once the generation has ended


def _report_of(work: asyncio.Future) -> EdgeReport:
    """The finished generation's report; a cancelled one's (after a stop sequence) is its partial report."""
    try:
        return work.result()
    except GenerationCancelled as exc:
        return exc.report
