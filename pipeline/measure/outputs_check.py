"""Every output checked: for a model with several outputs, each output of a target's artifact against its float
twin, both run in the target's runtime on this host over the eval set (SQNR, cosine, top-1 agreement), so an
output the metric does not read cannot break unnoticed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from targets import runner, runner_metrics


def compare(quantized: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """One output (N, ...) against the float twin's: SQNR (dB), mean cosine per sample, and top-1 agreement for
    scores."""
    width = reference.reshape(reference.shape[0], -1).shape[1]
    # one value per sample: the cosine of the whole column (a per-sample cosine of scalars is only their sign)
    q, f = (quantized.reshape(1, -1), reference.reshape(1, -1)) if width == 1 else (quantized, reference)
    out = {"sqnr_db": round(runner_metrics.sqnr(quantized, reference), 3),
           "cosine": round(runner_metrics.cosine(q, f), 6)}
    if width > 1:
        out["agreement_top1"] = round(runner_metrics.agreement_top1(quantized, reference), 6)
    return out


def output_checks(artifact: Path, float_artifact: Path, eval_path: Path, threads: int) -> dict[str, Any] | None:
    """{output name: compare(...)} for an eval set of a model with several outputs; None for one output."""
    ev = runner.EvalSet(eval_path)
    if len(ev.outputs) < 2:
        return None
    got = runner.outputs_all(runner.open_session(artifact, threads, exact=True), ev.x)
    ref = runner.outputs_all(runner.open_session(float_artifact, threads, exact=True), ev.x)
    return {name: compare(q, f) for name, q, f in zip(ev.outputs, got, ref, strict=True)}


def note(checks: dict[str, Any]) -> str:
    """The report note that sums the checks up."""
    parts = [f"{name} {c['sqnr_db']:.1f} dB" + (f", top-1 {c['agreement_top1']:.3f}" if "agreement_top1" in c else "")
             for name, c in checks.items()]
    return "every output against the float twin in its runtime (host): " + "; ".join(parts)
