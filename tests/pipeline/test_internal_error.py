"""An internal error (a bug, not bad input, not a missed budget) has its own exit code and one stderr line
that names where its traceback was kept; no run directory is left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

import pipeline.build
from pipeline import cli
from pipeline.cli import main

EX_SOFTWARE = 70  # docs/reference/exit-codes.md: an internal error


def test_internal_error_exit_code_and_kept_build_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    def broken(*args: object, **kwargs: object) -> None:  # a stage's bug: an exception edgepipe did not foresee
        raise RuntimeError("boom in load_source")

    monkeypatch.setattr(pipeline.build, "load_source", broken)
    out = tmp_path / "runs" / "run"
    rc = main(["--quiet", "build", "digits-cnn", "--target", "tflite", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == EX_SOFTWARE, err  # was 1, the exit code of a missed budget
    assert cli.EXIT_INTERNAL == EX_SOFTWARE not in (cli.EXIT_OK, cli.EXIT_BUDGET, cli.EXIT_USAGE, 3)  # 3: runner.py
    kept = out.with_name("run.failed-build.log")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("edgepipe: internal error: RuntimeError: boom in load_source") and str(kept) in err
    log = kept.read_text()
    assert "Traceback" in log and "boom in load_source" in log and "in broken" in log
    assert not out.exists() and not list(out.parent.glob(".run.partial-*"))  # no half-written run
