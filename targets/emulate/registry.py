"""Emulated devices by name: build one (`edgepipe device emulate`), list, remove, and connect to one.

A device is a folder under CACHE/devices/NAME: device.json (its spec and what was built), `python` (a wrapper
that runs the Debian arm64 root's python3 under qemu-aarch64 with the wheels on PYTHONPATH) and its SSH keys.
The arm64 roots, wheels and QEMU are shared under CACHE/emulate and rebuilt only when their spec changes."""

from __future__ import annotations

import getpass
import json
import shlex
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import UsageError
from ..ssh import SshDevice
from . import sshd
from .qemu import Qemu, find_qemu
from .rootfs import ensure_rootfs
from .spec import EmulatedSpec, Emulation, check_name, check_spec
from .wheels import ensure_wheels, installed_version

IMPORTS = {"ai-edge-litert": "ai_edge_litert.interpreter", "tflite-runtime": "tflite_runtime.interpreter"}


@dataclass(frozen=True)
class EmulatedDevice:
    name: str
    folder: Path
    spec: EmulatedSpec
    emulation: Emulation

    @property
    def python(self) -> Path:
        return self.folder / "python"


def devices_dir(cache: Path) -> Path:
    return cache / "devices"


def load(name: str, cache: Path) -> EmulatedDevice | None:
    """The device called `name`, or None when there is none (or it was never finished)."""
    path = devices_dir(cache) / name / "device.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return EmulatedDevice(name, path.parent, EmulatedSpec(**data["spec"]), Emulation(**data["emulation"]))


def list_devices(cache: Path) -> list[EmulatedDevice]:
    folder = devices_dir(cache)
    names = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    return [d for d in (load(n, cache) for n in names) if d is not None]


def remove(name: str, cache: Path) -> None:
    if load(name, cache) is None:
        raise UsageError(f"no emulated device {name!r} (see `edgepipe device list`)")
    sshd.stop(devices_dir(cache) / name)
    shutil.rmtree(devices_dir(cache) / name)


def emulate(name: str, spec: EmulatedSpec, cache: Path) -> tuple[EmulatedDevice, bool]:
    """Build (or keep, when its spec is unchanged) the device; returns it and whether it was (re)built."""
    check_name(name)
    check_spec(spec)
    old = load(name, cache)
    if old is not None and old.spec == spec and old.python.is_file():
        return old, False
    qemu = find_qemu(cache / "emulate")
    if spec.cpu not in qemu.cpu_models():
        raise UsageError(f"QEMU {qemu.version} has no CPU model {spec.cpu!r} (e.g. cortex-a76, cortex-a72, "
                         "neoverse-n1, max)")
    wheels = ensure_wheels(spec, cache / "emulate")  # first: a runtime without a wheel fails in seconds
    root = ensure_rootfs(spec.debian, cache / "emulate")
    folder = devices_dir(cache) / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "device.json").unlink(missing_ok=True)
    write_wrapper(folder / "python", qemu, spec.cpu, root, wheels)
    check_runtime(folder / "python", spec)
    sshd.make_keys(folder)
    runtime = f"{spec.runtime_name} {installed_version(wheels, spec.runtime_name)}"
    emulation = Emulation(name, spec.release, runtime, spec.cpu, qemu.version)
    data = {"spec": asdict(spec), "emulation": asdict(emulation), "root": str(root), "wheels": str(wheels),
            "qemu": str(qemu.path)}
    (folder / "device.json").write_text(json.dumps(data, indent=1) + "\n")
    return EmulatedDevice(name, folder, spec, emulation), True


def write_wrapper(path: Path, qemu: Qemu, cpu: str, root: Path, wheels: Path) -> None:
    """The device's python: the arm64 root's python3 under qemu-aarch64, seeing only the wheels folder."""
    q = shlex.quote
    path.write_text("#!/bin/sh\n# an emulated aarch64 device's python (edgepipe device emulate)\n"
                    f"PYTHONPATH={q(str(wheels))} PYTHONNOUSERSITE=1 exec {q(str(qemu.path))} -cpu {q(cpu)} "
                    f"-L {q(str(root))} {q(str(root / 'usr/bin/python3'))} \"$@\"\n")
    path.chmod(0o755)


def check_runtime(python: Path, spec: EmulatedSpec) -> None:
    """The runtime must load on the device (a wheel for a newer glibc would not): one line if it does not."""
    code = f"import numpy, {IMPORTS[spec.runtime_name]}"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise UsageError(f"{spec.runtime} does not load on Debian {spec.release} aarch64: {last}")


def connect(device: EmulatedDevice) -> SshDevice:
    """The device as an SSH destination (its sshd on loopback started if needed), remote python the wrapper."""
    port = sshd.ensure_running(device.folder)
    return SshDevice(user=getpass.getuser(), host="127.0.0.1", port=port, python=str(device.python),
                     ssh_options=("-F", str(device.folder / "ssh_config")), emulated=device.emulation)
