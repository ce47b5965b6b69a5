"""One way to turn a model name or path into a runner: a GGUF file runs on llama.cpp, a Hugging Face
checkpoint directory on transformers (the `hf` extra), so every command accepts either."""

from __future__ import annotations

from picospec.errors import InvalidInputError
from picospec.models.registry import model_path
from picospec.runners.base import ModelRunner


def load_runner(
    name_or_path: str,
    n_ctx: int = 4096,
    n_threads: int = 1,
    deterministic: bool = False,
    device: str = "cpu",
    gpu_layers: int = 0,
) -> ModelRunner:
    """A runner for a default model name, a GGUF file or a checkpoint directory.

    `deterministic` selects llama.cpp's batch-invariant configuration (GGUF only); `device`
    places a checkpoint (cpu, cuda, cuda:1, ...); `gpu_layers` offloads a GGUF's layers to a GPU
    (a llama-cpp-python built with one), which is where llama.cpp's device is chosen.
    """
    path = model_path(name_or_path)
    if path.is_dir():
        if gpu_layers:
            raise InvalidInputError("GPU layers are llama.cpp's (GGUF models); a checkpoint directory takes a device")
        from picospec.runners.hf import HFRunner  # imported here: torch loads only when a checkpoint is used

        return HFRunner(path, device=device, n_ctx=n_ctx, n_threads=n_threads)
    if device != "cpu":
        raise InvalidInputError(
            f"--device {device}: GGUF models run on llama.cpp, which offloads to a GPU by GPU layers, not a "
            "device; only checkpoint directories take a device"
        )
    from picospec.runners.llama import LlamaRunner

    return LlamaRunner(path, n_ctx=n_ctx, n_threads=n_threads, deterministic=deterministic, gpu_layers=gpu_layers)
