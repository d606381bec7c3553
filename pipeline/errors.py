"""The pipeline's errors. `UsageError` means bad input (exit 2); the CLI prints its message only."""

from __future__ import annotations


class EdgepipeError(Exception):
    """Base class of every error edgepipe raises on purpose."""


class UsageError(EdgepipeError):
    """Bad input or usage: a config, model, data file or argument the user must fix. Exit code 2."""


class ConfigError(UsageError):
    """A config file that does not parse or validate."""


class ModelLoadError(UsageError):
    """A model file that cannot be loaded (missing, corrupt, unsafe, unsupported)."""


class DataError(UsageError):
    """A data file or folder that cannot be used with the model."""


class StageError(EdgepipeError):
    """A compression stage that failed on valid input."""


class TargetError(EdgepipeError):
    """A target's conversion, quantization or measurement failed."""
