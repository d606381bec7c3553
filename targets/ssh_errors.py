"""What a failed ssh call means: ssh's own last stderr line, and the remote runner's exit status."""

from __future__ import annotations

import json
import signal
from typing import Any, Protocol

from .errors import TargetError, UsageError


class SshDevice(Protocol):
    """What these messages read of a targets.ssh.SshDevice (a protocol: ssh.py imports this module)."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int | None: ...
    @property
    def python(self) -> str: ...
    @property
    def connect_timeout(self) -> float: ...
    @property
    def url(self) -> str: ...


_NETWORK = ("connection timed out", "no route to host", "network is unreachable", "host is down")
_OPTIONS = ("bad configuration option", "bad port", "usage: ssh", "unknown option", "garbage at end")


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def connection_error(device: SshDevice, stderr: str) -> UsageError | None:
    """A UsageError for a failure that a retry cannot fix (after ssh exit 255); None for a dropped connection.

    Only ssh's last line counts: the remote command's own stderr comes before it.
    """
    line = last_line(stderr)
    low, port, host = line.lower(), device.port or 22, device.host
    connecting = "connect to host" in low or "banner exchange" in low
    if "host key verification failed" in low and "identification has changed" in stderr.lower():
        return UsageError(
            f"the host key of {host} changed since it was saved in known_hosts: if the device was "
            f"re-installed, remove the old key (ssh-keygen -R {host}) and add the new one"
        )
    if "host key verification failed" in low or "host key is known" in low:
        return UsageError(
            f"the host key of {host} is not in known_hosts: check it and add it, e.g. "
            f"`ssh-keyscan -p {port} {host} >> ~/.ssh/known_hosts` (edgepipe never accepts unknown keys)"
        )
    if "permission denied" in low or "too many authentication failures" in low:
        return UsageError(
            f"SSH authentication to {device.url} failed ({line}): set up a key (ssh-copy-id, or IdentityFile "
            "in ~/.ssh/config); edgepipe never asks for passwords"
        )
    if "could not resolve hostname" in low:
        return UsageError(
            f"cannot resolve host {host!r}: check the name or add a Host entry to ~/.ssh/config"
        )
    if connecting and "connection refused" in low:
        return UsageError(
            f"cannot connect to {device.url}: connection refused (is sshd listening on port {port}?)"
        )
    if connecting and any(s in low for s in _NETWORK):
        return UsageError(
            f"cannot reach {device.url}: {line} (connect time-out {device.connect_timeout:g} s)"
        )
    if any(s in low for s in _OPTIONS):
        return UsageError(f"ssh rejected its options for {device.url}: {line}")
    return None


def runner_result(device: SshDevice, rc: int, out: str, err: str) -> dict[str, Any]:
    """The runner's JSON object from a finished run (ssh exit != 255), or one clear error."""
    if rc in (126, 127):
        raise UsageError(
            f"remote python {device.python!r} not found on {device.url}: pass --remote-python PATH "
            "(or set python in the device profile)"
        )
    if 128 < rc < 128 + 65:
        name = signal.Signals(rc - 128).name if rc - 128 in signal.valid_signals() else f"signal {rc - 128}"
        hint = " (out of memory?)" if rc - 128 == signal.SIGKILL else ""
        raise TargetError(
            f"runner on {device.url} was killed by {name}{hint}: {last_line(err) or 'no output'}"
        )
    line = next((ln for ln in reversed(out.splitlines()) if ln.startswith("{")), None)
    try:
        result = json.loads(line) if line else None
    except json.JSONDecodeError:
        result = None
    if isinstance(result, dict) and "error" in result:
        raise TargetError(f"runner on {device.url} failed: {' '.join(str(result['error']).split())}")
    if rc != 0 or not isinstance(result, dict):
        raise TargetError(
            f"runner on {device.url} exited with {rc}: {last_line(err) or last_line(out) or 'no output'}"
        )
    return result
