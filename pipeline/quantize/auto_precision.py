"""`[targets.X] precision = "auto"`: every precision one target can ship, measured alike on the verifying
device, and the fastest candidate that meets the budget ships (ties within TIE: the smaller one).

Candidates: the accuracy-aware ladder (pipeline.quantize.accuracy_aware, a black box) gives full int8 (its first
attempt), int8-recovered (its best attempt without float layers after the first: equalization, other calibration,
QAT) and mixed (its best attempt with layers kept in float); int16x8, fp16 and float come from the target's own
export (cached). Each candidate is measured with target_entry (metric in its runtime, median latency, size) with
the same settings, then once more in reverse order, its latency pooled from both rounds; one that cannot be built or measured is listed with the reason. With no candidate meeting
the budget the most accurate ships and the target fails. The rule that picks: pipeline.quantize.auto_pick."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from calibration import CalibrationSet
from pipeline.cache import Cache
from pipeline.config import BudgetSection
from pipeline.errors import TargetError
from pipeline.measure.metric import Metric
from pipeline.measure.scores import Scores
from pipeline.measure.verify import Bench, Verifier, check_outputs, judge, run_measurement, target_entry
from pipeline.quantize import accuracy_aware
from pipeline.quantize.auto_pick import Candidate, CandidateKind, pick
from pipeline.quantize.equalized_model import SHORT, SMOOTHQUANT
from pipeline.quantize.export import Exported, ExportRequest, export_batch, export_target
from pipeline.report.schema import LatencyStats, PrecisionCandidate, Selection, TargetEntry
from pipeline.ui import UI
from targets import ExportOptions, FloatModel, Precision, TargetName, get_target, precision_problem, runner

CANDIDATES_DIR = ".candidates"  # under OUT/<target>/ while measuring; removed once the winner is copied out


NO_LADDER_NO_BUDGET = "no accuracy budget (the ladder climbs to max_accuracy_drop / max_metric_drop)"
NO_LADDER_SEVERAL_IO = "the accuracy-aware ladder is skipped for a model with several inputs or outputs"


OTHER_PRECISIONS = {CandidateKind.INT16X8: Precision.INT16X8, CandidateKind.FP16: Precision.FP16,
                    CandidateKind.FLOAT: Precision.FLOAT}


@dataclass(frozen=True)
class AutoJob:
    """One target's auto choice: what to export from and how to measure."""

    name: str
    model: FloatModel
    model_id: str
    calib: CalibrationSet
    run_dir: Path
    eval_rel: str
    reference_accuracy: float
    float_accuracy: float | None
    budget: BudgetSection
    max_drop: float | None  # the accuracy budget the ladder climbs to; None: no ladder
    calibration_method: str
    bench: Bench
    cache: Cache
    ui: UI
    metric: Metric
    device: Any = None  # None: this host; else a targets.ssh.SshDevice
    no_ladder: str = NO_LADDER_NO_BUDGET  # why there is no ladder when max_drop is None
    qat: Any = None  # accuracy_aware.QatInputs: the ladder's quantization-aware fine-tuning step
    test_rel: str | None = None  # the test split: only the winner is measured on it (None: eval_rel)
    reference_test: Scores | None = None  # the reference's scores there
    reference_val: Scores | None = None  # the reference's scores on eval_rel (the validation split)
    deploy_on_host: bool = False  # [targets.X] deploy_on_host

    @property
    def export_request(self) -> ExportRequest:
        """What its exports share (pipeline.quantize.export)."""
        return ExportRequest(self.name, self.model, self.model_id, self.calib, self.cache, self.ui)

    def verifier(self) -> Verifier:
        return Verifier(self.run_dir, self.budget, self.bench, self.ui, TargetName(self.name), self.device,
                        self.metric, self.deploy_on_host)


@dataclass(frozen=True)
class Choice:
    """The candidate that ships, every candidate, and why."""

    winner: Candidate
    candidates: list[Candidate]
    why: str
    rows_why: dict[CandidateKind, str]
    aware: accuracy_aware.Outcome | None

    def rows(self) -> list[PrecisionCandidate]:
        """report.json's `precision_candidates`."""
        out = []
        for c in self.candidates:
            e = c.entry
            out.append(PrecisionCandidate(
                candidate=c.kind.value, precision=(e.precision if e is not None else None) or _precision_of(c),
                detail=c.detail, accuracy=None if e is None else e.accuracy,
                accuracy_drop=None if e is None else e.accuracy_drop,
                latency_ms=None if e is None else _finite(c.latency), size_bytes=None if e is None else e.size_bytes,
                measured=e is not None, passed=c.passed, chosen=c is self.winner, why=self.rows_why[c.kind]))
        return out


