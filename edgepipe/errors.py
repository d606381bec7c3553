"""The public errors of `edgepipe`: one type per kind, each also an instance of the pipeline's own error of
that kind (so `except pipeline.errors.UsageError` still catches an `InputError`).

- `InputError`: bad input the caller must fix (a model, data, config, argument, run directory); what the
  command line reports with exit code 2.
- `TargetError`: a backend's conversion, quantization or measurement failed on valid input (a `build`
  records such a target as failed in its `Run` instead of raising).
- `StageError`: a compression stage failed on valid input.

A missed budget is not an error: it is a result, `Run.passed` is False."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pipeline.errors import EdgepipeError, UsageError
from pipeline.errors import StageError as _PipelineStageError
from pipeline.errors import TargetError as _PipelineTargetError


class InputError(UsageError):
    """Bad input: a model, data, config, argument or run directory edgepipe cannot use (CLI exit 2)."""


class TargetError(_PipelineTargetError):
    """A backend's conversion, quantization or measurement failed."""


class StageError(_PipelineStageError):
    """A compression stage (distill, prune, decompose) failed on valid input."""


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


@contextmanager
def public_errors() -> Iterator[None]:
    """Re-raise the pipeline's errors as the public types, with their one-line message and without the
    chain of internal frames that led to them (`from None`)."""
    try:
        yield
    except (InputError, TargetError, StageError):
        raise
    except UsageError as err:
        raise InputError(_one_line(err)) from None
    except _PipelineTargetError as err:
        raise TargetError(_one_line(err)) from None
    except _PipelineStageError as err:
        raise StageError(_one_line(err)) from None


__all__ = ["EdgepipeError", "InputError", "StageError", "TargetError", "public_errors"]
