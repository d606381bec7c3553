"""`ship_faster_float = true`: ship the float artifact instead of int8 when the target's kind of device runs it
faster and it meets the accuracy budget on the validation split. Decided before the test split is read, so
that the test split measures only the artifact that ships."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.measure.device_kind import informational_reason
from pipeline.measure.scores import Scores
from pipeline.measure.speedup import Verdict
from pipeline.measure.verify import Verifier, run_measurement, speedup_of
from pipeline.report.schema import Int8Twin


@dataclass(frozen=True)
class FloatChoice:
    ship_float: bool
    why: str
    int8: Int8Twin  # the int8 artifact's latency (and path), for the report's `int8` entry


def decide(v: Verifier, rel_int8: str, rel_float: str, val_rel: str, reference_val: Scores) -> FloatChoice:
    """Whether the float twin ships: only on a latency measured on the target's kind of device, only when
    faster there, and only when its validation drop is within the budget."""
    label = v.target.value
    m8 = run_measurement(v.run_dir / rel_int8, None, v.measuring, f"{label} int8 latency")
    int8 = Int8Twin(artifact=rel_int8, latency_ms=m8["latency_ms"])
    why_not = informational_reason(v.target, v.device, m8.get("cpu"), v.deploy_on_host)
    if why_not is not None:
        return FloatChoice(False, f"ship_faster_float: int8 kept; latency is informational here ({why_not})", int8)
    mf = run_measurement(v.run_dir / rel_float, v.run_dir / val_rel, v.measuring, f"{label} float (validation)")
    sp, _ = speedup_of(v, v.run_dir / rel_int8, v.run_dir / rel_float, m8)
    int8 = int8.model_copy(update={"speedup": sp.to_report()})
    i_ms, f_ms = float(m8["latency_ms"]["median"]), float(mf["latency_ms"]["median"])
    if sp.verdict is not Verdict.SLOWER:  # only a difference the interval resolves
        return FloatChoice(False, f"ship_faster_float: int8 kept; it is not measurably slower than float on "
                                  f"{mf['device']} ({sp.ratio:.2f}x, 95% interval {sp.lo:.2f}-{sp.hi:.2f}x)", int8)
    drop = v.metric.drop(reference_val.value, mf["accuracy"]) if mf["accuracy"] is not None else None
    limit = v.budget.max_accuracy_drop if v.budget.max_accuracy_drop is not None else v.budget.max_metric_drop
    if drop is not None and limit is not None and drop > limit + 1e-9:
        return FloatChoice(False, f"ship_faster_float: int8 kept; float is faster ({f_ms:.3f} vs {i_ms:.3f} ms) but "
                                  f"misses the budget on the validation split (drop {drop:.4f})", int8)
    return FloatChoice(True, f"shipping the float artifact {rel_float}: int8 ({i_ms:.3f} ms) is not faster than "
                             f"float ({f_ms:.3f} ms) on {mf['device']} (ship_faster_float = true; decided on the "
                             f"validation split, {reference_val.samples} samples)", int8)
