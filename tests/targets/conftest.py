"""A real, throw-away sshd on 127.0.0.1 (run as root, own host and user keys) and tiny ONNX artifacts.

Installs openssh-server/-client with apt-get when they are missing (scripts/install-test-deps.sh does
the same); skips the SSH tests when that is impossible (not root, no apt-get).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from targets import ssh
from targets.emulate.sshd import listening
from targets.ssh import SshDevice

SSHD = Path("/usr/sbin/sshd")


@dataclass(frozen=True)
class SshServer:
    port: int
    folder: Path
    key: Path
    known_hosts: Path
    log: Path

    def options(self, known_hosts: Path | None = None, key: Path | None = None) -> tuple[str, ...]:
        kh = known_hosts or self.known_hosts
        return ("-F", "/dev/null", "-i", str(key or self.key), "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
                "-o", f"UserKnownHostsFile={kh}", "-o", "GlobalKnownHostsFile=/dev/null")  # fmt: skip


def _ensure_openssh() -> None:
    if os.geteuid() != 0:
        pytest.skip("the throw-away sshd runs as root (PermitRootLogin prohibit-password, /run/sshd)")
    if SSHD.exists() and shutil.which("ssh") and shutil.which("ssh-keygen"):
        return
    if not shutil.which("apt-get"):
        pytest.skip("OpenSSH server not installed and cannot apt-get it (run scripts/install-test-deps.sh)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", "openssh-server", "openssh-client"]
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True)
        subprocess.run(cmd, env=env, capture_output=True, check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgepipe-test", "-f", str(path)], check=True
    )


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    _ensure_openssh()
    d = tmp_path_factory.mktemp("sshd")
    _keygen(d / "host_key")
    _keygen(d / "user_key")
    shutil.copy(d / "user_key.pub", d / "authorized_keys")
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n"
        f"AuthorizedKeysFile {d}/authorized_keys\nUsePAM no\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
        "StrictModes no\nMaxStartups 50\nMaxSessions 50\nLogLevel VERBOSE\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # Debian's sshd wants its privilege separation dir
    host_key = (d / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    log = d / "sshd.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(d / "sshd_config")], stderr=log_file)
    if not listening(proc, port):
        proc.kill()
        pytest.fail("sshd did not start: " + log.read_text()[-2000:])
    try:
        yield SshServer(port=port, folder=d, key=d / "user_key", known_hosts=d / "known_hosts", log=log)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def ssh_config(sshd: SshServer, remote_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An ssh_config naming the throw-away key and known_hosts; the CLI picks it up via EDGEPIPE_SSH_CONFIG."""
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Host 127.0.0.1\n  IdentityFile {sshd.key}\n  IdentitiesOnly yes\n  IdentityAgent none\n"
                   f"  UserKnownHostsFile {sshd.known_hosts}\n  GlobalKnownHostsFile /dev/null\n")
    monkeypatch.setenv("EDGEPIPE_SSH_CONFIG", str(cfg))
    return f"ssh://root@127.0.0.1:{sshd.port}"


@pytest.fixture
def remote_prefix(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A unique prefix for this test's remote temp dirs; none may be left in /tmp afterwards."""
    prefix = f"edgepipe-test{uuid.uuid4().hex[:10]}-"
    monkeypatch.setattr(ssh, "REMOTE_DIR_PREFIX", prefix)
    yield prefix
    assert not list(Path("/tmp").glob(prefix + "*")), "remote temp dirs left behind"


@pytest.fixture
def device(sshd: SshServer, remote_prefix: str) -> SshDevice:
    return SshDevice(user="root", host="127.0.0.1", port=sshd.port, python=sys.executable,
                     connect_timeout=5, command_timeout=60, ssh_options=sshd.options())  # fmt: skip


def make_classifier(path: Path, features: int = 8, classes: int = 3, seed: int = 0) -> np.ndarray:
    """A MatMul + Add + Softmax classifier as ONNX (built with onnx.helper); returns its weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.normal(size=(features, classes)).astype(np.float32)
    b = np.zeros(classes, np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["z"]),
         helper.make_node("Softmax", ["z"], ["y"], axis=-1)],
        "classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", classes])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return w


def make_eval_set(path: Path, w: np.ndarray, samples: int = 64, seed: int = 1) -> None:
    """x: float32 features; y: the model's own argmax with some labels flipped (accuracy < 1)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, w.shape[0])).astype(np.float32)
    y = np.argmax(x @ w, axis=1).astype(np.int64)
    flip = rng.random(samples) < 0.25
    y[flip] = (y[flip] + 1) % w.shape[1]
    np.savez(path, x=x, y=y)


@pytest.fixture
def closed_port() -> int:
    return free_port()


@pytest.fixture
def make_onnx() -> Callable[[Path], np.ndarray]:
    return make_classifier


@pytest.fixture
def onnx_model(tmp_path: Path) -> tuple[Path, Path]:
    model = tmp_path / "model.onnx"
    make_eval_set(tmp_path / "eval.npz", make_classifier(model))
    return model, tmp_path / "eval.npz"
