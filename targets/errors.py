"""Errors of the targets package; pipeline.errors builds on these (layering runs pipeline -> targets).

`UsageError` means bad input the user must fix (exit 2); `TargetError` a conversion, device or runtime
failure on valid input."""

from __future__ import annotations


class EdgepipeError(Exception):
    """Base class of every error edgepipe raises on purpose."""


class UsageError(EdgepipeError):
    """Bad input or usage: a config, model, data file, device or argument the user must fix. Exit code 2."""


class ConfigError(UsageError):
    """A config or profile file that does not parse or validate."""


class TargetError(EdgepipeError):
    """A target's conversion, quantization or measurement failed."""
