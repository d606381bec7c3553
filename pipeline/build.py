"""`edgepipe build`: reference -> stages -> int8 per target -> verification -> report, in a temporary
directory that is moved into place only when the run is complete."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

from pipeline import interrupts
from pipeline.cache import Cache
from pipeline.compress.runner import model_metrics, run_stages
from pipeline.config import Config, PrecisionSetting, TargetSection
from pipeline.errors import EdgepipeError, TargetError, UsageError
from pipeline.inputs.calib_source import calibration_set
from pipeline.inputs.data import write_eval
from pipeline.inputs.models import ModelFormat
from pipeline.inputs.source import Source, load_source
from pipeline.measure.metric import ACCURACY, Labels, Metric
from pipeline.measure.verify import Bench, target_entry
from pipeline.quantize.export import Exported, export_target
from pipeline.quantize.qat import QatConfig, QatInputs
from pipeline.quantize.unroll import unrolled
from pipeline.report.document import finalize, new_report, summary_table, write_report
from pipeline.ui import UI
from targets import ExportOptions, FloatModel, Precision, TargetName, get_target, runner

EVAL_REL = "data/eval.npz"


@dataclass(frozen=True)
class BuildRequest:
    config: Config
    targets: tuple[str, ...]
    out: Path
    device: Any = None  # None: this host; else a targets.ssh.SshDevice
    allow_unsafe: bool = False
    use_cache: bool = True
    bench: Bench | None = None  # a device profile's measurement settings; a [targets.X] key set explicitly wins


def measurement_settings(section: TargetSection, profile: Bench | None) -> Bench:
    """How a target is measured: the keys [targets.X] sets explicitly, else the device profile's values,
    else the section's defaults."""
    base = Bench(section.warmup, section.iterations, section.threads) if profile is None else profile
    explicit = section.model_dump(include={"warmup", "iterations", "threads"} & section.model_fields_set)
    return base.overridden(explicit)


def _save_reference(src: Source, run_dir: Path) -> dict[str, Any]:
    ref = src.reference
    if ref.keras_model is not None:
        dest = run_dir / "reference" / "model.keras"
        dest.parent.mkdir(parents=True)
        ref.keras_model.save(dest)
        return {"path": "reference/model.keras", **model_metrics(ref.keras_model, src.data, src.metric.spec,
                                                                  src.metric.output_index, src.reference_outputs)}
    from pipeline.inputs.models import metric_value, predict

    shutil.copytree(ref.path, run_dir / "reference" / "saved_model")  # the user's model, even when revived
    size = sum(f.stat().st_size for f in (run_dir / "reference" / "saved_model").rglob("*") if f.is_file())
    pred = src.reference_outputs if src.reference_outputs is not None else predict(ref, src.data.x_test)
    value = metric_value(pred, src.data.y_test, src.metric.spec, src.data.x_test)
    return {"path": "reference/saved_model", "accuracy": value,
            "params": None, "macs": None, "size_bytes": size}


def _float_model(src: Source, keras_model: Any, keras_path: Path | None, scratch: Path) -> FloatModel:
    shape = tuple(int(d) for d in src.reference.input_shape)  # type: ignore[arg-type]
    ref = src.reference
    inputs = tuple((n, tuple(int(d or 1) for d in s)) for n, s in zip(ref.input_names, ref.input_shapes, strict=True)) \
        if ref.several_inputs else ()
    if keras_model is None:
        return FloatModel(src.reference.saved_model_dir, None, shape)
    keras_model, changed = unrolled(keras_model)
    if changed:
        keras_path = None  # export the unrolled twin, not the stage's file
    saved = scratch / "saved_model"
    keras_model.export(str(saved), format="tf_saved_model", verbose=False)
    if keras_path is None:
        keras_path = scratch / "model.keras"
        keras_model.save(keras_path)
    return FloatModel(saved, keras_path, shape, inputs=inputs)


def _refuse_stages(cfg: Config) -> None:
    """The compression stages train models with one input and one output."""
    stages = [name for name, section in (("distill", cfg.distill), ("prune", cfg.prune), ("decompose", cfg.decompose))
              if section is not None]
    if stages:
        raise UsageError(f"{cfg.name}: [{stages[0]}] with several inputs or outputs: the compression stages train "
                         f"models with one input and one output; remove {', '.join(f'[{s}]' for s in stages)} "
                         "(quantization only)")


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("tensorflow-cpu", "keras", "ai-edge-litert", "openvino", "nncf", "onnx", "onnxruntime", "tf2onnx"):
        try:
            out[dist] = version(dist)
        except Exception:
            continue
    return out


