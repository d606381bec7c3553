"""Accuracy-aware int8: when a target's artifact misses `max_accuracy_drop`, try, in order,
1. the Keras model equalized, two separate attempts from the same model, each the same for every target:
   a. SmoothQuant-style activation-to-weight migration (pipeline.quantize.smoothquant),
   b. cross-layer equalization as Nagel et al. define it, with high-bias absorption (pipeline.quantize.cle),
      where it can help: the target quantizes weights per tensor, or the model's layer pairs have channel
      weight ranges CLE rescales by CLE_MIN_SCALE or more (with per-channel weights alone it only moves
      activation ranges, as 1a does),
2. the other calibration methods,
3. the backend's recovery passes (ExportOptions.equalize: NNCF channel alignment + bias correction),
4. quantization-aware fine-tuning (pipeline.quantize.qat) exported with its learned activation ranges,
5. keeping the most sensitive layers out of int8, one more at a time (from the target's sensitivity table), at
   the cheapest higher precision the target has for each (tflite: 16x8 by scope, else float),
each step on the best attempt so far (its model, equalized or not, and its options),
re-exporting (cached by options) and re-measuring accuracy in the artifact's runtime each time, until the
budget holds or MAX_ATTEMPTS are spent; then the passing artifact, or else the most accurate one, ships.
With `[quantize] qat = true` (QatInputs.first) step 4 runs right after the first export, even when that
passed, and a passing QAT attempt is preferred."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from calibration import CalibrationSet
from calibration.sensitivity import EVAL_SAMPLES
from pipeline.cache import Cache
from pipeline.errors import TargetError
from pipeline.inputs.arrays import take
from pipeline.measure.metric import ACCURACY, Metric
from pipeline.quantize.equalized_model import CLE, SHORT, SMOOTHQUANT, EqualizedModel, equalized_model
from pipeline.quantize.export import Batch, Exported, ExportRequest, export_batch, target_sensitivity
from pipeline.quantize.qat import QatInputs, QatModel, qat_model_for
from pipeline.report import schema
from pipeline.ui import UI
from targets import ExportOptions, FloatModel, get_target, runner
from targets.base import float_layer_variants, weight_grid

SUBSET = 1000  # evaluation samples an attempt is judged on first, when the set has more than twice as many
MAX_ATTEMPTS = 9  # per target, the first export included
CLE_MIN_SCALE = 4.0  # per-channel weights: CLE is tried when it rescales some channel by this much or more
METHOD_ORDER = ("percentile", "mse", "entropy", "minmax")  # fallbacks, the configured method skipped


@dataclass(frozen=True)
class Job:
    """What every attempt of one target shares."""

    name: str
    model: FloatModel
    model_id: str
    calib: CalibrationSet
    eval_path: Path
    reference_accuracy: float  # the task's metric of the reference model
    max_drop: float  # in the metric's units, its worse direction
    cache: Cache
    ui: UI
    metric: Metric = ACCURACY
    threads: int = 1  # as verification measures the artifact
    qat: QatInputs | None = None  # the training data for quantization-aware fine-tuning (classifiers)

    @property
    def export_request(self) -> ExportRequest:
        """What its exports share (pipeline.quantize.export)."""
        return ExportRequest(self.name, self.model, self.model_id, self.calib, self.cache, self.ui)


@dataclass(frozen=True)
class Attempt:
    opts: ExportOptions
    exported: Exported
    accuracy: float
    drop: float
    passed: bool
    equalized: EqualizedModel | None = None  # the Keras-equalized model it was exported from, if any
    qat: QatModel | None = None  # the fine-tuned model it was exported from (with its learned ranges), if any
    samples: int = 0  # evaluation samples its metric was computed on (a subset when it missed there)

    def record(self) -> dict[str, Any]:
        method = self.equalized.method if self.equalized is not None else None
        return {"calibration": self.opts.calibration_method, "equalize": self.opts.equalize,
                "equalization": method,  # smoothquant | cle | None: the Keras equalization it was exported from
                "cross_layer_equalization": method is not None,  # before the two names: any Keras equalization
                "float_layers": list(self.exported.result.float_layers),
                "int16_layers": list(self.exported.result.int16_layers), "accuracy": self.accuracy,
                "accuracy_drop": self.drop, "passed": self.passed, "qat": self.qat is not None,
                "samples": self.samples}


@dataclass
class Outcome:
    attempts: list[Attempt]
    sensitivity: list[dict[str, Any]] | None = None
    notes: list[str] = field(default_factory=list)
    qat: schema.QatEntry | None = None  # the report's target `qat` entry, once fine-tuning was measured
    prefer_qat: bool = False  # [quantize] qat = true
    qat_tried: bool = False

    @property
    def passed(self) -> bool:
        return any(a.passed for a in self.attempts)

    @property
    def best(self) -> Attempt:
        """The first attempt that met the budget (a QAT one first when preferred), else the most accurate
        (the earliest among equals)."""
        ok = [a for a in self.attempts if a.passed]
        ok = ([a for a in ok if a.qat is not None] or ok) if self.prefer_qat else ok
        return ok[0] if ok else max(self.attempts, key=lambda a: (a.accuracy, -self.attempts.index(a)))

    def room(self) -> int:
        return 0 if self.passed else MAX_ATTEMPTS - len(self.attempts)

    def report_fields(self) -> dict[str, Any]:
        """The target entry's fields from the ladder (attempts, sensitivity, equalization, qat), typed."""
        fields: dict[str, Any] = {"attempts": [schema.Attempt.model_validate(a.record()) for a in self.attempts],
                                  "sensitivity": None if self.sensitivity is None else
                                  [schema.SensitivityRow.model_validate(r) for r in self.sensitivity]}
        if self.best.equalized is not None:
            fields["equalization"] = schema.EqualizationEntry.model_validate(self.best.equalized.entry())
            fields["cross_layer_equalization"] = list(self.best.equalized.segments)  # the pairs, as before
        if self.qat is not None:
            fields["qat"] = self.qat
        return fields


