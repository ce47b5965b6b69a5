"""Where an edge's network code runs: one event loop per process, on a thread of its own.

grpc.aio binds every event loop that makes a call to its one completion-queue poller and never lets
go of it, so a process that ran each generation on a fresh loop (asyncio.run) kept every loop it had
ever made alive: 1,000 generations, 1,000 loops (session 30, `gc` count). One long-lived loop
serves every generation of the process instead, each as a task, and the work that blocks (the
drafter) runs on threads of its own, so generations never wait on each other's compute.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from typing import Any, Callable, Coroutine, TypeVar

from picospec.errors import PicoSpecError

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid: int | None = None
_loop_thread: threading.Thread | None = None


def network_loop() -> asyncio.AbstractEventLoop:
    """The process's loop for cloud sessions, started on first use (and again in a forked child,
    which inherits the loop but not the thread that runs it)."""
    global _loop, _loop_pid, _loop_thread
    with _lock:
        if _loop is None or _loop_pid != os.getpid():
            _loop, _loop_pid = asyncio.new_event_loop(), os.getpid()
            _loop_thread = threading.Thread(target=_loop.run_forever, name="picospec-network", daemon=True)
            _loop_thread.start()
        return _loop


def run_on_network_loop(coroutine: Coroutine[Any, Any, T], on_interrupt: Callable[[], None]) -> T:
    """Run `coroutine` on the network loop and wait for its result in the calling thread.

    An interrupt of the wait (Ctrl-C) calls `on_interrupt`, which must make the coroutine end,
    waits for it to end, then re-raises: nothing is left running on the caller's behalf.
    """
    loop = network_loop()
    if threading.current_thread() is _loop_thread:
        coroutine.close()  # never to run: no "never awaited" warning
        raise PicoSpecError("a generation cannot be started from the network loop's own thread (e.g. an on_tokens callback)")
    future = asyncio.run_coroutine_threadsafe(coroutine, loop)
    try:
        return future.result()
    except KeyboardInterrupt:
        on_interrupt()
        concurrent.futures.wait([future])
        raise


async def on_own_thread(fn: Callable[..., T], *args: Any, on_cancel: Callable[[], None] | None = None) -> T:
    """fn(*args) on a new thread (the loop's default executor is bounded, and a drafting thread
    lasts a whole generation); awaited to its end even when cancelled, after `on_cancel` asks it to
    stop, so that the runner it uses is idle before anyone else uses it."""
    done: concurrent.futures.Future = concurrent.futures.Future()

    def work() -> None:
        try:
            done.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 (handed to the awaiting task)
            done.set_exception(exc)

    threading.Thread(target=work, name=f"picospec-{getattr(fn, '__name__', 'work')}", daemon=True).start()
    result = asyncio.wrap_future(done)
    try:
        return await asyncio.shield(result)
    except asyncio.CancelledError:
        if on_cancel is not None:
            on_cancel()
        await asyncio.gather(result, return_exceptions=True)
        raise
