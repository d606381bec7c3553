"""Runs one target's export in a child process: converters can segfault, and that must not take the
build down with it. The parent passes a JSON job on argv and reads the JSON result from a file."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[0]).read_text())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from calibration import CalibrationSet, SamplingMethod

    from . import ExportOptions, FloatModel, get_target

    with np.load(job["calibration"]) as data:
        samples = data["x"]
    calib = CalibrationSet(samples, job["calib_source"], SamplingMethod(job["calib_sampling"]), job["calib_seed"])
    model = FloatModel(
        Path(job["saved_model_dir"]),
        Path(job["keras_path"]) if job.get("keras_path") else None,
        tuple(job["input_shape"]),
    )
    target = get_target(job["target"])
    result = target.export(model, calib, Path(job["out_dir"]), ExportOptions(**job["options"]))
    Path(job["result"]).write_text(json.dumps(result.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