def measure(job: Job, exported: Exported, opts: ExportOptions, equalized: EqualizedModel | None = None,
            qat: QatModel | None = None) -> Attempt:
    """The task's metric of the artifact in its own runtime on this host. On an evaluation set larger than
    2 x SUBSET an attempt is judged on SUBSET evenly spread samples first, and only one that meets the budget
    there is measured on the whole set, which decides."""
    session = runner.open_session(exported.folder / exported.result.artifact, job.threads, exact=True)
    x, y = runner.read_eval(job.eval_path)
    attempt = partial(Attempt, opts, exported, equalized=equalized, qat=qat)
    if len(y) > 2 * SUBSET:
        rows = np.linspace(0, len(y) - 1, SUBSET).round().astype(np.int64)
        acc = _metric(job, session, take(x, rows), y[rows], f"{_describe(opts, equalized)}, {SUBSET} samples")
        drop = job.metric.drop(job.reference_accuracy, acc)
        if drop > job.max_drop + 1e-9:
            return attempt(acc, drop, False, samples=SUBSET)
    acc = _metric(job, session, x, y, _describe(opts, equalized))
    drop = job.metric.drop(job.reference_accuracy, acc)
    return attempt(acc, drop, drop <= job.max_drop + 1e-9, samples=len(y))


def _metric(job: Job, session: runner.Session, x: Any, y: np.ndarray, what: str) -> float:
    with job.ui.task(f"{job.name}: {job.metric.name} of {what}"):
        return runner.evaluate(session, x, y, job.metric.spec)


def _describe(opts: ExportOptions, equalized: EqualizedModel | None = None) -> str:
    parts = ([SHORT[equalized.method]] if equalized is not None else []) + (["QAT"] if opts.activation_ranges else [])
    parts += [opts.calibration_method] + (["equalize"] if opts.equalize else [])
    if opts.float_layers:
        parts.append(f"{len(opts.float_layers)} layer(s) kept out of int8")
    return ", ".join(parts)


