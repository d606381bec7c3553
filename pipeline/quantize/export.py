"""Run one target's export in a child process, cached by content hash."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calibration import CalibrationSet
from pipeline.cache import Cache, cache_key
from pipeline.errors import TargetError
from pipeline.ui import UI
from targets import ExportOptions, ExportResult, FloatModel, get_target
from targets.base import float_layer_variants
from targets.child import run_module

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ExportRequest:
    """What every export of one target from one float model shares: the target, the model and its id (part of
    every cache key), the calibration set, the cache, the progress UI and the child process's time limit."""

    name: str
    model: FloatModel
    model_id: str
    calib: CalibrationSet
    cache: Cache
    ui: UI
    timeout_s: float = 1800


@dataclass(frozen=True)
class Exported:
    folder: Path  # holds the files of `result`
    result: ExportResult
    cached: bool


# The worker asks Linux to SIGKILL it when the build process dies (kill -9 of the build must not leave a
# converter running as an orphan), then checks the build did not die before that took effect.


def _plain_name(name: object) -> bool:
    """A file name inside the target's folder: no separators, no '..', nothing the OS treats specially."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name
            and "\x00" not in name)


def checked_result(name: str, result: ExportResult, folder: Path) -> ExportResult:
    """The files an export lists are copied into OUT/<target>/ by name: each must be a plain file name
    that is really in `folder`, so no export (or edited cache entry) can write outside the run directory."""
    names = [result.artifact, *([result.float_artifact] if result.float_artifact else []), *result.files]
    for f in names:
        if not _plain_name(f) or not (folder / f).is_file():
            raise TargetError(f"{name}: the export lists {f!r}, which is not a file in its output folder")
    if result.artifact not in result.files:
        raise TargetError(f"{name}: the export's artifact {result.artifact!r} is not among its files")
    return result


def _read_result(name: str, path: Path, folder: Path) -> ExportResult:
    try:
        result = ExportResult.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TargetError(f"{name}: unreadable export result {path.name} ({type(err).__name__})") from None
    return checked_result(name, result, folder)


def _child_error(rc: int, stderr: str) -> str:
    if rc < 0:
        return f"converter crashed ({signal.Signals(-rc).name})"
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip() and not ln.startswith(("W0000", "I0000"))]
    return lines[-1] if lines else f"converter failed (exit {rc})"


def export_target(req: ExportRequest, opts: ExportOptions) -> Exported:
    """Export `req.name` from `req.model` (identified by `req.model_id`); reuse a cached export when the key
    matches."""
    batch = export_batch(req, [opts], label=f"{req.name}: converting and calibrating ({len(req.calib)} samples)")
    if not batch.exported:
        raise TargetError(batch.error or f"{req.name}: the converter wrote no result")
    return batch.exported[0]


def _job(name: str, model: FloatModel, calib: CalibrationSet, work: Path) -> dict[str, Any]:
    calib.save(work / "calib.npz")
    return {"target": name, "calibration": str(work / "calib.npz"), "calib_source": calib.source,
            "calib_sampling": calib.sampling.value, "calib_seed": calib.seed,
            "saved_model_dir": str(model.saved_model_dir),
            "keras_path": str(model.keras_path) if model.keras_path else None,
            "input_shape": list(model.input_shape),
            "inputs": [[n, list(shape)] for n, shape in model.inputs],
            "converted": str(model.converted) if model.converted else None}


def _run_worker(name: str, job: dict[str, Any], work: Path, label: str, ui: UI,
                timeout_s: float) -> subprocess.CompletedProcess[str]:
    (work / "job.json").write_text(json.dumps(job))
    with ui.task(label):
        try:
            return run_module("targets.worker", [str(work / "job.json")], timeout_s=timeout_s, path=[REPO_ROOT],
                              preload=True)
        except subprocess.TimeoutExpired:
            raise TargetError(f"{name}: {label} timed out after {timeout_s:.0f} s") from None


def _cached_export(name: str, key: str, cache: Cache, ui: UI) -> Exported | None:
    hit = cache.get(key)
    if hit is None:
        return None
    try:
        return Exported(hit, _read_result(name, hit / "export.json", hit), True)
    except TargetError as err:
        ui.warn(f"cache entry {key[:12]} not reused: {err}")
        return None


@dataclass(frozen=True)
class Batch:
    exported: list[Exported]  # in the order asked for, up to the first one that failed
    error: str | None  # why the rest are missing


def _keys(req: ExportRequest, options: list[ExportOptions]) -> list[str]:
    version = get_target(req.name).version
    return [cache_key("export", req.name, version, req.model_id, req.calib.fingerprint(), asdict(o)) for o in options]


def _collect(name: str, folder: Path, todo: list[int], keys: list[str], cache: Cache) -> dict[int, Exported]:
    """Cache the results a worker wrote into folder/out<i> (result<i>.json), in order, up to the first missing."""
    done = {}
    for i in todo:
        if not (folder / f"result{i}.json").is_file():
            break
        result = _read_result(name, folder / f"result{i}.json", folder / f"out{i}")
        (folder / f"out{i}" / "export.json").write_text(json.dumps(result.to_dict()))
        done[i] = Exported(cache.put(keys[i], folder / f"out{i}"), result, False)
    return done


def _in_order(n: int, done: dict[int, Exported], error: str | None) -> Batch:
    ordered = []
    for i in range(n):
        if i not in done:
            break
        ordered.append(done[i])
    return Batch(ordered, error if len(ordered) < n else None)


def export_batch(req: ExportRequest, options: list[ExportOptions], label: str | None = None) -> Batch:
    """Several exports of one target, the uncached ones in one child process (one runtime import, one
    conversion), each cached under its own key; `label` names the progress task."""
    name, cache = req.name, req.cache
    keys = _keys(req, options)
    done = {i: hit for i, k in enumerate(keys) if (hit := _cached_export(name, k, cache, req.ui)) is not None}
    todo, error = [i for i in range(len(options)) if i not in done], None
    if todo:
        with tempfile.TemporaryDirectory(prefix=f"edgepipe-{name}-") as tmp:
            work = Path(tmp)
            job = _job(name, req.model, req.calib, work)
            job["exports"] = [{"options": asdict(options[i]), "out_dir": str(work / f"out{i}"),
                               "result": str(work / f"result{i}.json")} for i in todo]
            proc = _run_worker(name, job, work, label or f"{name}: {len(todo)} int8 variant(s)", req.ui, req.timeout_s)
            done.update(_collect(name, work, todo, keys, cache))
            if proc.returncode != 0:
                error = f"{name}: {_child_error(proc.returncode, proc.stderr)}"
    return _in_order(len(options), done, error)


def target_sensitivity(req: ExportRequest, opts: ExportOptions, eval_set: tuple[np.ndarray, np.ndarray],
                       float_variants: int = 0, metric: tuple[str, bool] = ("accuracy", True),
                       ) -> tuple[list[dict[str, Any]], Batch]:
    """The target's per-layer sensitivity table (targets.sensitivity.sensitivity) on `eval_set` (x, y), cached; with
    `float_variants` = k, also the exports keeping the 1..k most sensitive layers in float
    (targets.base.float_layer_variants), built in the same child process. `metric`: (spec, higher is better)."""
    name, (eval_x, eval_y) = req.name, eval_set
    digest = hashlib.sha256(np.ascontiguousarray(eval_x, np.float32).tobytes() + np.asarray(eval_y).tobytes())
    key = cache_key("sensitivity", name, get_target(name).version, req.model_id, req.calib.fingerprint(), asdict(opts),
                    digest.hexdigest(), *([] if metric == ("accuracy", True) else list(metric)))
    hit = req.cache.get(key)
    if hit is not None and (hit / "sensitivity.json").is_file():
        table = list(json.loads((hit / "sensitivity.json").read_text()))
        return table, export_batch(req, float_layer_variants(opts, table, float_variants))
    with tempfile.TemporaryDirectory(prefix=f"edgepipe-{name}-") as tmp:
        work = Path(tmp)
        np.savez(work / "eval.npz", x=eval_x.astype(np.float32), y=eval_y)
        (work / "out").mkdir()
        job = {**_job(name, req.model, req.calib, work), "mode": "sensitivity", "options": asdict(opts),
               "out_dir": str(work / "scratch"), "eval": str(work / "eval.npz"),
               "result": str(work / "out" / "sensitivity.json"), "float_variants": float_variants,
               "metric": metric[0], "higher_is_better": metric[1],
               "variants_dir": str(work / "variants")}
        label = f"{name}: per-layer sensitivity" + (f" and {float_variants} float-layer variant(s)"
                                                    if float_variants else "")
        proc = _run_worker(name, job, work, label, req.ui, req.timeout_s)
        if not (work / "out" / "sensitivity.json").is_file():
            raise TargetError(f"{name}: sensitivity: {_child_error(proc.returncode, proc.stderr)}")
        table = list(json.loads((work / "out" / "sensitivity.json").read_text()))
        req.cache.put(key, work / "out")
        variants = float_layer_variants(opts, table, float_variants)
        done = _collect(name, work / "variants", list(range(len(variants))), _keys(req, variants), req.cache)
        error = None if proc.returncode == 0 else f"{name}: {_child_error(proc.returncode, proc.stderr)}"
    return table, _in_order(len(variants), done, error)
