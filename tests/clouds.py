"""Clouds over toy targets for tests: one toy runner per session's sequence (SeparateRunners), so
its logits are the same batched or not, and the scheduler's batching is tested exactly."""

from __future__ import annotations

import functools
from typing import Callable

from picospec.cloud import CloudConfig, CloudServerThread
from picospec.runners.base import ModelRunner
from picospec.runners.separate import SeparateRunners

BATCHING = {"batched": True, "unbatched": False}  # parametrize ids -> CloudConfig.batching


def per_session(factory: Callable[[], ModelRunner], seq_capacity: int = CloudConfig.max_context):
    """The cloud's runner factory for a runner of `factory`'s per session."""
    return functools.partial(SeparateRunners, factory, seq_capacity=seq_capacity)


def cloud_thread(factory: Callable[[], ModelRunner], **config: object) -> CloudServerThread:
    """A CloudServerThread on a free port serving `factory`'s model, with CloudConfig fields `config`."""
    cloud_config = CloudConfig(**{"port": 0, **config})
    # Room for the cost calibration's passes whatever the sessions' limit, which the sessions enforce.
    return CloudServerThread(cloud_config, per_session(factory, max(cloud_config.max_context, CloudConfig.max_context)))