def _measure_all(job: Job, out: Outcome, candidates: list[ExportOptions], batch: Batch,
                 equalized: EqualizedModel | None, qat: QatModel | None = None) -> None:
    """Measure the exported candidates in order until one passes."""
    for opts, exported in zip(candidates, batch.exported, strict=False):
        out.attempts.append(measure(job, exported, opts, equalized, qat))
        job.ui.info(f"{job.name}: {_describe(opts, equalized)}: accuracy drop {out.attempts[-1].drop:+.4f}")
        if out.passed:
            return
    if batch.error:
        out.notes.append(f"accuracy-aware: some variants could not be built ({batch.error})")


def _on_best(job: Job, out: Outcome) -> Job:
    """The job for the next step: the best attempt's model (the QAT or equalized one when that attempt used it)."""
    best = out.best
    if best.qat is not None:
        return replace(job, model=replace(best.qat.model, converted=best.exported.folder), model_id=best.qat.model_id)
    if best.equalized is None:
        return job
    eq = best.equalized
    return replace(job, model=replace(eq.model, converted=best.exported.folder), model_id=eq.model_id)


def _try(job: Job, out: Outcome, candidates: list[ExportOptions], equalized: EqualizedModel | None = None,
         qat: QatModel | None = None, room: int | None = None) -> None:
    """Export the candidates (one child process) and measure them in order until one passes."""
    candidates = candidates[: out.room() if room is None else room]
    if not candidates:
        return
    try:
        batch = export_batch(job.export_request, candidates)
    except TargetError as err:  # a timeout: what was measured so far stands
        out.notes.append(f"accuracy-aware: variants not built ({err})")
        return
    _measure_all(job, out, candidates, batch, equalized, qat)


def _keras_equalization(job: Job, out: Outcome) -> None:
    """The Keras model equalized by each method (built once, cached, shared by every target), each exported
    with the best options so far: two separate attempts, SmoothQuant-style migration first."""
    opts = replace(out.best.opts, activation_ranges=())
    for method in (SMOOTHQUANT, CLE):
        if out.room() <= 0:
            return
        eq, why = equalized_model(job.model, job.model_id, job.calib, job.cache, job.ui, method)
        why = why or (_cle_not_helpful(job.name, eq) if eq is not None and method == CLE else None)
        if eq is None or why is not None:
            out.notes.append(f"accuracy-aware: {why}")
            continue
        out.notes.append(eq.summary())
        _try(replace(job, model=eq.model, model_id=eq.model_id), out, [opts], eq)


def _cle_not_helpful(target: str, eq: EqualizedModel) -> str | None:
    """Why CLE is not worth an attempt on `target`, or None: it helps per-tensor weights, and otherwise only
    where it rescales channels enough to move activation ranges."""
    kinds = ("conv", "depthwise", "dense")
    if any((grid := weight_grid(get_target(target), k)) is not None and grid[1] for k in kinds):
        return None
    widest = max(float(s["max_scale"]) for s in eq.segments)
    if widest >= CLE_MIN_SCALE:
        return None
    return (f"cross-layer equalization (Nagel et al.) not tried: {target} quantizes every weight per channel and "
            f"no layer pair has a channel it rescales by {CLE_MIN_SCALE:g}x or more (widest {widest:.2f}x)")


def _other_methods(job: Job, out: Outcome) -> None:
    best = out.best
    _try(_on_best(job, out), out, [replace(best.opts, calibration_method=m) for m in METHOD_ORDER
                                   if m != best.opts.calibration_method], best.equalized)


def _equalize(job: Job, out: Outcome) -> None:
    if get_target(job.name).supports_equalize and not out.best.opts.equalize:
        _try(_on_best(job, out), out, [replace(out.best.opts, equalize=True)], out.best.equalized)