def _build_into(req: BuildRequest, run_dir: Path, scratch: Path, ui: UI) -> dict[str, Any]:
    # --no-cache: entries go to the scratch folder, removed with it
    cfg, cache = req.config, Cache(None if req.use_cache else scratch / "no-cache", enabled=req.use_cache)
    report = new_report()
    report["budget"] = cfg.budget.model_dump()
    report["config"] = cfg.name
    src = load_source(cfg, allow_unsafe=req.allow_unsafe, cache=cache, ui=ui, work_dir=scratch)
    report["reference"] = _save_reference(src, run_dir)
    report["reference"]["format"] = src.reference.format.value
    if src.reference.notes:  # how the model had to be adapted to load (legacy .h5, revived SavedModel)
        report["reference"]["notes"] = list(src.reference.notes)
    ref = src.reference
    write_eval(run_dir / EVAL_REL, src.data, ref.output_names, src.metric.output or "")
    report["eval_set"] = {"path": EVAL_REL, "samples": int(src.data.y_test.shape[0])}
    if ref.several_inputs or ref.several_outputs:
        report["eval_set"].update(inputs=list(ref.input_names), outputs=list(ref.output_names))
        _refuse_stages(cfg)
    if src.metric.labels is Labels.ANY and (cfg.distill or cfg.prune or cfg.decompose):
        raise UsageError(f"{cfg.name}: the compression stages train with a named metric's loss; with [metric] "
                         f"function remove [distill], [prune] and [decompose] (quantization only)")
    if cfg.metric is not None:
        report["metric"] = src.metric.to_report()
    outcome = run_stages(cfg, src.reference.keras_model, src.model_id, src.data, src.data_id, run_dir, cache, ui,
                         src.metric.spec, src.metric.labels.value)
    if outcome is not None:
        report["stages"] = outcome.entries
        final, model_id, keras_path = outcome.model, outcome.model_id, outcome.keras_path
        float_acc = outcome.entries[-1]["accuracy"]
    else:
        final, model_id, keras_path = src.reference.keras_model, src.model_id, None
        float_acc = report["reference"]["accuracy"]
        if src.reference.format is not ModelFormat.SAVED_MODEL:
            keras_path = run_dir / "reference" / "model.keras"
    fm = _float_model(src, final, keras_path, scratch)
    calib = calibration_set(cfg, src.data, src.preprocess, fm.input_shape, src.metric.labels is Labels.CLASSES)
    report["calibration"] = {"samples": len(calib), "sampling": calib.sampling.value, "source": calib.source,
                             "fingerprint": calib.fingerprint()[:16]}
    report["versions"] = _versions()
    report["host"] = {"cpu": runner.cpu_info()}
    qat = _qat_inputs(cfg, src)
    for name in req.targets:
        interrupts.check()
        report["targets"][name] = _one_target(name, fm, model_id, calib, req, run_dir, report, float_acc, cache, ui,
                                              src.metric, qat)
    return finalize(report)


LADDER_SKIPPED = ("accuracy-aware: skipped for a model with several inputs or outputs (no fallback calibrations, "
                  "equalization or float layers); the int8 artifact is exported once and judged against the budget")


def _several_io(fm: FloatModel, metric: Metric) -> bool:
    return bool(fm.inputs) or metric.output is not None


def _qat_inputs(cfg: Config, src: Source) -> QatInputs | None:
    """The training data for quantization-aware fine-tuning, when the task is a classifier's."""
    if src.metric.labels is not Labels.CLASSES:
        return None
    from pipeline.inputs.arrays import is_lazy

    d, settings = src.data, QatConfig(epochs=cfg.quantize.qat_epochs)
    if is_lazy(d.x_train) or is_lazy(d.x_test):
        return QatInputs((), settings, cfg.quantize.qat, "data read a batch at a time: QAT trains in memory")
    import numpy as np

    arrays = tuple(np.asarray(a) for a in (d.x_train, d.y_train, d.x_test, d.y_test))  # in memory already
    return QatInputs(arrays, settings, first=cfg.quantize.qat)


