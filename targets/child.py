"""The one way edgepipe runs Python work in a child process (conversions, calibration, timing): converters
can segfault, which must fail that job rather than the build, and a child must never outlive its parent
(on Linux it gets SIGKILL when the parent dies, and it exits at once when the parent is already gone).

With `preload=True` the child is forked from a zygote that has TensorFlow imported already
(targets/zygote.py): the same isolation, without paying the import in every job. `EDGEPIPE_ZYGOTE=0` turns
that off; where the zygote cannot start (not Linux, an import failure), the plain child runs instead."""

from __future__ import annotations

import atexit
import codecs
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

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
# variables read when TensorFlow (or a BLAS) is imported: a zygote started under other values is not reused. The
# caller's `path` is not among them: the zygote puts it first on each job's sys.path, so one zygote serves all.
_IMPORT_TIME_ENV = ("TF_", "OMP_", "KMP_", "MKL_", "OPENBLAS_", "CUDA_", "XLA_", "KERAS_", "PYTHON", "LD_")
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # where the zygote imports targets.zygote from


def _env(path: list[Path] | None) -> dict[str, str]:
    entries = [str(p) for p in path or []] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": os.pathsep.join(entries)}


def run_module(module: str, args: list[str], *, timeout_s: float, path: list[Path] | None = None,
               stdin: str | None = None, cwd: Path | None = None,
               preload: bool = False) -> subprocess.CompletedProcess[str]:
    """`python -m module args...` in a child tied to this process, output captured; `path` goes first on the
    child's PYTHONPATH (the user's PYTHONPATH stays after it). subprocess.TimeoutExpired after `timeout_s`.
    `preload`: fork it from the zygote (TensorFlow imported) where one can run."""
    env = _env(path)
    zygote = _zygote_for(_env([_PACKAGE_ROOT])) if preload else None
    if zygote is not None:
        done = zygote.run(Job(module, args, env, cwd, stdin), timeout_s)
        if done is not None:
            return done
    cmd = [sys.executable, "-c", _BOOT, str(os.getpid()), module, *args]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout_s)


@dataclass(frozen=True)
class Job:
    module: str
    args: list[str]
    env: dict[str, str]
    cwd: Path | None
    stdin: str | None


class Zygote:
    """The client side of one zygote process (see targets/zygote.py for the protocol). It is reached through a
    socket pair it inherits, so no file is made for it and no other process can reach it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.key = _import_key(env)
        self.lock = threading.Lock()
        self.ctrl, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        boot = "import sys; from targets.zygote import serve; serve(int(sys.argv[1]), int(sys.argv[2]))"
        with theirs:
            self.proc = subprocess.Popen([sys.executable, "-c", boot, str(os.getpid()), str(theirs.fileno())],
                                         env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                         pass_fds=[theirs.fileno()])
        ready = self.proc.stdout.readline() if self.proc.stdout else ""
        if ready.strip() != "ready":
            self.close()
            raise OSError("the zygote did not start")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        """Stop the zygote (its end of the pair reads end-of-file), so that it waits for its last jobs: their
        peak memory then counts in this process's RUSAGE_CHILDREN, as a plain child's does. Killed where it
        does not stop."""
        self.ctrl.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def run(self, job: Job, timeout_s: float) -> subprocess.CompletedProcess[str] | None:
        """The job's outcome, or None when the zygote could not take it (the caller runs it plainly)."""
        mine, theirs = socket.socketpair()
        with mine:
            try:
                with theirs:
                    streams = _send(self, theirs, job)
            except OSError:
                return None
            lines = mine.makefile("r")
            started = lines.readline()  # the zygote answers with the job's pid once it forked it
            if not started:
                for fd in streams:
                    os.close(fd)
                return None
            mine.settimeout(timeout_s)
            return _run_on(lines, int(json.loads(started)["pid"]), job, streams, timeout_s)


