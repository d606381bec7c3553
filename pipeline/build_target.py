"""One target of `edgepipe build`: its artifact chosen on the validation split (the accuracy-aware ladder,
precision auto, ship_faster_float), then the one that ships measured once on the test split."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from calibration import CalibrationSet
from pipeline.cache import Cache
from pipeline.config import Config, PrecisionSetting, TargetSection
from pipeline.errors import TargetError
from pipeline.measure.metric import Metric
from pipeline.measure.scores import Scores
from pipeline.measure.verify import Bench, Verifier, target_entry
from pipeline.quantize.export import Exported, ExportRequest, export_target
from pipeline.quantize.qat import QatInputs
from pipeline.report.schema import Selection, TargetEntry
from pipeline.ui import UI
from targets import ExportOptions, FloatModel, Precision, TargetName, get_target

EVAL_REL = "data/eval.npz"  # the test split: read once per shipped artifact, and once for the reference
VAL_REL = "data/val.npz"  # the validation split: every choice of the build is judged on it

LADDER_SKIPPED = ("accuracy-aware: skipped for a model with several inputs or outputs (no fallback calibrations, "
                  "equalization or float layers); the int8 artifact is exported once and judged against the budget")


@dataclass(frozen=True)
class TargetJob:
    """What one target's build needs: the float model, calibration, the reference's scores, where to measure."""

    name: str
    model: FloatModel
    model_id: str
    calib: CalibrationSet
    config: Config
    run_dir: Path
    cache: Cache
    ui: UI
    metric: Metric
    bench: Bench
    reference_test: Scores
    reference_val: Scores
    float_value: float | None  # the float model's metric on the validation split
    device: Any = None  # None: this host; else a targets.ssh.SshDevice
    qat: QatInputs | None = None
    test_rel: str = EVAL_REL  # what the shipped artifact is reported on (a search trial: VAL_REL)

    @property
    def export_request(self) -> ExportRequest:
        """What its exports share (pipeline.quantize.export)."""
        return ExportRequest(self.name, self.model, self.model_id, self.calib, self.cache, self.ui)

    @property
    def section(self) -> TargetSection:
        return self.config.targets.settings(self.name)

    @property
    def max_drop(self) -> float | None:
        b = self.config.budget
        return b.max_accuracy_drop if b.max_accuracy_drop is not None else b.max_metric_drop

    @property
    def several_io(self) -> bool:
        return bool(self.model.inputs) or self.metric.output is not None

    def verifier(self) -> Verifier:
        return Verifier(self.run_dir, self.config.budget, self.bench, self.ui, TargetName(self.name), self.device,
                        self.metric, self.section.deploy_on_host)


def _export(job: TargetJob) -> tuple[Exported, Any]:
    """The target's artifact in its configured precision; int8 under a budget, or with [quantize] qat, goes
    up the accuracy-aware ladder on the validation split (its Outcome is returned too)."""
    from pipeline.quantize import accuracy_aware

    cfg = job.config
    precision = job.section.precision.fixed or Precision.INT8  # auto goes through _auto
    opts = ExportOptions(calibration_method=cfg.quantize.calibration.value, precision=precision,
                         kept_precision=job.section.kept_precision)
    exp = export_target(job.export_request, opts)
    max_drop = job.max_drop
    if cfg.quantize.qat and max_drop is None:
        max_drop = float("inf")  # no budget: QAT ships whatever it measures
    if max_drop is None or precision is not Precision.INT8 or job.several_io:
        return exp, None
    aj = accuracy_aware.Job(job.name, job.model, job.model_id, job.calib, job.run_dir / VAL_REL,
                            job.reference_val.value, max_drop, job.cache, job.ui, job.metric, job.bench.threads,
                            job.qat)  # attempts run with the threads that verification will use
    aware = accuracy_aware.search(aj, exp, opts)
    return aware.best.exported, aware


def _auto(job: TargetJob) -> tuple[Exported, Any, TargetEntry]:
    """precision = "auto": every candidate measured on the validation split, the winner on the test split."""
    from pipeline.quantize.auto_precision import NO_LADDER_SEVERAL_IO, AutoJob, run_auto

    aj = AutoJob(job.name, job.model, job.model_id, job.calib, job.run_dir, VAL_REL, job.reference_val.value,
                 job.float_value, job.config.budget, None if job.several_io else job.max_drop,
                 job.config.quantize.calibration.value, job.bench, job.cache, job.ui, job.metric, job.device,
                 qat=job.qat, test_rel=job.test_rel, reference_test=job.reference_test,
                 reference_val=job.reference_val, deploy_on_host=job.section.deploy_on_host)
    return run_auto(replace(aj, no_ladder=NO_LADDER_SEVERAL_IO) if job.several_io else aj)


class Unmeasured(TargetError):
    def __init__(self, rel: str, precision: str, err: TargetError) -> None:
        super().__init__(str(err))
        self.rel, self.precision = rel, precision


def _fixed(job: TargetJob) -> tuple[Exported, Any, TargetEntry]:
    """The configured precision: exported (int8 up the ladder under a budget), copied into OUT/<target>/; the
    float twin instead when ship_faster_float decides so; the one that ships measured on the test split."""
    from pipeline.measure import faster_float

    exp, aware = _export(job)
    folder = job.run_dir / job.name  # the run directory names each folder after its target
    folder.mkdir(parents=True, exist_ok=True)
    for f in exp.result.files:
        shutil.copy2(exp.folder / f, folder / f)
    job.ui.info(f"{job.name}: {exp.result.precision} artifact {'reused from cache' if exp.cached else 'built'}")
    rel = f"{job.name}/{exp.result.artifact}"
    rel_float = f"{job.name}/{exp.result.float_artifact}" if exp.result.float_artifact else None
    v = job.verifier()
    try:
        choice = None
        if job.section.ship_faster_float and job.section.precision is PrecisionSetting.INT8 and rel_float:
            choice = faster_float.decide(v, rel, rel_float, VAL_REL, job.reference_val)
        if choice is not None and choice.ship_float:
            assert rel_float is not None
            entry = target_entry(v, rel_float, None, job.test_rel, job.reference_test, job.float_value, "float32")
            entry = entry.model_copy(update={"int8": choice.int8, "float_artifact": rel_float})
            job.ui.warn(f"{job.name}: {choice.why}")
        else:
            entry = target_entry(v, rel, rel_float, job.test_rel, job.reference_test, job.float_value,
                                 exp.result.precision)
        if choice is not None:
            entry = entry.noted(choice.why)
    except TargetError as err:  # built but not measurable: `edgepipe verify` can measure it again
        raise Unmeasured(rel, exp.result.precision, err) from None
    selection = _selection(job, aware, entry, 1 + (choice is not None and choice.ship_float))
    return exp, aware, entry.model_copy(update={"selection": selection})


def _selection(job: TargetJob, aware: Any, entry: TargetEntry, extra: int = 1) -> Selection:
    """What the report says of the choice: on which split, how many candidates, the chosen one's validation
    value beside its test value."""
    best = aware.best if aware is not None else None
    return Selection(split="validation", samples=job.reference_val.samples,
                     candidates=len(aware.attempts) if aware is not None else extra,
                     validation_value=None if best is None else best.accuracy,
                     validation_drop=None if best is None else best.drop,
                     test_value=entry.accuracy, test_drop=entry.accuracy_drop)


def one_target(job: TargetJob) -> TargetEntry:
    """The report's entry of one target; a target that fails is an entry with its error, the others go on."""
    from pipeline.measure.verify import warn_if_int8_slower

    s = job.section
    try:
        exp, aware, entry = (_auto if s.precision is PrecisionSetting.AUTO else _fixed)(job)
    except Unmeasured as err:
        job.ui.warn(str(err))
        return TargetEntry(artifact=err.rel, error=str(err), passed=False, violations=[], precision=err.precision,
                           device="host" if job.device is None else job.device.url)
    except TargetError as err:
        job.ui.warn(str(err))
        return TargetEntry(error=str(err), passed=False, violations=[], precision=s.precision.value, device="host")
    entry = _from_export(job, exp, aware, entry)
    note = get_target(job.name).host_latency_note
    if note and entry.device == "host" and note not in entry.notes:
        entry = entry.noted(note)
    if s.precision is PrecisionSetting.INT8 and not s.ship_faster_float:
        warn_if_int8_slower(entry, job.name, job.ui)
    return _warn_unresolved(job, entry)


