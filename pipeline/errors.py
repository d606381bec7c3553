"""The pipeline's errors. `UsageError` means bad input (exit 2); the CLI prints its message only."""

from __future__ import annotations

from targets.errors import ConfigError, EdgepipeError, TargetError, UsageError


class ModelLoadError(UsageError):
    """A model file that cannot be loaded (missing, corrupt, unsafe, unsupported)."""


class DataError(UsageError):
    """A data file or folder that cannot be used with the model."""


class StageError(EdgepipeError):
    """A compression stage that failed on valid input."""


__all__ = ["ConfigError", "DataError", "EdgepipeError", "ModelLoadError", "StageError", "TargetError",
           "UsageError"]
