"""targets.child: the one child-process launcher (exports, sensitivity, bench timing), run plainly and forked
from the zygote (targets/zygote.py): each behaviour holds for both."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from targets import child
from targets.child import run_module

ROOT = Path(__file__).resolve().parents[2]
BOTH = pytest.mark.parametrize("preload", [False, True], ids=["plain", "zygote"])


@BOTH
def test_runs_a_module_with_args_stdin_and_the_path_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           preload: bool) -> None:
    (tmp_path / "echoer.py").write_text(
        "import os, sys, tempfile\n"
        "print(sys.argv[1:], sys.stdin.read(), sys.argv[0], os.getcwd(), tempfile.gettempdir(), os.environ['MARK'])\n"
        "print('to stderr', file=sys.stderr)\nsys.exit(3)\n")
    monkeypatch.setenv("PYTHONPATH", "/nonexistent-user-path")
    monkeypatch.setenv("MARK", "set-by-the-caller")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    done = run_module("echoer", ["a", "b"], timeout_s=120, path=[tmp_path], stdin="hello", cwd=tmp_path,
                      preload=preload)
    assert done.returncode == 3, done.stderr
    words = done.stdout.split()
    assert done.stdout.startswith("['a', 'b'] hello ") and words[-4].endswith("echoer.py")
    assert words[-3:] == [str(tmp_path), str(tmp_path), "set-by-the-caller"] and done.stderr.strip() == "to stderr"


@BOTH
def test_a_crash_is_a_return_code_not_an_exception(tmp_path: Path, preload: bool) -> None:
    (tmp_path / "crasher.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    assert run_module("crasher", [], timeout_s=120, path=[tmp_path], preload=preload).returncode == -signal.SIGSEGV


@BOTH
def test_an_uncaught_exception_exits_1_with_its_traceback(tmp_path: Path, preload: bool) -> None:
    (tmp_path / "raiser.py").write_text("raise ValueError('from the job')\n")
    done = run_module("raiser", [], timeout_s=120, path=[tmp_path], preload=preload)
    assert done.returncode == 1 and "ValueError: from the job" in done.stderr


@BOTH
def test_the_jobs_exit_handlers_run_as_at_a_normal_exit(tmp_path: Path, preload: bool) -> None:
    """A job's atexit handlers run whichever way it exits (tensorrt's export removes its ONNX folder in one: a
    forked job ends in os._exit, which skips them unless the zygote runs them)."""
    (tmp_path / "registers.py").write_text(
        "import atexit, sys\nfrom pathlib import Path\n"
        "atexit.register(lambda: Path(sys.argv[1]).write_text('ran'))\n"
        "sys.exit(int(sys.argv[2]))\n")
    for code in (0, 4):
        mark = tmp_path / f"ran-{code}"
        done = run_module("registers", [str(mark), str(code)], timeout_s=120, path=[tmp_path], preload=preload)
        assert done.returncode == code, done.stderr
        assert mark.read_text() == "ran", done.stderr


@BOTH
def test_a_job_past_its_timeout_is_killed(tmp_path: Path, preload: bool) -> None:
    pid_file = tmp_path / "pid"
    (tmp_path / "hanger.py").write_text(
        f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(600)\n")
    with pytest.raises(subprocess.TimeoutExpired):
        run_module("hanger", [], timeout_s=3, path=[tmp_path], preload=preload)
    pid = int(pid_file.read_text())
    time.sleep(1.0)
    assert not _running(pid)


def test_jobs_are_forked_from_one_zygote_with_tensorflow_imported(tmp_path: Path) -> None:
    """Two jobs share a parent that has imported TensorFlow (so they do not import it again) and frozen its
    objects out of the collector's reach, yet each is its own process: what one changes, the next does not see.
    Callers with different paths share the zygote too (each job gets its own path first)."""
    folders = [tmp_path / "a", tmp_path / "b"]
    for folder in folders:
        folder.mkdir()
        (folder / "probe.py").write_text(
            "import gc, os, sys\nprint(os.getppid(), os.getpid(), 'tensorflow' in sys.modules, hasattr(sys, 'marked'),"
            " gc.get_freeze_count() > 0, sys.path.index(os.path.dirname(__file__)) < sys.path.index(os.path.dirname("
            "os.__file__)))\nsys.marked = True\n")
    a = run_module("probe", [], timeout_s=300, path=[folders[0]], preload=True).stdout.split()
    zygote = child._current[0]
    b = run_module("probe", [], timeout_s=300, path=[folders[1]], preload=True).stdout.split()
    assert a[2] == b[2] == "True" and a[3] == b[3] == "False" and a[1] != b[1]
    assert a[4:] == b[4:] == ["True", "True"], (a, b)  # frozen; the job's path before the standard library
    assert child._current[0] is zygote and zygote.alive() and os.getppid() != zygote.proc.pid


def test_a_process_left_holding_the_output_does_not_hold_the_caller(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A forked job that leaves a process behind with its stdout open: the caller gets the job's rc and what it
    printed after a short grace, not a wait for that process."""
    monkeypatch.setattr(child, "_GRACE_S", 1.0)  # 5 s in use
    (tmp_path / "leaver.py").write_text(
        "import subprocess\nprint(subprocess.Popen(['sleep', '600']).pid, flush=True)\n")
    started = time.monotonic()
    done = run_module("leaver", [], timeout_s=120, path=[tmp_path], preload=True)
    took = time.monotonic() - started
    left = int(done.stdout.split()[0])
    os.kill(left, signal.SIGKILL)
    assert done.returncode == 0 and took < 30, (took, done)


