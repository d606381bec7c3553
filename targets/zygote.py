"""A pre-loaded parent for edgepipe's child jobs: one process per build imports TensorFlow (4-5 s of each job's
6-8 s on a 2-core host) and forks a fresh child for every job, so each job starts with it imported and no job
shares state with another: a crash still fails only that job.

Run by targets/child.py with one end of a SOCK_SEQPACKET socket pair, inherited (no file, nothing else can
reach it). Each message on it is one job: the request (JSON: module, argv, env, cwd, path) with four file
descriptors passed with SCM_RIGHTS: the job's connection (a socket) and its stdin, stdout and stderr. The zygote
forks a waiter per job, which forks the job and answers on the job's connection with two JSON lines:
{"pid": job_pid}, then {"rc": returncode} (negative: the signal that killed it, as subprocess gives it).
End-of-file on the pair stops the zygote once its waiters are done. Every process in the chain dies with its
parent (PR_SET_PDEATHSIG), so nothing outlives the build.

Nothing here may run a TensorFlow op: a forked child inherits the parent's threads' locks but not the threads,
and TF starts its runtime (thread pools, the eager context) only at the first op. Stdlib only, apart from the
preloaded modules."""

from __future__ import annotations

import atexit
import gc
import importlib
import json
import os
import signal
import socket
import sys
from typing import Any

# what the export and sensitivity jobs import (TensorFlow is most of it: 4-5 s; the rest about 1.5 s more in a
# job, NNCF's and onnx's own imports); each one missing is left out. Not ONNX Runtime: importing it writes a
# session file (.ses) into TMPDIR that it removes only at exit, and after TensorFlow it imports in 0.04 s.
PRELOAD = ("numpy", "tensorflow", "keras", "onnx", "networkx", "openvino", "nncf",
           "nncf.openvino.quantization.quantize_model", "tf2onnx", "ai_edge_litert.interpreter", "litert_quantizer",
           "sympy")  # sympy: ONNX Runtime's symbolic shape inference (the Q/DQ pre-processing), 0.6 s a job
_MAX_FDS = 4


def die_with_parent() -> None:
    """SIGKILL this process when its parent exits (Linux); elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except Exception:
            pass


def _recv_job(ctrl: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """The next job's request and descriptors; None at end-of-file (the build is done with the zygote)."""
    data, fds, _flags, _addr = socket.recv_fds(ctrl, 1 << 20, _MAX_FDS)
    return (json.loads(data.decode()) if data else None), list(fds)


def _exec_job(req: dict[str, Any], fds: list[int]) -> None:
    """In the forked job: become `python -m module argv...` with the request's streams, env, cwd and path."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    atexit._clear()  # the zygote's exit handlers are not the job's; the job's own run before os._exit below
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", closefd=False, buffering=1)  # noqa: SIM115
    sys.stderr = open(2, "w", closefd=False, buffering=1)  # noqa: SIM115
    os.environ.clear()
    os.environ.update(req["env"])
    import tempfile

    tempfile.tempdir = None  # found again from the job's TMPDIR, not the zygote's
    if req.get("cwd"):
        os.chdir(req["cwd"])
    sys.path[:0] = [p for p in req.get("path", []) if p not in sys.path]
    sys.argv = [req["module"], *req["argv"]]
    import runpy

    code = 0
    try:
        runpy.run_module(req["module"], run_name="__main__", alter_sys=True)
    except SystemExit as err:
        code = err.code if isinstance(err.code, int) else (0 if err.code is None else 1)
        if not isinstance(err.code, int) and err.code is not None:
            print(err.code, file=sys.stderr)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()  # what the job registered (e.g. its temporary folders' removal), as at a normal exit
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _wait_job(conn: socket.socket, req: dict[str, Any], fds: list[int]) -> None:
    """In the waiter: fork the job, tell its pid, wait for it and tell how it ended."""
    pid = os.fork()
    if pid == 0:
        conn.close()
        die_with_parent()
        _exec_job(req, fds)
    for fd in fds:
        os.close(fd)
    conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    _, status = os.waitpid(pid, 0)
    rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    conn.sendall(json.dumps({"rc": rc}).encode() + b"\n")


def _reap(block: bool) -> None:
    """Wait for finished waiters: a waited-for child's peak memory counts in its parent's (ru_maxrss of
    RUSAGE_CHILDREN, as wait4 gives it to whoever waits for the build), an auto-reaped one's would not."""
    while True:
        try:
            pid, _ = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def serve(parent: int, ctrl_fd: int) -> None:
    die_with_parent()
    if os.getppid() != parent:
        return
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:
            pass
    # the preloaded modules' objects out of the collector's reach: a job's gc.collect() (the TFLite converter calls
    # it twice) walks only its own objects, 0.01 s instead of 0.6 s, and leaves the shared pages unwritten
    gc.freeze()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the build's to handle (and its jobs')
    ctrl = socket.socket(fileno=ctrl_fd)
    print("ready", flush=True)
    while True:
        req, fds = _recv_job(ctrl)
        _reap(block=False)
        if req is None or len(fds) != _MAX_FDS:
            for fd in fds:
                os.close(fd)
            if req is None:
                _reap(block=True)
                return
            continue
        if os.fork() == 0:
            ctrl.close()
            die_with_parent()
            try:
                _wait_job(socket.socket(fileno=fds[0]), req, fds[1:])
            finally:
                os._exit(0)
        for fd in fds:
            os.close(fd)


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
