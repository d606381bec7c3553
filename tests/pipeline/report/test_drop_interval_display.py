"""The drop's paired interval, the uncertain mark, the validation value and informational latency: shown in the
terminal summary and in report.html from a hand-written report; reports without them render as before."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from pipeline.report.document import summary_table
from pipeline.report.html import render_html

WHY = "emulated device: its latency is the host's, not the board's <b>"


def _report() -> dict[str, Any]:
    tflite = {"artifact": "tflite/model_int8.tflite", "precision": "int8", "runtime": "ai-edge-litert 2.3.0",
              "device": "host", "size_bytes": 20_480, "float_accuracy": 0.9917, "accuracy": 0.9861,
              "accuracy_drop": 0.0056, "latency_ms": {"median": 0.012, "p90": 0.015}, "passed": True,
              "violations": [], "notes": [], "latency_informational": WHY,
              "metric": {"name": "accuracy", "value": 0.9861, "drop": 0.0056, "interval": [-0.004, 0.015],
                         "level": 0.95, "method": "newcombe-paired", "higher_is_better": True, "samples": 360,
                         "split": "test", "uncertain": True},
              "selection": {"split": "validation", "samples": 180, "candidates": 3, "validation_value": 0.9944,
                            "validation_drop": 0.0011, "test_value": 0.9861}}
    openvino = {"artifact": "openvino/model_int8.xml", "precision": "int8", "device": "host", "accuracy": 0.9583,
                "float_accuracy": 0.9917, "accuracy_drop": 0.0334, "latency_ms": {"median": 0.02}, "passed": False,
                "violations": ["accuracy drop 0.0334 > max_accuracy_drop 0.01"],
                "metric": {"name": "accuracy", "value": 0.9583, "drop": 0.0334, "interval": [0.018, 0.052],
                           "level": 0.95, "method": "newcombe-paired", "higher_is_better": True, "samples": 360,
                           "split": "test", "uncertain": False}}
    old = {"precision": "int8", "device": "host", "accuracy": 0.99, "accuracy_drop": 0.0017, "passed": True,
           "latency_ms": {"median": 0.5}}  # a report written before intervals: no metric, no selection
    return {"schema": 1, "edgepipe_version": "0.1.0", "passed": False, "budget": {"max_accuracy_drop": 0.01},
            "reference": {"accuracy": 0.9917}, "targets": {"tflite": tflite, "openvino": openvino, "old": old}}


def _html_row(text: str, name: str) -> str:
    return next(r.split("</tr>")[0] for r in text.split("<tr>") if r.startswith(f"<td>{name}</td>"))


def _rows(report: dict[str, Any]) -> dict[str, str]:
    console = Console(width=240, record=True, color_system=None)
    console.print(summary_table(report))
    text = console.export_text()
    return {line.split("│")[1].strip(): line for line in text.splitlines() if line.startswith("│")} | {
        "": text}


def test_terminal_shows_interval_uncertain_and_informational_latency() -> None:
    rows = _rows(_report())
    assert "+0.0056 [-0.004, 0.015]" in rows["tflite"]
    assert re.search(r"PASS \(uncertain\)", rows["tflite"])
    assert "0.012 (info)" in rows["tflite"]
    assert "+0.0334 [0.018, 0.052]" in rows["openvino"]
    assert "FAIL accuracy drop" in rows["openvino"] and "uncertain" not in rows["openvino"]
    assert "(info)" not in rows["openvino"]
    assert "+0.0017" in rows["old"] and "[" not in rows["old"] and "PASS" in rows["old"]
    assert "95% paired interval" in rows[""] and "test split of 360 samples" in rows[""]


def test_terminal_without_intervals_is_unchanged() -> None:
    report = _report()
    for t in report["targets"].values():
        for key in ("metric", "selection", "latency_informational"):
            t.pop(key, None)
    rows = _rows(report)
    assert "+0.0056 " in rows["tflite"] and "[" not in rows["tflite"] and "(info)" not in rows["tflite"]
    assert "uncertain" not in rows[""] and "paired interval" not in rows[""]


def test_html_shows_interval_validation_value_and_informational_latency(tmp_path: Path) -> None:
    text = render_html(_report(), tmp_path).read_text(encoding="utf-8")
    row = _html_row(text, "tflite")
    assert "95% [-0.004, 0.015]" in row
    assert '<span class="uncertain">uncertain</span>' in row
    assert "0.9861 <span class=\"muted\">(validation 0.9944)</span>" in row
    assert "(informational)" in row and "latency not judged: emulated device" in row
    assert "&lt;b&gt;" in row and "<b>" not in row  # the reason is the report's text: escaped
    assert "chosen on the validation split of 180 samples among 3 candidates" in row
    openvino = _html_row(text, "openvino")
    assert "95% [0.018, 0.052]" in openvino and "uncertain" not in openvino and "validation" not in openvino
    assert "paired interval (newcombe-paired)" in text


def test_html_renders_partial_entries_and_refuses_malformed_ones(tmp_path: Path) -> None:
    """A partial entry (no interval, no selection) renders without them; a malformed one is what a damaged
    report.json is everywhere: one UsageError naming the key (schema.parse_report)."""
    from pipeline.errors import UsageError

    report = _report()
    report["targets"]["old"]["metric"] = {"interval": None}
    report["targets"]["old"].pop("selection", None)
    text = render_html(report, tmp_path / "partial").read_text(encoding="utf-8")
    old = _html_row(text, "old")
    assert "0.0017" in old and "uncertain" not in old and "validation" not in old
    for key, bad in (("selection", "oops"), ("metric", {"interval": ["x", 1]})):
        broken = copy.deepcopy(report)
        broken["targets"]["tflite"][key] = bad
        with pytest.raises(UsageError, match=f"targets.tflite.{key}"):
            render_html(broken, tmp_path / key)
