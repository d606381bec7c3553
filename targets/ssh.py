"""Run an artifact on a device over SSH with the system OpenSSH client.

The user's ~/.ssh/config (Host aliases, IdentityFile, Port, ProxyJump) and known_hosts apply, because
this is plain `ssh`. It never prompts (BatchMode) and never weakens host key checking. One run is three
connections: make a temp dir and unpack the runner files (runner*.py, trt_runner.py), the artifact (+ .bin) and eval.npz
into it from a tar stream; run `<python> runner.py ...` (or runner_bench.py) (every argument quoted); remove the temp dir (always).
A dropped connection (ssh exit 255 after connecting) is retried once; errors are one line.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import shlex
import signal
import subprocess
import tarfile
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from .errors import TargetError, UsageError
from .runner_settings import Bench
from .ssh_errors import connection_error, last_line, runner_result

if TYPE_CHECKING:
    from .cpu import ExpectedCpu
    from .emulate.spec import Emulation

REMOTE_DIR_PREFIX = "edgepipe-run-"  # remote temp dirs: ${TMPDIR:-/tmp}/edgepipe-run-XXXXXXXX
RETRY_BACKOFF_S = 2.0
CLEANUP_TIMEOUT_S = 60.0
_HERE = Path(__file__).resolve().parent
_RUNNER_FILES = tuple(_HERE / f for f in ("runner.py", "runner_sessions.py", "runner_metrics.py", "runner_arrays.py",
                                          "runner_settings.py", "trt_runner.py", "runner_bench.py",
                                          "runner_profile.py", "runner_litert_prof.py"))
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")  # a host name, address or ssh config alias
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
_SPEC_HELP = "expected ssh://USER@HOST[:PORT] or an ssh config Host alias ([USER@]ALIAS)"


@dataclass(frozen=True)
class SshDevice:
    """Where and how to run the runner: `ssh_options` go to every ssh call (e.g. `-F`, `-i`, `-o ...`)."""

    user: str | None
    host: str
    port: int | None
    python: str = "python3"
    connect_timeout: float = 10
    command_timeout: float = 600
    ssh_options: tuple[str, ...] = ()
    tensorrt: bool = False  # a Jetson: .onnx artifacts of the tensorrt target become TensorRT engines there
    expected_cpu: ExpectedCpu | None = None  # what the device profile declares, checked against what answers
    emulated: Emulation | None = None  # an emulated aarch64 device (edgepipe device emulate): not a board
    name: str | None = None  # what the user called it (a profile, a config [devices] name, an emulated device)

    @classmethod
    def parse(cls, spec: str, python: str | None = None) -> SshDevice:
        """`ssh://USER@HOST[:PORT]` (USER and PORT optional) or a bare `[USER@]ALIAS` from ~/.ssh/config."""
        spec = spec.strip()
        if python is not None and not python.strip():
            raise UsageError("remote python must not be empty")
        user: str | None
        if "://" in spec:
            try:
                parts = urlsplit(spec)
                port = parts.port
            except ValueError as err:
                raise UsageError(f"bad device {spec!r}: {err}; {_SPEC_HELP}") from None
            if parts.scheme != "ssh":
                raise UsageError(f"bad device {spec!r}: only ssh:// is supported; {_SPEC_HELP}")
            if parts.password is not None:
                raise UsageError(f"bad device {spec!r}: passwords are not supported, use an SSH key")
            if parts.path not in ("", "/") or parts.query or parts.fragment:
                raise UsageError(f"bad device {spec!r}: unexpected path or query; {_SPEC_HELP}")
            user = unquote(parts.username) if parts.username else None
            host = parts.hostname or ""
            if port == 0:
                raise UsageError(f"bad device {spec!r}: port 0")
        else:
            user, _, host = spec.rpartition("@") if "@" in spec else (None, "", spec)
            port = None
        if not _valid_host(host) or (user is not None and not _USER.fullmatch(user)):
            raise UsageError(f"bad device {spec!r}: {_SPEC_HELP}")
        config = os.environ.get("EDGEPIPE_SSH_CONFIG", "").strip()  # an ssh_config file instead of ~/.ssh/config
        options = ("-F", config) if config else ()
        return cls(user=user or None, host=host, port=port, python=(python or "python3").strip(),
                   ssh_options=options)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (
            "ssh://" + (f"{self.user}@" if self.user else "") + host + (f":{self.port}" if self.port else "")
        )

    def ssh_args(self, remote_command: str) -> list[str]:
        """The ssh command line; BatchMode comes first so that nothing can turn prompts back on."""
        alive = max(1, math.ceil(self.connect_timeout))
        args = ["ssh", "-o", "BatchMode=yes", *self.ssh_options, "-T", "-x"]
        args += ["-o", f"ConnectTimeout={alive}", "-o", f"ServerAliveInterval={alive}", "-o", "ServerAliveCountMax=3"]  # fmt: skip
        args += ["-p", str(self.port)] if self.port else []
        args += ["-l", self.user] if self.user else []
        return [*args, "--", self.host, remote_command]


def _valid_host(host: str) -> bool:
    if _NAME.fullmatch(host):
        return True
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


class InRemoteDir(str):
    """A runner argument naming a file copied to the device: the remote temp dir's path goes in front of it."""