def _export(name: str, fm: FloatModel, model_id: str, calib: Any, cfg: Any, run_dir: Path, ref_acc: float,
            cache: Cache, ui: UI, metric: Metric, threads: int = 1,
            qat: QatInputs | None = None) -> tuple[Exported, Any]:
    """The target's artifact in its configured precision; int8 under a budget, or with [quantize] qat, goes
    up the accuracy-aware ladder (its Outcome is returned too), the other precisions are exported once."""
    from pipeline.quantize import accuracy_aware

    precision = cfg.targets.settings(name).precision.fixed or Precision.INT8  # auto goes through _auto
    opts = ExportOptions(calibration_method=cfg.quantize.calibration.value, precision=precision,
                         kept_precision=cfg.targets.settings(name).kept_precision)
    exp = export_target(name, fm, model_id, calib, opts, cache, ui)
    max_drop = cfg.budget.max_accuracy_drop if cfg.budget.max_accuracy_drop is not None \
        else cfg.budget.max_metric_drop
    if cfg.quantize.qat and max_drop is None:
        max_drop = float("inf")  # no budget: QAT ships whatever it measures
    if max_drop is None or precision is not Precision.INT8 or _several_io(fm, metric):
        return exp, None
    job = accuracy_aware.Job(name, fm, model_id, calib, run_dir / EVAL_REL, ref_acc, max_drop, cache, ui, metric,
                             threads, qat)  # attempts run with the threads that verification will use
    aware = accuracy_aware.search(job, exp, opts)
    return aware.best.exported, aware


def _auto(name: str, fm: FloatModel, model_id: str, calib: Any, req: BuildRequest, run_dir: Path, ref_acc: float,
          float_acc: float, cache: Cache, ui: UI, metric: Metric, bench: Bench,
          qat: QatInputs | None = None) -> tuple[Exported, Any, dict[str, Any]]:
    """precision = "auto": every candidate measured, the fastest that meets the budget ships."""
    from pipeline.quantize.auto_precision import NO_LADDER_SEVERAL_IO, AutoJob, run_auto

    cfg = req.config
    max_drop = cfg.budget.max_accuracy_drop if cfg.budget.max_accuracy_drop is not None \
        else cfg.budget.max_metric_drop
    several = _several_io(fm, metric)
    job = AutoJob(name, fm, model_id, calib, run_dir, EVAL_REL, ref_acc, float_acc, cfg.budget,
                  None if several else max_drop, cfg.quantize.calibration.value, bench, cache, ui, metric, req.device,
                  qat=qat)
    return run_auto(replace(job, no_ladder=NO_LADDER_SEVERAL_IO) if several else job)


def _fixed(name: str, fm: FloatModel, model_id: str, calib: Any, req: BuildRequest, run_dir: Path, ref_acc: float,
           float_acc: float, cache: Cache, ui: UI, metric: Metric, bench: Bench,
           qat: QatInputs | None = None) -> tuple[Exported, Any, dict[str, Any]]:
    """The configured precision: exported (int8 up the ladder under a budget), copied into OUT/<target>/, measured."""
    exp, aware = _export(name, fm, model_id, calib, req.config, run_dir, ref_acc, cache, ui, metric, bench.threads, qat)
    folder = run_dir / name  # the run directory names each folder after its target
    folder.mkdir(parents=True, exist_ok=True)
    for f in exp.result.files:
        shutil.copy2(exp.folder / f, folder / f)
    ui.info(f"{name}: {exp.result.precision} artifact {'reused from cache' if exp.cached else 'built'}")
    rel = f"{name}/{exp.result.artifact}"
    rel_float = f"{name}/{exp.result.float_artifact}" if exp.result.float_artifact else None
    try:
        entry = target_entry(run_dir, rel, rel_float, EVAL_REL, ref_acc, float_acc, req.config.budget, bench, ui,
                             TargetName(name), req.device, metric=metric, precision=exp.result.precision)
    except TargetError as err:  # built but not measurable: `edgepipe verify` can measure it again
        raise _Unmeasured(rel, exp.result.precision, err) from None
    return exp, aware, entry


class _Unmeasured(TargetError):
    def __init__(self, rel: str, precision: str, err: TargetError) -> None:
        super().__init__(str(err))
        self.rel, self.precision = rel, precision