def _send(zygote: Zygote, conn: socket.socket, job: Job) -> tuple[int, int, int]:
    """Hand the zygote the job: its request, its connection and its three streams. Our ends of the streams."""
    (in_r, in_w), (out_r, out_w), (err_r, err_w) = os.pipe(), os.pipe(), os.pipe()
    request = {"module": job.module, "argv": job.args, "env": job.env, "cwd": str(job.cwd) if job.cwd else None,
               "path": [p for p in job.env.get("PYTHONPATH", "").split(os.pathsep) if p]}
    try:
        with zygote.lock:
            socket.send_fds(zygote.ctrl, [json.dumps(request).encode()], [conn.fileno(), in_r, out_w, err_w])
    except OSError:
        for fd in (in_w, out_r, err_r):
            os.close(fd)
        raise
    finally:
        for fd in (in_r, out_w, err_w):
            os.close(fd)
    return in_w, out_r, err_r


def _run_on(lines: TextIO, pid: int, job: Job, streams: tuple[int, int, int],
            timeout_s: float) -> subprocess.CompletedProcess[str]:
    """Feed and drain the forked job `pid`, and wait (up to `timeout_s`) for the line with how it ended."""
    in_w, out_r, err_r = streams
    outputs = _drain(out_r, err_r, in_w, job.stdin or "")
    try:
        line = lines.readline()
    except TimeoutError:
        _kill(pid)
        outputs.join(_GRACE_S)
        raise subprocess.TimeoutExpired(job.module, timeout_s, "".join(outputs.out), "".join(outputs.err)) from None
    except BaseException:  # interrupted (Ctrl-C, SIGTERM): the job goes too, as subprocess.run's would
        _kill(pid)
        raise
    if line:
        rc = int(json.loads(line)["rc"])
    else:  # its waiter went without saying (the zygote was killed): the job died with it, or goes now
        _kill(pid)
        rc = -signal.SIGKILL
        outputs.err.append("edgepipe: the job's zygote ended before the job did\n")
    # the job has ended; a process it started may still hold its output open: what came so far, after a grace
    outputs.join(_GRACE_S)
    return subprocess.CompletedProcess([job.module, *job.args], rc, "".join(outputs.out), "".join(outputs.err))


_GRACE_S = 5.0  # how long the output may stay open after the job ended (a process it left behind holds it)


@dataclass
class _Outputs:
    out: list[str]
    err: list[str]
    threads: list[threading.Thread]

    def join(self, grace_s: float) -> None:
        """Wait up to `grace_s` in all for the streams to close (the readers keep what they read so far)."""
        deadline = time.monotonic() + grace_s
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))


def _drain(out_fd: int, err_fd: int, in_fd: int, stdin: str) -> _Outputs:
    """Read the job's stdout and stderr and write its stdin, each in a thread (as communicate() does); the
    output is kept as it comes, so that a stream held open past the job still gives what was written."""
    res = _Outputs([], [], [])

    def read(fd: int, into: list[str]) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        with open(fd, "rb", buffering=0) as f:
            while chunk := f.read(1 << 16):
                into.append(decoder.decode(chunk))
        into.append(decoder.decode(b"", final=True))

    def write() -> None:
        with open(in_fd, "w") as f:
            try:
                f.write(stdin)
            except BrokenPipeError:
                pass

    for fn, a in ((read, (out_fd, res.out)), (read, (err_fd, res.err)), (write, ())):
        t = threading.Thread(target=fn, args=a, daemon=True)
        t.start()
        res.threads.append(t)
    return res


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _import_key(env: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in env.items() if k.startswith(_IMPORT_TIME_ENV)))


_lock = threading.Lock()
_current: list[Zygote] = []


def _zygote_for(env: dict[str, str]) -> Zygote | None:
    """The running zygote for this import-time environment, started (or restarted) when needed; None where
    zygotes are off or cannot run here."""
    if os.environ.get("EDGEPIPE_ZYGOTE", "1") == "0" or not sys.platform.startswith("linux"):
        return None
    with _lock:
        if _current and (_current[0].key != _import_key(env) or not _current[0].alive()):
            _current.pop().close()
        if not _current:
            try:
                _current.append(Zygote(env))
            except OSError:
                return None
        return _current[0]


@atexit.register
def _stop() -> None:
    while _current:
        _current.pop().close()
