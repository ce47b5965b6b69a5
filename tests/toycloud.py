"""A cloud over toy targets for tests: one toy runner per session's sequence (SeparateRunners), so
its logits are the same batched or not, and the scheduler's batching is tested exactly."""

from __future__ import annotations

import functools
from typing import Callable

from picospec.cloud import CloudConfig, CloudServerThread
from picospec.runners.base import ModelRunner
from picospec.runners.separate import SeparateRunners

BATCHING = {"batched": True, "unbatched": False}  # parametrize ids -> CloudConfig.batching


def cloud_thread(factory: Callable[[], ModelRunner], **config: object) -> CloudServerThread:
    """A CloudServerThread on a free port serving `factory`'s model, with CloudConfig fields `config`."""
    cloud_config = CloudConfig(**{"port": 0, **config})
    return CloudServerThread(cloud_config, functools.partial(SeparateRunners, factory, seq_capacity=cloud_config.max_context))