def _precision_of(c: Candidate) -> str:
    if c.exported is not None:
        return c.exported.result.precision
    return OTHER_PRECISIONS.get(c.kind, Precision.INT8).value


def _finite(v: float) -> float | None:
    return None if v == float("inf") else v


def describe(record: dict[str, Any]) -> str:
    """An accuracy-aware attempt in words, from its report record (new boolean steps, such as QAT, by name)."""
    known = {"calibration", "equalize", "equalization", "cross_layer_equalization", "float_layers", "accuracy",
             "accuracy_drop", "passed"}
    method = record.get("equalization") or (SMOOTHQUANT if record.get("cross_layer_equalization") else None)
    parts = ([SHORT[method]] if method in SHORT else []) + [str(record.get("calibration"))]
    parts += (["backend equalization"] if record.get("equalize") else [])
    parts += [k for k, v in record.items() if k not in known and v is True]
    if record.get("float_layers"):
        parts.append(f"{len(record['float_layers'])} float layer(s): {', '.join(record['float_layers'])}")
    return ", ".join(parts)


def _ladder(job: AutoJob, first: Exported, opts: ExportOptions) -> accuracy_aware.Outcome | None:
    if job.max_drop is None:
        return None
    aj = accuracy_aware.Job(job.name, job.model, job.model_id, job.calib, job.run_dir / job.eval_rel,
                            job.reference_accuracy, job.max_drop, job.cache, job.ui, job.metric, job.bench.threads,
                            job.qat)
    return accuracy_aware.search(aj, first, opts)


def _from_ladder(kind: CandidateKind, attempts: list[accuracy_aware.Attempt], aware: accuracy_aware.Outcome,
                 ) -> Candidate:
    """The ladder's best attempt among `attempts` (its own rule: the first passing, else the most accurate)."""
    if attempts:
        best = accuracy_aware.Outcome(list(attempts)).best
        return Candidate(kind, describe(best.record()), best.exported)
    tried = len(aware.attempts)
    if aware.passed:
        stop = aware.best
        why = (f"not tried: the ladder stopped at its attempt {aware.attempts.index(stop) + 1} of {tried} "
               f"({describe(stop.record())}), which met the accuracy budget")
    else:
        why = f"not tried: none of the ladder's {tried} attempt(s) was of this kind"
    return Candidate(kind, "", reason=why)


def int8_candidates(job: AutoJob) -> tuple[list[Candidate], accuracy_aware.Outcome | None, Exported | None]:
    """Full int8, int8-recovered and mixed from the accuracy-aware ladder (full int8 only without a budget)."""
    opts = ExportOptions(calibration_method=job.calibration_method, precision=Precision.INT8)
    try:
        first = export_target(job.export_request, opts)
    except TargetError as err:  # the other precisions may still build
        return [Candidate(CandidateKind.INT8, f"full int8, {job.calibration_method}", reason=f"not built: {err}"),
                *(Candidate(k, "", reason="not tried: full int8 was not built")
                  for k in (CandidateKind.INT8_RECOVERED, CandidateKind.MIXED))], None, None
    aware = _ladder(job, first, opts)
    full = Candidate(CandidateKind.INT8, f"full int8, {job.calibration_method}", first)
    if aware is None:
        why = f"not tried: {job.no_ladder}"
        return [full, Candidate(CandidateKind.INT8_RECOVERED, "", reason=why),
                Candidate(CandidateKind.MIXED, "", reason=why)], None, first
    later = aware.attempts[1:]
    recovered = _from_ladder(CandidateKind.INT8_RECOVERED, [a for a in later if not a.opts.float_layers], aware)
    mixed = _from_ladder(CandidateKind.MIXED, [a for a in aware.attempts if a.opts.float_layers], aware)
    return [full, recovered, mixed], aware, first


