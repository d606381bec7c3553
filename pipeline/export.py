"""Run one target's export in a child process, cached by content hash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from calibration import CalibrationSet
from targets import ExportOptions, ExportResult, FloatModel, get_target

from .cache import Cache, cache_key
from .errors import TargetError
from .ui import UI

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Exported:
    folder: Path  # holds the files of `result`
    result: ExportResult
    cached: bool


def _child_error(rc: int, stderr: str) -> str:
    if rc < 0:
        return f"converter crashed ({signal.Signals(-rc).name})"
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip() and not ln.startswith(("W0000", "I0000"))]
    return lines[-1] if lines else f"converter failed (exit {rc})"


def export_target(name: str, model: FloatModel, model_id: str, calib: CalibrationSet, opts: ExportOptions,
                  cache: Cache, ui: UI, timeout_s: float = 1800) -> Exported:
    """Export `name` from `model` (identified by `model_id`); reuse a cached export when the key matches."""
    target = get_target(name)
    key = cache_key("export", name, target.version, model_id, calib.fingerprint(), asdict(opts))
    hit = cache.get(key)
    if hit is not None:
        return Exported(hit, ExportResult.from_dict(json.loads((hit / "export.json").read_text())), True)
    with tempfile.TemporaryDirectory(prefix=f"edgepipe-{name}-") as tmp:
        work = Path(tmp)
        calib.save(work / "calib.npz")
        job = {"target": name, "calibration": str(work / "calib.npz"), "calib_source": calib.source,
               "calib_sampling": calib.sampling.value, "calib_seed": calib.seed,
               "saved_model_dir": str(model.saved_model_dir),
               "keras_path": str(model.keras_path) if model.keras_path else None,
               "input_shape": list(model.input_shape), "out_dir": str(work / "out"),
               "options": asdict(opts), "result": str(work / "result.json")}
        (work / "job.json").write_text(json.dumps(job))
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO_ROOT)}
        with ui.task(f"{name}: converting and calibrating ({len(calib)} samples)"):
            try:
                done = subprocess.run([sys.executable, "-m", "targets.worker", str(work / "job.json")],
                                      capture_output=True, text=True, env=env, timeout=timeout_s)
            except subprocess.TimeoutExpired:
                raise TargetError(f"{name}: conversion timed out after {timeout_s:.0f} s") from None
        if done.returncode != 0:
            raise TargetError(f"{name}: {_child_error(done.returncode, done.stderr)}")
        result = ExportResult.from_dict(json.loads((work / "result.json").read_text()))
        (work / "out" / "export.json").write_text(json.dumps(result.to_dict()))
        entry = cache.put(key, work / "out")
    return Exported(entry, result, False)
