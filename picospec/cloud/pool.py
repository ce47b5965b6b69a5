"""The cloud's sessions each lease one sequence of the scheduler's runner, with a thread of its own."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, TypeVar

from picospec.cloud.scheduler import BatchScheduler, SequenceView

T = TypeVar("T")


@dataclass
class Lease:
    """A sequence of the shared runner, and the one thread that runs its session's blocking calls.

    One thread per lease, kept with the lease: a cancelled session's compute still running when the
    lease passes to the next session finishes before the next session's first call starts.
    """

    view: SequenceView
    executor: ThreadPoolExecutor

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run a blocking call of this lease's session on its thread, and await it."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)


class SequencePool:
    """At most the runner's n_seq leases; a session leases an idle one, or a new one while fewer exist."""

    def __init__(self, scheduler: BatchScheduler) -> None:
        self._scheduler = scheduler
        self._leases: list[Lease] = []
        self._idle: list[Lease] = []

    @property
    def created(self) -> int:
        """Leases that exist (idle or leased)."""
        return len(self._leases)

    @property
    def in_use(self) -> int:
        """Leases held by sessions now."""
        return len(self._leases) - len(self._idle)

    @property
    def idle(self) -> int:
        """Leases waiting for a session."""
        return len(self._idle)

    def acquire(self) -> Lease | None:
        """Lease a sequence, or return None when all are leased."""
        if self._idle:
            return self._idle.pop()
        seq = len(self._leases)
        if seq >= self._scheduler.runner.n_seq:
            return None
        lease = Lease(self._scheduler.view(seq), ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"picospec-seq{seq}"))
        self._leases.append(lease)
        return lease

    def release(self, lease: Lease) -> None:
        """Give a lease back for the next session."""
        self._idle.append(lease)

    def shutdown(self) -> None:
        """Wait for every lease's calls in flight (blocking); cancel those not started."""
        for lease in self._leases:
            lease.executor.shutdown(wait=True, cancel_futures=True)
