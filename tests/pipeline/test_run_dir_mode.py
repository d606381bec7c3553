"""A run directory is created with the user's umask (a CI job or a web server running as another user can read
its report), and `-o` names it as `--out` does."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from conftest import write_config

from pipeline.cli import main


def test_the_run_directory_follows_the_umask_and_takes_o(trained_cnn: Path, digits_npz: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", trained_cnn, digits_npz, targets=("tflite",))
    old = os.umask(0o022)
    try:
        assert main(["--quiet", "build", str(cfg), "-o", str(tmp_path / "run")]) == 0
    finally:
        os.umask(old)
    run = tmp_path / "run"
    assert stat.S_IMODE(run.stat().st_mode) == 0o755  # mkdtemp's 0700 would have survived the rename
    assert stat.S_IMODE((run / "report.json").stat().st_mode) & 0o044 == 0o044  # readable by group and others
