"""targets.ssh against a real sshd on 127.0.0.1 (see conftest.py): the "device" is this machine."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pipeline.errors import TargetError, UsageError
from targets import runner, trt_runner
from targets.runner_settings import Bench
from targets.ssh import SshDevice, run_remote

if TYPE_CHECKING:
    from conftest import SshServer

RUN = Bench(warmup=2, iterations=20, threads=1)


def _processes_with(text: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def _wait_gone(text: str, seconds: float = 5.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while _processes_with(text) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _processes_with(text)


def test_run_remote_matches_local_runner(
    device: SshDevice, onnx_model: tuple[Path, Path], remote_prefix: str
) -> None:
    model, eval_set = onnx_model
    remote = run_remote(device, model, eval_set, RUN)
    local = runner.run(model, eval_set, runner.Bench(2, 20, 1))
    assert remote["device"] == f"ssh://root@127.0.0.1:{device.port}"
    assert remote["accuracy"] == local["accuracy"] and 0.5 < remote["accuracy"] < 1.0
    assert remote["samples"] == local["samples"] == 64 and remote["runtime"] == local["runtime"]
    stats = remote["latency_ms"]
    assert set(stats) == set(local["latency_ms"]) and (
        stats["iterations"],
        stats["warmup"],
        stats["threads"],
    ) == (20, 2, 1)
    assert (
        0 < stats["min"] <= stats["median"] <= stats["p90"] <= stats["p99"]
        and len(remote["latency_samples_ms"]) == 20
    )
    assert remote["peak_memory_kb"] > 0
    assert not list(Path("/tmp").glob(remote_prefix + "*"))


def test_openvino_ir_travels_with_its_bin(
    device: SshDevice, onnx_model: tuple[Path, Path], tmp_path: Path
) -> None:
    import openvino as ov

    xml = tmp_path / "ir" / "model.xml"
    xml.parent.mkdir()
    ov.save_model(ov.convert_model(str(onnx_model[0])), str(xml), compress_to_fp16=False)
    remote = run_remote(device, xml, onnx_model[1], RUN)
    assert remote["runtime"].startswith("openvino ")
    assert remote["accuracy"] == runner.run(xml, onnx_model[1], runner.Bench(0, 1, 1))["accuracy"]


def test_ssh_config_alias(
    sshd: SshServer, onnx_model: tuple[Path, Path], remote_prefix: str, tmp_path: Path
) -> None:
    """A bare Host alias resolves through the ssh config (HostName, Port, User, IdentityFile, known_hosts)."""
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host edge-box\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User root\n  IdentityFile {sshd.key}\n"
        f"  IdentitiesOnly yes\n  UserKnownHostsFile {sshd.known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
    )
    device = dataclasses.replace(
        SshDevice.parse("edge-box", python=sys.executable), ssh_options=("-F", str(config))
    )
    result = run_remote(device, onnx_model[0], None, RUN)
    assert (
        result["device"] == "ssh://edge-box"
        and result["accuracy"] is None
        and result["latency_ms"]["iterations"] == 20
    )


def test_hostile_artifact_name_is_quoted(
    device: SshDevice, onnx_model: tuple[Path, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "dir with space"
    folder.mkdir()
    hostile = folder / "a b;$(touch PWNED)'.onnx"
    shutil.copy(onnx_model[0], hostile)
    result = run_remote(device, hostile, onnx_model[1], RUN)
    assert result["samples"] == 64
    places = [Path.home(), Path.cwd(), Path("/"), Path("/tmp"), tmp_path, folder, *Path("/tmp").glob("*/")]
    assert not [p for p in places if (p / "PWNED").exists()]


def test_closed_port_is_a_quick_usage_error(
    device: SshDevice, onnx_model: tuple[Path, Path], closed_port: int
) -> None:
    closed = dataclasses.replace(device, port=closed_port)
    start = time.monotonic()
    with pytest.raises(UsageError, match="connection refused"):
        run_remote(closed, onnx_model[0], onnx_model[1], RUN)
    assert time.monotonic() - start < 4


def test_unknown_host_key_is_refused(
    device: SshDevice, sshd: SshServer, onnx_model: tuple[Path, Path], tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    stranger = dataclasses.replace(device, ssh_options=sshd.options(known_hosts=empty))
    start = time.monotonic()
    with pytest.raises(UsageError, match="not in known_hosts.*ssh-keyscan") as err:
        run_remote(stranger, onnx_model[0], onnx_model[1], RUN)
    assert time.monotonic() - start < 4 and "\n" not in str(err.value)
    assert empty.read_text() == ""  # nothing was accepted on the user's behalf


def test_wrong_key_is_an_auth_usage_error(
    device: SshDevice, sshd: SshServer, onnx_model: tuple[Path, Path], tmp_path: Path
) -> None:
    key = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    with pytest.raises(UsageError, match="authentication .* failed"):
        run_remote(dataclasses.replace(device, ssh_options=sshd.options(key=key)), onnx_model[0], None, RUN)


def test_bad_device_specs_are_usage_errors() -> None:
    assert SshDevice.parse("ssh://pi@rpi5.local:2222") == SshDevice("pi", "rpi5.local", 2222)
    assert SshDevice.parse("ssh://rpi5", python="/opt/venv/bin/python") == SshDevice(
        None, "rpi5", None, "/opt/venv/bin/python"
    )
    assert SshDevice.parse("pi@jetson").url == "ssh://pi@jetson"
    assert SshDevice.parse("ssh://root@[fe80::1]:22").url == "ssh://root@[fe80::1]:22"
    for bad in ["", "http://pi@x", "ssh://pi:secret@x", "ssh://x:99999", "ssh://x/path", "host:22", "a b",
                "-oProxyCommand=touch /tmp/x", "pi@-oProxyCommand=x", "ssh://@", "ssh://pi@x:0"]:  # fmt: skip
        with pytest.raises(UsageError):
            SshDevice.parse(bad)


def test_ssh_command_line_is_safe() -> None:
    args = SshDevice("pi", "rpi5", 2222, ssh_options=("-o", "ConnectTimeout=3")).ssh_args("true")
    assert args[:3] == ["ssh", "-o", "BatchMode=yes"] and args[-3:] == ["--", "rpi5", "true"]
    assert not [a for a in args if "StrictHostKeyChecking" in a or "KnownHostsFile=/dev/null" in a]
    assert args.index("ConnectTimeout=3") < args.index("ConnectTimeout=10")  # ssh: the first value wins


def test_connection_killed_mid_run(
    device: SshDevice, onnx_model: tuple[Path, Path], tmp_path: Path, remote_prefix: str
) -> None:
    """The remote 'python' starts the real runner, then kills its sshd session process: a dropped connection."""
    attempts = tmp_path / "attempts"
    wrapper = tmp_path / "python-killing-sshd"
    wrapper.write_text(f"""#!/bin/sh
