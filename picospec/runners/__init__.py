"""Model runners: one interface (ModelRunner) over llama.cpp and over a deterministic toy model."""

from picospec.runners.base import ModelRunner, VocabInfo

__all__ = ["ModelRunner", "VocabInfo"]