def other_candidates(job: AutoJob, first: Exported | None) -> list[Candidate]:
    """int16x8, fp16 and float through the target's export (one child process, cached), from the float model
    that the int8 export converted; a precision the target lacks is listed with its reason."""
    supported = get_target(job.name).precisions
    kinds = [k for k, p in OTHER_PRECISIONS.items() if p in supported]
    options = [ExportOptions(calibration_method=job.calibration_method, precision=OTHER_PRECISIONS[k]) for k in kinds]
    req = job.export_request if first is None else replace(job.export_request,
                                                            model=replace(job.model, converted=first.folder))
    try:
        label = f"{job.name}: exporting {', '.join(k.value for k in kinds)}"
        built = export_batch(req, options, label=label).exported
    except TargetError:
        built = []
    found: dict[CandidateKind, Candidate] = {}
    for k, opts, exp in zip(kinds, options, built, strict=False):
        found[k] = Candidate(k, opts.precision.value, exp)
    for k, opts in zip(kinds, options, strict=True):  # after a failure in the batch: each alone
        if k not in found:
            try:
                found[k] = Candidate(k, opts.precision.value, export_target(req, opts))
            except TargetError as err:
                found[k] = Candidate(k, opts.precision.value, reason=f"not built: {err}")
    return [found.get(k) or Candidate(k, "", reason=f"not built: {precision_problem(job.name, p)}")
            for k, p in OTHER_PRECISIONS.items()]


def measure(job: AutoJob, c: Candidate) -> Candidate:
    """The candidate's files copied under OUT/<target>/.candidates/<kind>/ and measured there with target_entry."""
    if c.exported is None:
        return c
    rel_dir = f"{job.name}/{CANDIDATES_DIR}/{c.kind.value}"
    (job.run_dir / rel_dir).mkdir(parents=True, exist_ok=True)
    for f in c.exported.result.files:
        shutil.copy2(c.exported.folder / f, job.run_dir / rel_dir / f)
    try:
        reference = job.reference_val if job.reference_val is not None else job.reference_accuracy
        entry = target_entry(job.verifier(), f"{rel_dir}/{c.exported.result.artifact}", None, job.eval_rel,
                             reference, job.float_accuracy, c.exported.result.precision)
    except TargetError as err:
        return replace(c, reason=f"not measured: {err}")
    return replace(c, entry=entry)


def second_round(job: AutoJob, candidates: list[Candidate]) -> list[Candidate]:
    """The measured candidates run again in reverse order (same settings, same eval set): each one's latency
    is then the statistics of both rounds' samples, so no candidate gains from where it stood in the order."""
    again: dict[CandidateKind, list[float]] = {}
    for c in reversed(candidates):
        if c.entry is None or not c.entry.latency_samples_ms or c.entry.artifact is None:
            continue
        try:
            m = run_measurement(job.run_dir / c.entry.artifact, None, job.verifier().measuring,  # latency only
                                f"{job.name} {c.kind.value}")
        except TargetError as err:
            job.ui.warn(f"{job.name}: {c.kind.value}: second latency round failed, the first stands ({err})")
            continue
        again[c.kind] = list(m.get("latency_samples_ms") or [])
    return [_pool(job, c, again[c.kind]) if again.get(c.kind) else c for c in candidates]


def _pool(job: AutoJob, c: Candidate, more: list[float]) -> Candidate:
    assert c.entry is not None
    samples = list(c.entry.latency_samples_ms) + more
    lat = runner.latency_stats(samples, job.bench.warmup, job.bench.threads)
    was = c.entry.latency_ms
    for flag in ("emulated", "informational"):
        if was is not None and getattr(was, flag):
            lat[flag] = True
    entry = c.entry.model_copy(update={"latency_ms": LatencyStats.model_validate(lat), "latency_samples_ms": samples})
    entry = entry.noted(f"latency: {len(samples)} samples from two rounds over the candidates (in order, then in "
                        "reverse)")
    return replace(c, entry=judge(entry, job.budget))