def _from_export(job: TargetJob, exp: Exported, aware: Any, entry: TargetEntry) -> TargetEntry:
    """What the export and the accuracy-aware ladder add to the measured entry: calibration, converter versions,
    layers kept out of int8, the export's and the ladder's notes first, the ladder's attempts."""
    s = job.section
    notes = list(exp.result.notes) + entry.notes
    if job.several_io and s.precision in (PrecisionSetting.INT8, PrecisionSetting.AUTO) and job.max_drop is not None:
        notes.append(LADDER_SKIPPED)
    fields: dict[str, Any] = {}
    if aware is not None:
        fields = aware.report_fields()
        if exp is not aware.best.exported:  # auto shipped another candidate than the ladder's choice
            fields.pop("cross_layer_equalization", None)
            fields.pop("equalization", None)
        notes += aware.notes
    return entry.model_copy(update={
        "calibration": exp.result.calibration, "cached": exp.cached, "converter_versions": exp.result.versions,
        "float_layers": list(exp.result.float_layers), "int16_layers": list(exp.result.int16_layers),
        **fields, "notes": notes})


def _warn_unresolved(job: TargetJob, entry: TargetEntry) -> TargetEntry:
    """A warning (and a note) when the test split is too small for the drop's interval to resolve the budget."""
    from pipeline.measure.intervals import DropInterval, resolution_warning

    m, limit = entry.metric, job.max_drop
    if m is None or limit is None or not m.interval or m.drop is None:
        return entry
    if m.level is None or m.method is None or m.samples is None:  # an interval always comes with them
        return entry
    iv = DropInterval(m.drop, m.interval[0], m.interval[1], m.level, m.method, m.samples, m.discordant,
                      m.reference_value)
    msg = resolution_warning(iv, limit, "test")
    if not msg:
        return entry
    job.ui.warn(f"{job.name}: {msg}")
    return entry.noted(msg)
