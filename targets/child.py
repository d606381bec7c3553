"""The one way edgepipe runs Python work in a child process (conversions, calibration, timing): converters
can segfault, which must fail that job rather than the build, and a child must never outlive its parent
(on Linux it gets SIGKILL when the parent dies, and it exits at once when the parent is already gone)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_BOOT = """import os, runpy, signal, sys
parent = int(sys.argv.pop(1))
if sys.platform.startswith("linux"):
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass
if os.getppid() != parent:
    sys.exit(1)
module = sys.argv.pop(1)
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def run_module(module: str, args: list[str], *, timeout_s: float, path: list[Path] | None = None,
               stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m module args...` in a child tied to this process, output captured; `path` goes first on the
    child's PYTHONPATH (the user's PYTHONPATH stays after it). subprocess.TimeoutExpired after `timeout_s`."""
    entries = [str(p) for p in path or []] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": os.pathsep.join(entries)}
    cmd = [sys.executable, "-c", _BOOT, str(os.getpid()), module, *args]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout_s)
