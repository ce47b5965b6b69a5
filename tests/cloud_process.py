"""A cloud in a child process, for tests whose edge is an asyncio gRPC client.

grpc.aio binds to one event loop per process, so an aio client and an aio server cannot run on
two loops in the same process; a spawned child gives the cloud its own, as in production.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from typing import Callable

from picospec.cloud.config import CloudConfig
from picospec.runners.base import ModelRunner


def _serve(config: CloudConfig, runner_factory: Callable[[], ModelRunner], ports) -> None:
    from picospec.cloud.server import start_server

    async def main() -> None:
        server = await start_server(config, runner_factory)
        ports.put(server.port)
        await asyncio.Event().wait()  # until the parent terminates us

    asyncio.run(main())


class CloudProcess:
    """Context manager: a cloud serving `runner_factory` (a module-level callable) on a free port."""

    def __init__(self, runner_factory: Callable[[], ModelRunner], config: CloudConfig | None = None) -> None:
        context = multiprocessing.get_context("spawn")
        self._ports = context.Queue()
        config = config or CloudConfig(port=0)
        self._process = context.Process(target=_serve, args=(config, runner_factory, self._ports), daemon=True)
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> "CloudProcess":
        self._process.start()
        self.port = self._ports.get(timeout=60)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._process.terminate()
        self._process.join(timeout=10)
