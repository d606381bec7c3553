"""Target entries are the schema's frozen types from where they are made (pipeline/report/schema.py): verification
returns a TargetEntry with exactly the keys report.json had when entries were dicts, and a measured-again entry
loses the keys its new measurement no longer sets. No runtime runs: the measurement is a fixed dict."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pipeline.config import BudgetSection, PrecisionSetting
from pipeline.measure import verify
from pipeline.measure.verify import Bench, Verifier, judge, mark_informational, target_entry
from pipeline.report.schema import DropMetric, LatencyStats, TargetEntry
from pipeline.ui import UI
from targets import TargetName

LATENCY = {"median": 1.0, "p90": 1.2, "p99": 1.3, "mean": 1.05, "std": 0.1, "min": 0.9, "iterations": 2, "warmup": 1,
           "threads": 1}
MEASURED = {"runtime": "litert", "device": "host", "accuracy": 0.9, "latency_ms": LATENCY,
            "latency_samples_ms": [1.0, 1.1], "peak_memory_kb": 100, "cpu": {"arch": "x86_64"},
            "evaluation": "litert", "evaluation_batch": 1}
# the keys of an entry verified on this host with deploy_on_host, as report.json has had them
KEYS = {"artifact", "precision", "runtime", "device", "size_bytes", "float_accuracy", "accuracy", "accuracy_drop",
        "float_layers", "latency_ms", "latency_samples_ms", "peak_memory_kb", "notes", "evaluation",
        "evaluation_batch", "cpu", "device_name", "deploy_on_host", "metric", "violations", "uncertain", "passed"}
METRIC_KEYS = {"name", "value", "drop", "interval", "level", "method", "higher_is_better", "samples", "split",
               "uncertain", "reference_value"}


def _verifier(tmp_path: Path, target: TargetName = TargetName.TFLITE, deploy_on_host: bool = True,
              budget: BudgetSection | None = None) -> Verifier:
    return Verifier(tmp_path, budget or BudgetSection(max_accuracy_drop=0.05), Bench(1, 2, 1), UI(quiet=True),
                    target, None, deploy_on_host=deploy_on_host)


def test_target_entry_is_a_target_entry_with_the_reports_keys(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    measured: dict[str, Any] = {**MEASURED, "latency_ms": dict(LATENCY)}
    monkeypatch.setattr(verify, "run_measurement", lambda *a, **k: measured)
    monkeypatch.setattr(verify, "artifact_size", lambda path: 1234)
    entry = target_entry(_verifier(tmp_path), "tflite/model.tflite", None, "data/eval.npz", 0.92, 0.92)
    assert isinstance(entry, TargetEntry) and isinstance(entry.latency_ms, LatencyStats)
    assert isinstance(entry.metric, DropMetric)
    doc = entry.as_dict()
    assert set(doc) == KEYS and set(doc["metric"]) == METRIC_KEYS and doc["latency_ms"] == LATENCY
    assert doc["accuracy_drop"] == pytest.approx(0.02) and doc["metric"]["drop"] == pytest.approx(0.02)
    assert doc["passed"] is True and doc["violations"] == [] and doc["uncertain"] is False
    assert measured["latency_ms"] == LATENCY  # the measurement is read, never changed


def test_judge_returns_a_judged_copy(tmp_path: Path) -> None:
    entry = TargetEntry(accuracy_drop=0.1, latency_ms=LATENCY, size_bytes=10, metric={"drop": 0.1, "interval": None})
    judged = judge(entry, BudgetSection(max_accuracy_drop=0.05))
    assert isinstance(judged, TargetEntry) and judged is not entry
    assert judged.passed is False and judged.violations and judged.uncertain is False
    assert "passed" not in entry.model_fields_set and "violations" not in entry.model_fields_set
    with pytest.raises(Exception, match="frozen"):
        entry.passed = True  # type: ignore[misc]


def test_measured_again_the_stale_informational_keys_go(tmp_path: Path) -> None:
    """An entry whose latency was informational, measured again where it decides: no `latency_informational`,
    no `informational` in its latency (as the dict's pop did)."""
    stale = TargetEntry(latency_ms={**LATENCY, "informational": True}, latency_informational="not here")
    v = _verifier(tmp_path, TargetName.TFLITE, deploy_on_host=True)
    entry = mark_informational(stale, v, {"arch": "x86_64"})
    assert "latency_informational" not in entry.as_dict() and entry.as_dict()["latency_ms"] == LATENCY
    v = _verifier(tmp_path, TargetName.TENSORRT, deploy_on_host=False)  # ONNX Runtime here: never TensorRT's
    entry = mark_informational(entry, v, {"arch": "x86_64"})
    assert entry.latency_informational and entry.latency_ms is not None and entry.latency_ms.informational is True


def test_a_failed_target_is_a_target_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline import build_target
    from pipeline.errors import TargetError

    def fail(job: Any) -> Any:
        raise TargetError("tflite: boom")

    monkeypatch.setattr(build_target, "_fixed", fail)
    job = SimpleNamespace(section=SimpleNamespace(precision=PrecisionSetting.INT8), ui=UI(quiet=True), device=None)
    entry = build_target.one_target(job)  # type: ignore[arg-type]
    assert isinstance(entry, TargetEntry)
    assert entry.as_dict() == {"error": "tflite: boom", "passed": False, "violations": [], "precision": "int8",
                               "device": "host"}
