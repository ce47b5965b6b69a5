"""Target runners shared by the cloud's sessions: one per session at a time, created on demand."""

from __future__ import annotations

from typing import Awaitable, Callable

from picospec.runners.base import ModelRunner

RunnerFactory = Callable[[], ModelRunner]
# Runs a blocking function off the event loop (on the cloud's compute executor) and awaits it.
Offload = Callable[[Callable[[], ModelRunner]], Awaitable[ModelRunner]]


class RunnerPool:
    """At most max_runners runners; a session leases an idle one, or a new one while fewer exist.

    With llama.cpp each runner is its own context (KV cache) over the same mmapped GGUF, so a new
    runner costs a context, not another copy of the weights.
    """

    def __init__(self, factory: RunnerFactory, max_runners: int, offload: Offload) -> None:
        self._factory, self._max_runners, self._offload = factory, max_runners, offload
        self._idle: list[ModelRunner] = []
        self._created = 0
        self._in_use = 0

    @property
    def created(self) -> int:
        """Runners that exist (idle or leased)."""
        return self._created

    @property
    def in_use(self) -> int:
        """Runners leased to sessions now."""
        return self._in_use

    @property
    def idle(self) -> int:
        """Runners waiting for a session."""
        return len(self._idle)

    async def acquire(self) -> ModelRunner | None:
        """Lease a runner, or return None when all max_runners are leased."""
        if self._idle:
            self._in_use += 1
            return self._idle.pop()
        if self._created >= self._max_runners:
            return None
        # Count the slot before awaiting the new runner, so concurrent sessions cannot overshoot.
        self._created += 1
        self._in_use += 1
        try:
            return await self._offload(self._factory)
        except BaseException:
            self._created -= 1
            self._in_use -= 1
            raise

    def release(self, runner: ModelRunner) -> None:
        """Give a leased runner back for the next session."""
        self._in_use -= 1
        self._idle.append(runner)