echo run >> '{attempts}'
'{sys.executable}' "$@" &
sleep 1
p=$$
while [ "$p" -gt 1 ]; do
  if [ "$(cat /proc/$p/comm)" = sshd ]; then kill -9 "$p"; break; fi
  p=$(awk '{{print $4}}' /proc/$p/stat)
done
wait
""")
    wrapper.chmod(0o755)
    dropping = dataclasses.replace(device, python=str(wrapper), command_timeout=20)
    start = time.monotonic()
    with pytest.raises(TargetError, match="dropped during the run, also on retry") as err:
        run_remote(dropping, onnx_model[0], onnx_model[1], Bench(warmup=0, iterations=10**8, threads=1))
    assert time.monotonic() - start < 25 and "\n" not in str(err.value)
    assert attempts.read_text().split() == ["run", "run"]  # one retry, not more
    assert not _wait_gone(remote_prefix), "runner kept running after its connection dropped"


def test_runner_killed_by_a_signal_is_not_a_dropped_connection(
    device: SshDevice, onnx_model: tuple[Path, Path], tmp_path: Path
) -> None:
    attempts = tmp_path / "attempts"
    wrapper = tmp_path / "python-segfaulting"
    wrapper.write_text(f"#!/bin/sh\necho run >> '{attempts}'\nkill -SEGV $$\n")
    wrapper.chmod(0o755)
    with pytest.raises(TargetError, match="killed by SIGSEGV"):
        run_remote(dataclasses.replace(device, python=str(wrapper)), onnx_model[0], None, RUN)
    assert attempts.read_text().split() == ["run"]  # a crash is not retried


def test_command_timeout_kills_the_remote_run(
    device: SshDevice, onnx_model: tuple[Path, Path], remote_prefix: str
) -> None:
    slow = dataclasses.replace(device, command_timeout=3)
    start = time.monotonic()
    with pytest.raises(TargetError, match="timed out after 3 s"):
        run_remote(slow, onnx_model[0], onnx_model[1], Bench(warmup=0, iterations=10**8, threads=1))
    assert time.monotonic() - start < 10
    assert not _wait_gone(remote_prefix), "remote runner survived the time-out"


def test_remote_runner_error_is_a_target_error(device: SshDevice, tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    with pytest.raises(TargetError, match=r"runner on ssh://root@127\.0\.0\.1:\d+ failed: .*broken\.onnx"):
        run_remote(device, broken, None, RUN)


def test_missing_remote_python_is_a_usage_error(device: SshDevice, onnx_model: tuple[Path, Path]) -> None:
    with pytest.raises(UsageError, match="remote python '/nonexistent/python3' not found"):
        run_remote(dataclasses.replace(device, python="/nonexistent/python3"), onnx_model[0], None, RUN)


def test_local_problems_fail_before_connecting(onnx_model: tuple[Path, Path], tmp_path: Path) -> None:
    nowhere = SshDevice(None, "edgepipe-no-such-host.invalid", None)
    with pytest.raises(UsageError, match="file not found"):
        run_remote(nowhere, tmp_path / "missing.onnx", None, RUN)
    with pytest.raises(UsageError, match="expected a .tflite, .xml or .onnx"):
        run_remote(nowhere, onnx_model[1], None, RUN)
    (tmp_path / "model.xml").write_text("<net/>")
    with pytest.raises(UsageError, match=r"model\.bin"):
        run_remote(nowhere, tmp_path / "model.xml", None, RUN)


def test_tensorrt_without_trtexec_is_a_clear_error(
    device: SshDevice, tmp_path: Path, make_onnx: Callable[[Path], object]
) -> None:
    if shutil.which("trtexec") or any(Path(p).exists() for p in trt_runner.TRTEXEC_PATHS):
        pytest.skip("trtexec is installed here")
    model = tmp_path / "model_qdq.onnx"
    make_onnx(model)
    with pytest.raises(TargetError, match="trtexec not found on this device"):
        run_remote(device, model, None, RUN, tensorrt=True)


def test_trtexec_latency_summary_parses() -> None:
    out = (
        "[I] TensorRT version: 8.6.2\n[I] Average on 1 runs - GPU latency: 0.87 ms\n"
        "[I] Latency: min = 0.847656 ms, max = 1.47266 ms, mean = 0.876564 ms, median = 0.872314 ms, "
        "percentile(90%) = 0.887695 ms, percentile(95%) = 0.896973 ms, percentile(99%) = 0.996094 ms\n"
        "[I] Timing trace has 500 queries over 0.44 s\n[I] 500 iterations\n"
    )
    stats = trt_runner.trtexec_latency(out, warmup=10)
    assert stats["median"] == 0.872314 and stats["p90"] == 0.887695 and stats["p99"] == 0.996094
    assert (stats["min"], stats["mean"], stats["iterations"], stats["warmup"]) == (
        0.847656,
        0.876564,
        500,
        10,
    )
