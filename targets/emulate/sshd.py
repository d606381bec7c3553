"""The emulated device's SSH daemon: OpenSSH's sshd on 127.0.0.1 with the device's own host and user keys,
started when a command first connects and stopped when that process exits. Everything it needs (keys,
authorized_keys, known_hosts, an ssh_config for the client) lives in the device's folder."""

from __future__ import annotations

import atexit
import socket
import subprocess
import time
from pathlib import Path

from ..errors import UsageError

SSHD = Path("/usr/sbin/sshd")
_RUNNING: dict[Path, tuple[subprocess.Popen[bytes], int]] = {}


def make_keys(folder: Path) -> None:
    """A host key and a user key (ed25519, no passphrase); the user key is the only one authorized."""
    for name in ("host_key", "user_key"):
        if not (folder / name).is_file():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgepipe-emulated", "-f",
                            str(folder / name)], check=True, capture_output=True)
    (folder / "authorized_keys").write_text((folder / "user_key.pub").read_text())


def listening(proc: subprocess.Popen, port: int, timeout_s: float = 10.0) -> bool:
    """Whether `proc` (a server just started) accepts connections on 127.0.0.1:`port` within `timeout_s`;
    False as soon as it exits."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_config(folder: Path, port: int) -> None:
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder}/host_key\nPidFile none\n"
        f"AuthorizedKeysFile {folder}/authorized_keys\nUsePAM no\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
        "StrictModes no\nMaxStartups 50\nMaxSessions 50\nLogLevel ERROR\n")
    host_key = (folder / "host_key.pub").read_text().split()
    (folder / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    (folder / "ssh_config").write_text(
        f"Host 127.0.0.1\n  IdentityFile {folder}/user_key\n  IdentitiesOnly yes\n  IdentityAgent none\n"
        f"  UserKnownHostsFile {folder}/known_hosts\n  GlobalKnownHostsFile /dev/null\n")


def ensure_running(folder: Path) -> int:
    """The port of this device's sshd, started now unless this process already started it."""
    running = _RUNNING.get(folder)
    if running is not None and running[0].poll() is None:
        return running[1]
    if not SSHD.is_file():
        raise UsageError("an emulated device needs OpenSSH's sshd (apt-get install openssh-server)")
    port = _free_port()
    _write_config(folder, port)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # Debian's sshd wants its privilege separation dir
    with (folder / "sshd.log").open("wb") as log:
        proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(folder / "sshd_config")], stderr=log,
                                stdin=subprocess.DEVNULL)
    if not listening(proc, port):
        proc.kill()
        log_text = (folder / "sshd.log").read_text(errors="replace").strip().splitlines()
        raise UsageError(f"the emulated device's sshd did not start: {(log_text or ['no output'])[-1]}")
    _RUNNING[folder] = (proc, port)
    return port


def stop(folder: Path) -> None:
    running = _RUNNING.pop(folder, None)
    if running is None:
        return
    running[0].terminate()
    try:
        running[0].wait(5)
    except subprocess.TimeoutExpired:
        running[0].kill()
        running[0].wait()


def stop_all() -> None:
    for folder in list(_RUNNING):
        stop(folder)


atexit.register(stop_all)