def _one_target(name: str, fm: FloatModel, model_id: str, calib: Any, req: BuildRequest, run_dir: Path,
                report: dict[str, Any], float_acc: float, cache: Cache, ui: UI,
                metric: Metric = ACCURACY, qat: QatInputs | None = None) -> dict[str, Any]:
    from pipeline.measure.verify import ship_float_if_faster, warn_if_int8_slower

    cfg, ref_acc = req.config, report["reference"]["accuracy"]
    s = cfg.targets.settings(name)
    bench = measurement_settings(s, req.bench)
    make = _auto if s.precision is PrecisionSetting.AUTO else _fixed
    try:
        exp, aware, entry = make(name, fm, model_id, calib, req, run_dir, ref_acc, float_acc, cache, ui, metric, bench,
                                 qat)
    except _Unmeasured as err:
        ui.warn(str(err))
        return {"artifact": err.rel, "error": str(err), "passed": False, "violations": [], "precision": err.precision,
                "device": "host" if req.device is None else req.device.url}
    except TargetError as err:
        ui.warn(str(err))
        return {"error": str(err), "passed": False, "violations": [], "precision": s.precision.value,
                "device": "host"}
    entry.update(calibration=exp.result.calibration, cached=exp.cached, converter_versions=exp.result.versions)
    entry["float_layers"] = list(exp.result.float_layers)
    entry["int16_layers"] = list(exp.result.int16_layers)
    entry["notes"] = list(exp.result.notes) + entry["notes"]
    if _several_io(fm, metric) and s.precision in (PrecisionSetting.INT8, PrecisionSetting.AUTO) \
            and (cfg.budget.max_accuracy_drop is not None or cfg.budget.max_metric_drop is not None):
        entry["notes"].append(LADDER_SKIPPED)
    if aware is not None:
        fields = aware.report_fields()
        if exp is not aware.best.exported:  # auto shipped another candidate than the ladder's choice
            fields.pop("cross_layer_equalization", None)
        entry.update(fields)
        entry["notes"] += aware.notes
    note = get_target(name).host_latency_note
    if note and entry["device"] == "host" and note not in entry["notes"]:
        entry["notes"].append(note)
    if s.ship_faster_float and s.precision is PrecisionSetting.INT8:
        ship_float_if_faster(entry, run_dir, EVAL_REL, ref_acc, cfg.budget, bench, ui, TargetName(name), req.device,
                             metric=metric)
    elif s.precision is PrecisionSetting.INT8:
        warn_if_int8_slower(entry, name, ui)
    return entry


def build(req: BuildRequest, ui: UI) -> dict[str, Any]:
    """Build into a temporary sibling of req.out and move it into place; nothing is left on failure."""
    out = req.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    scratch = Path(tempfile.mkdtemp(prefix=f"edgepipe-scratch-{os.getpid()}-"))
    try:
        ui.log_to(tmp / "build.log")
        report = _build_into(req, tmp, scratch, ui)
        interrupts.check()
        write_report(tmp, report)
        _render_html(tmp, report, ui)
        interrupts.check()
        ui.log_to(None)
        replace_dir(tmp, out)
        failed_log(out).unlink(missing_ok=True)  # an earlier failure's log would only mislead now
    except BaseException as err:
        if isinstance(err, Exception) and not isinstance(err, EdgepipeError):  # a bug: keep its traceback
            ui.keep_log(err, failed_log(out))
        ui.log_to(None)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    ui.console.print(summary_table(report))
    ui.info(f"report: {out / 'report.json'}  {out / 'report.html'}")
    return report


def failed_log(out: Path) -> Path:
    """Where the build.log of a build that ended in an internal error is kept: OUT.failed-build.log, next to
    the run directory (the run's own temporary folder is removed)."""
    return out.with_name(f"{out.name}.failed-build.log")


def _render_html(run_dir: Path, report: dict[str, Any], ui: UI) -> None:
    from pipeline.report.html import render_html

    with ui.task("rendering report.html"):
        render_html(report, run_dir)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_stale(out: Path) -> None:
    """Remove what a killed build (SIGKILL: no clean-up ran) left: `.OUT.partial-PID-*` of dead processes;
    a `.OUT.old-PID` of a dead process goes back to OUT when OUT is missing."""
    for leftover in out.parent.glob(f".{out.name}.partial-*"):
        pid = leftover.name.rsplit(".partial-", 1)[1].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)
    for old in out.parent.glob(f".{out.name}.old-*"):
        pid = old.name.rsplit(".old-", 1)[1]
        if pid.isdigit() and not _alive(int(pid)):
            if out.exists():
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(old, out)


def replace_dir(src: Path, dest: Path) -> None:
    """Move a finished run into place; an older run at `dest` is replaced only now, and restored if the
    second rename fails."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
    try:
        os.replace(src, dest)
    except BaseException:
        if old is not None and not dest.exists():
            os.replace(old, dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
