"""`edgepipe build`: reference -> stages -> int8 per target -> verification -> report, in a temporary
directory that is moved into place only when the run is complete."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from pipeline import interrupts
from pipeline.build_target import EVAL_REL, VAL_REL, TargetJob, one_target
from pipeline.cache import Cache
from pipeline.compress.runner import model_metrics, run_stages
from pipeline.config import Config, TargetSection
from pipeline.errors import EdgepipeError, UsageError
from pipeline.inputs.calib_source import calibration_set
from pipeline.inputs.data import write_eval
from pipeline.inputs.models import ModelFormat
from pipeline.inputs.source import Source, load_source
from pipeline.measure.metric import Labels
from pipeline.measure.scores import REFERENCE_SCORES_REL, Scores, save_scores, scores_of
from pipeline.measure.verify import Bench
from pipeline.quantize.qat import QatConfig, QatInputs
from pipeline.quantize.unroll import unrolled
from pipeline.report.document import finalize, new_report, summary_table, write_report
from pipeline.report.schema import StageEntry
from pipeline.ui import UI
from targets import FloatModel, runner
from targets.runner_arrays import note_read


@dataclass(frozen=True)
class BuildRequest:
    config: Config
    targets: tuple[str, ...]
    out: Path
    device: Any = None  # None: this host; else a targets.ssh.SshDevice
    allow_unsafe: bool = False
    use_cache: bool = True
    bench: Bench | None = None  # a device profile's measurement settings; a [targets.X] key set explicitly wins
    # A search trial: every number is the validation split's and the test split is never read (the search
    # chooses on it; the promoted trial is built again normally)
    validation_only: bool = False


def measurement_settings(section: TargetSection, profile: Bench | None) -> Bench:
    """How a target is measured: the keys [targets.X] sets explicitly, else the device profile's values,
    else the section's defaults."""
    base = Bench(section.warmup, section.iterations, section.threads) if profile is None else profile
    explicit = section.model_dump(include={"warmup", "iterations", "threads"} & section.model_fields_set)
    return base.overridden(explicit)


@dataclass(frozen=True)
class Refs:
    """The reference model's scores on the test split (what the shipped artifacts' drops are reported against)
    and on the validation split (what every choice's drop is judged against)."""

    test: Scores
    val: Scores


def _reference_scores(src: Source, validation_only: bool = False) -> Refs:
    from pipeline.inputs.models import predict

    ref, d, metric = src.reference, src.data, src.metric
    val = predict(ref, d.x_val, output=metric.output_index)
    assert d.y_val is not None
    val_scores = scores_of(val, d.y_val, metric, d.x_val, "val")
    if validation_only:
        return Refs(val_scores, val_scores)
    test = src.reference_outputs if src.reference_outputs is not None else \
        predict(ref, d.x_test, output=metric.output_index)
    note_read("reference: test split")
    return Refs(scores_of(test, d.y_test, metric, d.x_test, "test"), val_scores)


def _save_reference(src: Source, run_dir: Path, refs: Refs) -> dict[str, Any]:
    ref = src.reference
    metric = {"name": src.metric.name, "value": refs.test.value, "split": "test", "samples": refs.test.samples,
              "higher_is_better": src.metric.higher_is_better, "validation_value": refs.val.value}
    if ref.keras_model is not None:
        dest = run_dir / "reference" / "model.keras"
        dest.parent.mkdir(parents=True)
        ref.keras_model.save(dest)
        m = model_metrics(ref.keras_model, src.data, src.metric.spec, src.metric.output_index, None, "test",
                          value=refs.test.value)
        return {"path": "reference/model.keras", **m, "metric": metric}
    shutil.copytree(ref.path, run_dir / "reference" / "saved_model")  # the user's model, even when revived
    size = sum(f.stat().st_size for f in (run_dir / "reference" / "saved_model").rglob("*") if f.is_file())
    return {"path": "reference/saved_model", "accuracy": refs.test.value, "params": None, "macs": None,
            "size_bytes": size, "metric": metric}


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
    refs = _reference_scores(src, req.validation_only)
    report["reference"] = _save_reference(src, run_dir, refs)
    report["reference"]["format"] = src.reference.format.value
    if src.reference.notes:  # how the model had to be adapted to load (legacy .h5, revived SavedModel)
        report["reference"]["notes"] = list(src.reference.notes)
    ref = src.reference
    _write_splits(req, src, refs, run_dir, report)
    if ref.several_inputs or ref.several_outputs:
        report["eval_set"].update(inputs=list(ref.input_names), outputs=list(ref.output_names))
        _refuse_stages(cfg)
    if src.metric.labels is Labels.ANY and (cfg.distill or cfg.prune or cfg.decompose):
        raise UsageError(f"{cfg.name}: the compression stages train with a named metric's loss; with [metric] "
                         f"function remove [distill], [prune] and [decompose] (quantization only)")
    if cfg.metric is not None:
        report["metric"] = src.metric.to_report()
    outcome = run_stages(cfg, src, run_dir, cache, ui)
    if outcome is not None:
        stages = _stage_metrics(outcome, src, refs)
        report["stages"] = [s.as_dict() for s in stages]
        final, model_id, keras_path = outcome.model, outcome.model_id, outcome.keras_path
        float_value = stages[-1].accuracy  # on the validation split
    else:
        final, model_id, keras_path = src.reference.keras_model, src.model_id, None
        float_value = refs.val.value
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
        s = cfg.targets.settings(name)
        job = TargetJob(name, fm, model_id, calib, cfg, run_dir, cache, ui, src.metric,
                        measurement_settings(s, req.bench), refs.test, refs.val, float_value, req.device, qat,
                        VAL_REL if req.validation_only else EVAL_REL)
        report["targets"][name] = one_target(job).as_dict()  # typed while built; the report's dict form
    return finalize(report)


