"""Shared fixtures: the default GGUF model pair, each loaded once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from picospec.errors import ModelError

# `make test` must be reproducible, so property tests draw their examples from each test's own
# seed; HYPOTHESIS_PROFILE=explore draws fresh ones (and remembers failures) when hunting bugs.
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))
from picospec.models.registry import model_path


def _default_model(name: str) -> Path:
    """The pulled default model `name`, or skip the test saying how to pull it."""
    try:
        return model_path(name)
    except ModelError as exc:
        pytest.skip(f"default {name} model not available ({exc}); run `picospec models pull`")


@pytest.fixture(scope="session")
def draft_path() -> Path:
    """Qwen2.5-Coder-0.5B-Instruct Q4_K_M."""
    return _default_model("draft")


@pytest.fixture(scope="session")
def target_path() -> Path:
    """Qwen2.5-Coder-1.5B-Instruct Q4_K_M."""
    return _default_model("target")


@pytest.fixture(scope="session")
def draft_runner(draft_path: Path):
    """The draft model in the deterministic configuration, one thread; tests must leave it rolled back to 0."""
    from picospec.runners.llama import LlamaRunner

    return LlamaRunner(draft_path, n_threads=1, deterministic=True)


@pytest.fixture(scope="session")
def target_runner(target_path: Path):
    """The target model in the deterministic configuration, one thread; tests must leave it rolled back to 0."""
    from picospec.runners.llama import LlamaRunner

    return LlamaRunner(target_path, n_threads=1, deterministic=True)
