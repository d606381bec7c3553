"""Runs a target's exports, or its per-layer sensitivity, in a child process: converters can segfault, and
that must not take the build down with it. The parent passes a JSON job on argv and reads JSON results
from files.

Job modes:
- "export" (the default): "exports" is a list of {"options", "out_dir", "result"}, done in order in this one
  process (a target may reuse its conversion between them); each result is written as soon as it exists.
- "sensitivity": {"options", "out_dir", "eval" (an npz with x, y), "result", "metric", "higher_is_better"}:
  the target's sensitivity table;
  with "float_variants" = k and "variants_dir", then the exports keeping the 1..k most sensitive layers in
  float (targets.base.float_layer_variants), as variants_dir/out<i> and variants_dir/result<i>.json.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def _calibration(job: dict[str, Any]) -> Any:
    from calibration import CalibrationSet, SamplingMethod

    samples = CalibrationSet.load_samples(Path(job["calibration"]))
    return CalibrationSet(samples, job["calib_source"], SamplingMethod(job["calib_sampling"]), job["calib_seed"])


def _model(job: dict[str, Any]) -> Any:
    from . import FloatModel

    return FloatModel(
        Path(job["saved_model_dir"]),
        Path(job["keras_path"]) if job.get("keras_path") else None,
        tuple(job["input_shape"]),
        Path(job["converted"]) if job.get("converted") else None,
        tuple((str(n), tuple(int(d) for d in shape)) for n, shape in job.get("inputs", [])),
    )


def _export_all(target: Any, model: Any, calib: Any, items: list[dict[str, Any]]) -> None:
    from . import ExportOptions

    for item in items:
        result = target.export(model, calib, Path(item["out_dir"]), ExportOptions.from_dict(item["options"]))
        Path(item["result"]).write_text(json.dumps(result.to_dict()))


def run_export(job: dict[str, Any]) -> None:
    from . import get_target

    _export_all(get_target(job["target"]), _model(job), _calibration(job), list(job["exports"]))


def run_sensitivity(job: dict[str, Any]) -> None:
    from dataclasses import asdict

    from . import ExportOptions, get_target
    from .base import float_layer_variants
    from .runner import EvalSet
    from .sensitivity import SensitivityRequest, sensitivity

    target, calib, model = get_target(job["target"]), _calibration(job), _model(job)
    ev = EvalSet(Path(job["eval"]))
    opts = ExportOptions.from_dict(job.get("options", {}))
    req = SensitivityRequest(model, calib, Path(job["out_dir"]), ev.x, ev.y, opts, job.get("metric", "accuracy"),
                             bool(job.get("higher_is_better", True)))
    table = sensitivity(target, req)
    Path(job["result"]).write_text(json.dumps(table))
    folder = Path(job.get("variants_dir") or job["out_dir"])
    variants = float_layer_variants(opts, table, int(job.get("float_variants", 0)))
    items = [{"options": asdict(o), "out_dir": str(folder / f"out{i}"), "result": str(folder / f"result{i}.json")}
             for i, o in enumerate(variants)]
    _export_all(target, model, calib, items)


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[0]).read_text())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    mode = job.get("mode", "export")
    if mode == "export":
        run_export(job)
    elif mode == "sensitivity":
        run_sensitivity(job)
    else:
        raise SystemExit(f"unknown worker mode {mode!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