def test_a_job_whose_zygote_is_killed_fails_with_a_reason(tmp_path: Path) -> None:
    """The zygote killed under a running job (its waiter and the job die with it): the job fails with -SIGKILL
    and says why, and the next job gets a new zygote."""
    (tmp_path / "killer.py").write_text(
        "import os, signal, time\nwaiter = os.getppid()\n"
        "zygote = int(open(f'/proc/{waiter}/stat').read().rsplit(')', 1)[1].split()[1])\n"
        "os.kill(zygote, signal.SIGKILL)\ntime.sleep(600)\n")
    done = run_module("killer", [], timeout_s=120, path=[tmp_path], preload=True)
    assert done.returncode == -signal.SIGKILL and "zygote ended" in done.stderr, done
    (tmp_path / "probe.py").write_text("import sys\nprint('tensorflow' in sys.modules)\n")
    assert run_module("probe", [], timeout_s=300, path=[tmp_path], preload=True).stdout.strip() == "True"


def test_zygote_off_runs_plainly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "probe.py").write_text("import sys\nprint('tensorflow' in sys.modules)\n")
    monkeypatch.setenv("EDGEPIPE_ZYGOTE", "0")
    assert run_module("probe", [], timeout_s=120, path=[tmp_path], preload=True).stdout.strip() == "False"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@BOTH
def test_the_child_dies_with_its_parent(tmp_path: Path, preload: bool) -> None:
    """A parent that is SIGKILLed takes its child along (a converter never outlives the build)."""
    pid_file = tmp_path / "pid"
    (tmp_path / "sleeper.py").write_text(
        f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(600)\n")
    parent = subprocess.Popen(
        [sys.executable, "-c", "import sys; from targets.child import run_module; "
         f"run_module('sleeper', [], timeout_s=600, path=[{str(tmp_path)!r}], preload={preload})"],
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.time() + 120
    while time.time() < deadline and not pid_file.is_file():
        time.sleep(0.2)
    assert pid_file.is_file(), "the child never started"
    time.sleep(0.2)
    pid = int(pid_file.read_text())
    parent.kill()
    parent.wait()
    time.sleep(2.0)
    assert not _running(pid)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@BOTH
def test_a_jobs_peak_memory_counts_in_the_parents_children_usage(tmp_path: Path, preload: bool) -> None:
    """bench/pipeline_floor reads the build's peak RSS from wait4 (children included): a job forked from the
    zygote must count there as a plain child does (the zygote waits for it, and is waited for)."""
    (tmp_path / "hog.py").write_text("import numpy as np\nx = np.ones(2**28)\nprint(x.sum())\n")  # 2 GiB
    script = ("import resource, sys; from targets import child; "
              f"r = child.run_module('hog', [], timeout_s=300, path=[{str(tmp_path)!r}], preload={preload}); "
              "child._stop(); print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    rc, peak_kib = done.stdout.split()[-2:]
    assert rc == "0" and int(peak_kib) >= 2 * 2**20, done.stdout + done.stderr
