"""Progress where stderr is not a terminal (CI logs, `| tee`): lines, throttled, never blank remains."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from pipeline import ui as ui_module
from pipeline.ui import UI


def _log_ui() -> tuple[UI, io.StringIO]:
    ui = UI()
    buf = io.StringIO()
    ui.console = Console(file=buf, width=140)  # a file: not a terminal
    return ui, buf


def test_non_terminal_prints_start_and_throttled_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    ui, buf = _log_ui()
    monkeypatch.setattr(ui_module, "PROGRESS_LINE_S", 0.0)
    with ui.task("distill: training", total=3) as advance:
        for _ in range(3):
            advance()
    assert buf.getvalue().splitlines() == ["distill: training ...", "distill: training: 1/3",
                                           "distill: training: 2/3"]


def test_non_terminal_quick_task_is_one_line() -> None:
    ui, buf = _log_ui()
    with ui.task("tflite: latency, 100 runs", total=100) as advance:
        for _ in range(100):
            advance()
    with ui.task("rendering report.html"):
        pass
    assert buf.getvalue().splitlines() == ["tflite: latency, 100 runs ...", "rendering report.html ..."]