def run_remote(device: SshDevice, artifact: Path, eval_path: Path | None, bench: Bench, *, tensorrt: bool = False,
               metric: str = "accuracy") -> dict[str, Any]:
    """Copy runner + artifact (+ eval set) to a temp dir on the device, run it there as `bench` says, remove the
    dir.

    Returns the runner's JSON object plus "device" (the ssh:// URL). `tensorrt=True` runs a .onnx with
    `runner.py --tensorrt` (engine built with trtexec on the device; build_engine.sh goes along).
    """
    check_settings(bench)
    files, names = files_to_copy([Path(artifact)], eval_path, tensorrt)
    args: list[str] = [InRemoteDir(names[0])]
    args += ["--eval", InRemoteDir("eval.npz")] if eval_path is not None else []
    args += ["--warmup", str(bench.warmup), "--iterations", str(bench.iterations), "--threads", str(bench.threads)]
    args += ["--tensorrt"] if tensorrt else []
    args += ["--metric", metric] if metric != "accuracy" else []
    return run_runner(device, "runner.py", files, args)


def check_settings(bench: Bench) -> None:
    warmup, iterations, threads = bench.warmup, bench.iterations, bench.threads
    if warmup < 0 or iterations < 1 or threads < 1:
        raise UsageError(
            f"need warmup >= 0, iterations >= 1, threads >= 1 (got {warmup}, {iterations}, {threads})"
        )


def run_runner(device: SshDevice, script: str, files: dict[str, Path], args: list[str]) -> dict[str, Any]:
    """Copy `files` (remote name -> local file) to a temp dir on the device, run `<python> script args
    --exit-on-eof` there (InRemoteDir arguments get the dir in front), remove the dir (always). The runner's
    JSON object plus "device" (the ssh:// URL)."""
    made: list[str] = []
    try:
        remote_dir = _upload(device, files, made)
        argv = [f"{remote_dir}/{script}"]
        argv += [f"{remote_dir}/{a}" if isinstance(a, InRemoteDir) else a for a in args] + ["--exit-on-eof"]
        # through sh, not exec'd: a runtime that dies of a signal gives 128+N here, not ssh's 255 (a "drop")
        line = " ".join([_quote_python(device.python)] + [shlex.quote(a) for a in argv]) + "; exit $?"
        command = "sh -c " + shlex.quote(line)
        rc, out, err = _ssh_retrying(device, command, "the run", device.command_timeout, keep_stdin_open=True)
        result = runner_result(device, rc, out, err)
    finally:
        _cleanup(device, made)
    result["device"] = device.url
    return result


def files_to_copy(artifacts: list[Path], eval_path: Path | None, tensorrt: bool = False,
                  ) -> tuple[dict[str, Path], list[str]]:
    """Remote name -> local file, and each artifact's remote name; every problem is found before connecting.
    Several artifacts get a prefix each ("a-", "b-", ...): two runs' model_int8.tflite must not collide (an
    OpenVINO .xml and its .bin keep one stem)."""
    from . import artifact_files, artifact_suffixes, target_of_artifact

    files = {p.name: p for p in _RUNNER_FILES}
    names = []
    for i, artifact in enumerate(artifacts):
        if target_of_artifact(artifact) is None:
            *first, last = artifact_suffixes()
            raise UsageError(f"cannot run {artifact.name!r} on a device: expected a {', '.join(first)} or {last} file")
        prefix = f"{chr(ord('a') + i)}-" if len(artifacts) > 1 else ""
        parts = artifact_files(artifact)
        if artifact.suffix.lower() == ".xml":  # the IR without its .bin is an error below, not a silent skip
            parts = [artifact, artifact.with_suffix(".bin")]
        files.update({prefix + p.name: p for p in parts})
        names.append(prefix + artifact.name)
    if tensorrt and (artifacts[0].parent / "build_engine.sh").is_file():
        files["build_engine.sh"] = artifacts[0].parent / "build_engine.sh"
    if eval_path is not None:
        files["eval.npz"] = Path(eval_path)
    for path in files.values():
        if not path.is_file():
            raise UsageError(f"file not found: {path}")
    return files, names


