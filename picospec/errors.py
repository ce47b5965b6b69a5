"""Errors that PicoSpec raises on bad input, so callers get a clear message, not a numpy trace."""


class PicoSpecError(Exception):
    """Base class of every error PicoSpec raises on purpose."""


class InvalidInputError(PicoSpecError, ValueError):
    """An argument, token id or distribution that cannot be right."""


class ModelError(PicoSpecError):
    """A model file that is missing, not a GGUF, or incompatible with its partner."""


class ProtocolError(PicoSpecError):
    """A message that breaks the wire protocol."""
