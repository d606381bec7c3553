"""edgepipe from Python: `build` a model (a file or an in-memory `keras.Model`) on data (an .npz, arrays or
`tf.data.Dataset`s) into verified int8 artifacts, `verify` a run again, `bench` one artifact, `load_run` a
run directory. The same build as the `edgepipe` command; see docs/getting-started/python.md."""

from __future__ import annotations

from edgepipe.api import BenchResult, BuildOptions, bench, build, verify
from edgepipe.errors import EdgepipeError, InputError, StageError, TargetError
from edgepipe.run import LatencyStats, Run, TargetResult, load_run
from pipeline import __version__

__all__ = ["BenchResult", "BuildOptions", "EdgepipeError", "InputError", "LatencyStats", "Run", "StageError", "TargetError",
           "TargetResult", "__version__", "bench", "build", "load_run", "verify"]