def _upload(device: SshDevice, files: dict[str, Path], made: list[str]) -> str:
    """Make the remote temp dir and unpack the files there; every dir made is appended to `made`."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", REMOTE_DIR_PREFIX):
        raise ValueError(f"bad REMOTE_DIR_PREFIX {REMOTE_DIR_PREFIX!r}")
    script = (
        f'd=$(mktemp -d "${{TMPDIR:-/tmp}}/{REMOTE_DIR_PREFIX}XXXXXXXX") && echo "$d" && tar -xf - -C "$d"'
    )
    with tempfile.TemporaryFile() as bundle:
        with tarfile.open(fileobj=bundle, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for name, path in files.items():
                tar.add(str(path), arcname=name, recursive=False, filter=_plain_member)
        rc, out, err = _ssh_retrying(device, "sh -c " + shlex.quote(script), "the copy", device.command_timeout,
                                     stdin=bundle, made=made)  # fmt: skip
    if rc != 0 or not made:
        raise TargetError(f"could not copy the files to {device.url}: {last_line(err) or f'exit {rc}'}")
    return made[-1]


def _plain_member(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o644
    return info


def _cleanup(device: SshDevice, made: list[str]) -> None:
    if not made:
        return
    command = "rm -rf -- " + " ".join(shlex.quote(d) for d in made)
    try:
        rc, _, err = _ssh_retrying(
            device, command, "clean-up", min(device.command_timeout, CLEANUP_TIMEOUT_S)
        )
        if rc != 0:
            raise TargetError(last_line(err) or f"exit {rc}")
    except (TargetError, UsageError) as err:
        warnings.warn(
            f"could not remove {', '.join(made)} on {device.url}: {err}", RuntimeWarning, stacklevel=2
        )


def _ssh_retrying(
    device: SshDevice,
    command: str,
    what: str,
    timeout: float,
    *,
    stdin: IO[bytes] | None = None,
    keep_stdin_open: bool = False,
    made: list[str] | None = None,
) -> tuple[int, str, str]:
    """One ssh call, retried once after RETRY_BACKOFF_S if the connection dropped (exit 255)."""
    for attempt in (1, 2):
        if stdin is not None:
            stdin.seek(0)
        rc, out, err = _ssh(device, command, timeout, what, stdin, keep_stdin_open)
        if made is not None:  # the copy step prints the temp dir first: remember it even if the rest failed
            first = out.splitlines()[0].strip() if out.strip() else ""
            if first.startswith("/") and Path(first).name.startswith(REMOTE_DIR_PREFIX) and first not in made:
                made.append(first)
        if rc != 255:
            return rc, out, err
        fatal = connection_error(device, err)
        if fatal is not None:
            raise fatal
        if attempt == 1:
            time.sleep(RETRY_BACKOFF_S)
    raise TargetError(
        f"SSH connection to {device.url} dropped during {what}, also on retry: {last_line(err) or 'connection closed'}"
    )


def _ssh(
    device: SshDevice, command: str, timeout: float, what: str, stdin: IO[bytes] | None, keep_stdin_open: bool
) -> tuple[int, str, str]:
    """Run ssh in its own process group; on time-out kill the group (ProxyJump children too)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            source = (
                stdin if stdin is not None else subprocess.PIPE if keep_stdin_open else subprocess.DEVNULL
            )
            proc = subprocess.Popen(
                device.ssh_args(command), stdin=source, stdout=out, stderr=err, start_new_session=True
            )
        except FileNotFoundError:
            raise UsageError(
                "the OpenSSH client `ssh` is not installed (e.g. apt-get install openssh-client)"
            ) from None
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise TargetError(
                f"{what} on {device.url} timed out after {timeout:g} s (command time-out); "
                "lower --iterations or raise the time-out"
            ) from None
        except BaseException:
            _kill_group(proc)
            raise
        finally:
            if proc.stdin is not None:
                proc.stdin.close()
        out.seek(0)
        err.seek(0)
        return rc, out.read().decode(errors="replace"), err.read().decode(errors="replace")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _quote_python(python: str) -> str:
    """Quote the remote interpreter, keeping `~/` working (expanded by the remote shell)."""
    if python.startswith("~/"):
        return '"$HOME"/' + shlex.quote(python[2:])
    return shlex.quote(python)