def _ship(job: AutoJob, choice: Choice) -> TargetEntry:
    """Copy the winner into OUT/<target>/, drop the candidates' folder; the winner's entry, completed."""
    win = choice.winner
    assert win.exported is not None and win.entry is not None
    folder = job.run_dir / job.name
    for f in win.exported.result.files:
        shutil.copy2(win.exported.folder / f, folder / f)
    shutil.rmtree(folder / CANDIDATES_DIR, ignore_errors=True)
    rel = f"{job.name}/{win.exported.result.artifact}"
    if job.test_rel is not None and job.reference_test is not None:  # the test split, read once: the winner
        entry = target_entry(job.verifier(), rel, None, job.test_rel, job.reference_test, job.float_accuracy,
                             win.exported.result.precision)
    else:
        entry = win.entry.model_copy(update={"artifact": rel})
    measured = sum(c.entry is not None for c in choice.candidates)
    entry = entry.model_copy(update={"selection": Selection(
        split="validation", samples=None if job.reference_val is None else job.reference_val.samples,
        candidates=measured, validation_value=win.entry.accuracy, validation_drop=win.entry.accuracy_drop,
        test_value=entry.accuracy, test_drop=entry.accuracy_drop)})
    entry = _float_twin(job, choice, _speedup_from_rounds(job, choice, entry))
    entry = entry.model_copy(update={"precision_candidates": choice.rows(), "precision_choice": choice.why})
    if win.passed:
        return entry
    return entry.model_copy(update={"passed": False, "violations": [
        *entry.violations, f"precision auto: none of the {measured} measured candidates met the budget; shipped the "
        f"most accurate ({win.kind.value})"]})


def _speedup_from_rounds(job: AutoJob, choice: Choice, entry: TargetEntry) -> TargetEntry:
    """The winner's speed-up against the float candidate, from the candidates' rounds (not under emulation)."""
    win = choice.winner
    assert win.exported is not None
    flt = next((c for c in choice.candidates if c.kind is CandidateKind.FLOAT and c.entry is not None), None)
    if flt is None or flt is win or entry.emulated:
        return entry
    rel_float = win.exported.result.float_artifact
    key = "int8_speedup" if entry.precision == Precision.INT8.value else "speedup_vs_float"
    update: dict[str, Any] = {} if rel_float is None else {"float_artifact": f"{job.name}/{rel_float}"}
    update.update({"float_latency_ms": flt.entry.latency_ms if flt.entry else None,
                   key: round(flt.latency / max(win.latency, 1e-9), 3)})
    return entry.model_copy(update=update)


def _float_twin(job: AutoJob, choice: Choice, entry: TargetEntry) -> TargetEntry:
    """Models with several outputs: each output against the float twin (a failure is a note)."""
    win = choice.winner
    assert win.exported is not None
    rel_float = win.exported.result.float_artifact
    if rel_float is None:
        return entry
    folder = job.run_dir / job.name
    try:
        return check_outputs(entry, folder / win.exported.result.artifact, folder / rel_float,
                             job.run_dir / (job.test_rel or job.eval_rel), job.bench, job.ui, job.name)
    except TargetError as err:
        return entry.noted(str(err))


def _show(job: AutoJob, choice: Choice) -> None:
    for c in choice.candidates:
        d = None if c.entry is None else c.entry.accuracy_drop
        drop = "-" if d is None else f"{d:+.4f}"
        job.ui.info(f"{job.name}: auto candidate {c.kind.value:<14} "
                    + (f"drop {drop}  median {c.latency:.4f} ms  {c.size} B  " if c.entry else "")
                    + choice.rows_why[c.kind])
    job.ui.info(f"{job.name}: precision auto chose {choice.why}")


def run_auto(job: AutoJob) -> tuple[Exported, accuracy_aware.Outcome | None, TargetEntry]:
    """Build and measure every candidate, ship the winner; its export, the ladder's outcome and its entry
    (artifact under OUT/<target>/, with `precision_candidates` and `precision_choice`)."""
    int8, aware, first = int8_candidates(job)
    candidates = second_round(job, [measure(job, c) for c in int8 + other_candidates(job, first)])
    try:
        win, why, rows_why = pick(candidates, job.name)
    except TargetError as err:
        shutil.rmtree(job.run_dir / job.name / CANDIDATES_DIR, ignore_errors=True)
        raise TargetError(f"{job.name}: {err}") from None
    choice = Choice(win, candidates, why, rows_why, aware)
    _show(job, choice)
    assert win.exported is not None
    return win.exported, aware, _ship(job, choice)