def _write_splits(req: BuildRequest, src: Source, refs: Refs, run_dir: Path, report: dict[str, Any]) -> None:
    """OUT/data/val.npz and (unless a search trial) OUT/data/eval.npz with the reference's per-sample scores."""
    names, output = src.reference.output_names, src.metric.output or ""
    write_eval(run_dir / VAL_REL, src.data, names, output, split="val")
    report["validation_set"] = {"path": VAL_REL, "samples": refs.val.samples, "source": src.validation}
    if req.validation_only:
        report["eval_set"] = {"path": VAL_REL, "samples": refs.val.samples, "split": "validation"}
        return
    write_eval(run_dir / EVAL_REL, src.data, names, output)
    report["eval_set"] = {"path": EVAL_REL, "samples": int(src.data.y_test.shape[0]), "split": "test"}
    if refs.test.per_sample is not None:  # `edgepipe verify` pairs a device's run with the reference's
        save_scores(run_dir / REFERENCE_SCORES_REL, refs.test)
        report["eval_set"]["reference_scores"] = REFERENCE_SCORES_REL


def _stage_metrics(outcome: Any, src: Source, refs: Refs) -> list[StageEntry]:
    """Each stage's entry with its `metric` on the validation split, its drop against the reference's there,
    with interval."""
    from pipeline.measure.scores import metric_entry

    assert src.data.y_val is not None
    entries = []
    for entry, out in zip(outcome.entries, outcome.val_outputs, strict=True):
        if out is not None:
            mine = scores_of(out, src.data.y_val, src.metric, src.data.x_val, "val")
            metric, _ = metric_entry(src.metric, refs.val, mine.value, mine.per_sample)
            entry = entry.model_copy(update={"metric": metric})
        entries.append(entry)
    return entries


def _qat_inputs(cfg: Config, src: Source) -> QatInputs | None:
    """The training data for quantization-aware fine-tuning, when the task is a classifier's."""
    if src.metric.labels is not Labels.CLASSES:
        return None
    from pipeline.inputs.arrays import is_lazy

    d, settings = src.data, QatConfig(epochs=cfg.quantize.qat_epochs)
    if is_lazy(d.x_train) or is_lazy(d.x_val):
        return QatInputs((), settings, cfg.quantize.qat, "data read a batch at a time: QAT trains in memory")
    import numpy as np

    # QAT's before/after is judged on the validation split, never the test split
    arrays = tuple(np.asarray(a) for a in (d.x_train, d.y_train, d.x_val, d.y_val))  # in memory already
    return QatInputs(arrays, settings, first=cfg.quantize.qat)


def build(req: BuildRequest, ui: UI) -> dict[str, Any]:
    """Build into a temporary sibling of req.out and move it into place; nothing is left on failure."""
    out = req.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    tmp.chmod(0o777 & ~current_umask())  # mkdtemp's 0700 would survive the rename: the user's umask instead
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


def current_umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it back at once
    os.umask(mask)
    return mask


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