def _qat(job: Job, out: Outcome) -> None:
    """The best attempt's model fine-tuned with fake quantization in the target's scheme, exported with the
    learned activation ranges and the best attempt's options (once per search)."""
    if out.qat_tried:
        return
    out.qat_tried = True
    if job.qat is None or job.qat.unavailable:
        why = job.qat.unavailable if job.qat is not None else "it trains a classifier: it needs class labels"
        out.notes.append(f"accuracy-aware: quantization-aware fine-tuning skipped ({why})")
        return
    best, base = out.best, _on_best(job, out)
    qat, why = qat_model_for(replace(base.export_request, model=replace(base.model, converted=None)), job.qat.data,
                             job.qat.config)
    if qat is None:
        out.notes.append(f"accuracy-aware: {why}")
        return
    out.notes.append(qat.summary())
    count = len(out.attempts)
    _try(replace(job, model=qat.model, model_id=qat.model_id), out,
         [replace(best.opts, activation_ranges=qat.ranges)], best.equalized, qat, room=max(out.room(), 1))
    if len(out.attempts) > count:
        out.qat = schema.QatEntry(accuracy_before=best.accuracy, accuracy_after=out.attempts[-1].accuracy,
                                  epochs=qat.epochs, fake_quant_accuracy_before=qat.fake_quant_accuracy_before,
                                  fake_quant_accuracy_after=qat.fake_quant_accuracy_after,
                                  learned_ranges=len(qat.ranges), **qat.layers_entry())


def _float_layers(job: Job, out: Outcome) -> None:
    """The sensitivity table and the 1, 2, ... most sensitive layers kept in float (one child process)."""
    base, equalized, job = out.best.opts, out.best.equalized, _on_best(job, out)
    x, y = runner.read_eval(job.eval_path)
    x, y = np.asarray(x[:EVAL_SAMPLES]), y[:EVAL_SAMPLES]
    try:
        out.sensitivity, batch = target_sensitivity(job.export_request, base, (x, y), float_variants=out.room(),
                                                    metric=(job.metric.spec, job.metric.higher_is_better))
    except TargetError as err:
        out.notes.append(f"accuracy-aware: no sensitivity table ({err}), so no layer was kept in float")
        return
    _measure_all(job, out, float_layer_variants(base, out.sensitivity, out.room()), batch, equalized)


def search(job: Job, first: Exported, opts: ExportOptions) -> Outcome:
    """Run the fallbacks after `first` (exported with `opts`) until the budget holds or the attempts run out."""
    out = Outcome([measure(job, first, opts)], prefer_qat=job.qat is not None and job.qat.first)
    if not out.passed:
        job.ui.info(f"{job.name}: {_describe(opts)}: accuracy drop {out.attempts[0].drop:+.4f} is over the budget "
                    f"({job.max_drop:.4f}): trying other int8 variants")
    job = replace(job, model=replace(job.model, converted=first.folder))  # later exports reuse its float model
    if out.prefer_qat:
        _qat(job, out)
    for phase in (_keras_equalization, _other_methods, _equalize, _qat, _float_layers):
        if out.room() <= 0:
            break
        phase(job, out)
    if len(out.attempts) > 1:
        b = out.best
        job.ui.info(f"{job.name}: accuracy-aware int8 chose {_describe(b.opts, b.equalized)} after {len(out.attempts)} "
                    f"attempt(s) (drop {b.drop:+.4f})")
    if not out.passed:
        b = out.best
        out.notes.append(
            f"accuracy-aware: no attempt met {'max_accuracy_drop' if job.metric.is_accuracy else 'max_metric_drop'} "
            f"{job.max_drop} ({job.metric.name}) in "
            f"{len(out.attempts)} attempt(s); shipped the most accurate ({_describe(b.opts, b.equalized)}, "
            f"drop {b.drop:.4f})")
        job.ui.warn(out.notes[-1].replace("accuracy-aware: ", f"{job.name}: "))
    return out
