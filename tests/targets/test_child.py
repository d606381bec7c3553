"""targets.child: the one child-process launcher (exports, sensitivity, bench timing)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from targets.child import run_module


def test_runs_a_module_with_args_stdin_and_the_path_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "echoer.py").write_text(
        "import sys\nprint(sys.argv[1:], sys.stdin.read(), sys.argv[0])\nsys.exit(3)\n")
    monkeypatch.setenv("PYTHONPATH", "/nonexistent-user-path")
    done = run_module("echoer", ["a", "b"], timeout_s=60, path=[tmp_path], stdin="hello")
    assert done.returncode == 3 and done.stdout.startswith("['a', 'b'] hello ") and done.stdout.strip().endswith("echoer.py")


def test_a_crash_is_a_return_code_not_an_exception(tmp_path: Path) -> None:
    (tmp_path / "crasher.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    assert run_module("crasher", [], timeout_s=60, path=[tmp_path]).returncode == -signal.SIGSEGV


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_child_dies_with_its_parent(tmp_path: Path) -> None:
    """A parent that is SIGKILLed takes its child along (a converter never outlives the build)."""
    (tmp_path / "sleeper.py").write_text("import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(600)\n")
    parent = subprocess.Popen(
        [sys.executable, "-c", "import sys; from targets.child import run_module; "
         f"run_module('sleeper', [], timeout_s=600, path=[{str(tmp_path)!r}])"],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    deadline = time.time() + 60
    pids: list[int] = []
    while time.time() < deadline and not pids:
        out = subprocess.run(["pgrep", "-f", "sleeper"], capture_output=True, text=True).stdout.split()
        pids = [int(p) for p in out if int(p) != parent.pid]
        time.sleep(0.2)
    assert pids, "the child never started"
    parent.kill()
    parent.wait()
    time.sleep(1.0)
    assert not [p for p in pids if os.path.exists(f"/proc/{p}") and "sleeper" in Path(f"/proc/{p}/cmdline").read_text()]
