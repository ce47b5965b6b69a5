"""PicoSpec: edge-cloud collaborative LLM inference by pipelined speculative decoding."""

__version__ = "0.1.0"
