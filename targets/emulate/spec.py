"""What an emulated device is: a Debian release, a runtime requirement and a QEMU CPU model."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass

from ..errors import UsageError


@dataclass(frozen=True)
class Release:
    """A Debian release as the device image: its Python and its glibc (what the wheels must be built for)."""

    name: str
    python: str
    glibc_minor: int  # glibc 2.N

    def platforms(self) -> list[str]:
        """pip --platform tags an aarch64 wheel may carry to load on this release's glibc."""
        tags = [f"manylinux_2_{n}_aarch64" for n in range(17, self.glibc_minor + 1)]
        return [*tags, "manylinux2014_aarch64"]


RELEASES = {
    "bookworm": Release("bookworm", "3.11", 36),  # Raspberry Pi OS 12
    "bullseye": Release("bullseye", "3.9", 31),  # Raspberry Pi OS 11
}
RUNTIMES = ("ai-edge-litert", "tflite-runtime")  # what targets/runner.py opens a .tflite with
DEFAULT_RELEASE = "bookworm"
DEFAULT_RUNTIME = "ai-edge-litert"
DEFAULT_CPU = "cortex-a76"  # Raspberry Pi 5 (the rpi4 profile's CPU is cortex-a72)
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_REQUIREMENT = re.compile(r"([A-Za-z0-9_.-]+)\s*(?:(==|>=|<=|~=|!=|<|>)\s*([A-Za-z0-9_.*+!-]+))?")


@dataclass(frozen=True)
class EmulatedSpec:
    """Everything a device is built from: the same spec gives the same device (its `key`)."""

    release: str = DEFAULT_RELEASE
    runtime: str = DEFAULT_RUNTIME  # a pip requirement: ai-edge-litert, tflite-runtime==2.13.0, ...
    cpu: str = DEFAULT_CPU

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    @property
    def debian(self) -> Release:
        return RELEASES[self.release]

    @property
    def runtime_name(self) -> str:
        match = _REQUIREMENT.fullmatch(self.runtime.strip())
        return "" if match is None else match.group(1).lower().replace("_", "-")


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise UsageError(f"bad device name {name!r}: use lower-case letters, digits and '-'")
    return name


def check_spec(spec: EmulatedSpec) -> EmulatedSpec:
    """The spec, or a UsageError naming what is wrong (release, runtime, CPU model syntax)."""
    if spec.release not in RELEASES:
        raise UsageError(f"unknown release {spec.release!r}: known releases are {', '.join(RELEASES)}")
    if spec.runtime_name not in RUNTIMES:
        raise UsageError(f"unsupported runtime {spec.runtime!r}: expected {' or '.join(RUNTIMES)}, "
                         "optionally pinned (e.g. tflite-runtime==2.13.0)")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]*", spec.cpu):
        raise UsageError(f"bad CPU model {spec.cpu!r} (e.g. cortex-a76, cortex-a72, neoverse-n1, max)")
    return spec


@dataclass(frozen=True)
class Emulation:
    """What the report says about an emulated device: it is not a board, and whose kernels ran."""

    device: str
    release: str
    runtime: str  # "ai-edge-litert 2.3.0"
    cpu_model: str  # QEMU's -cpu
    qemu: str  # QEMU's version

    def report(self) -> dict[str, object]:
        return {"emulated": True, "name": self.device, "arch": "aarch64", "cpu_model": self.cpu_model, "runtime": self.runtime,
                "release": f"Debian {self.release} arm64", "qemu": f"qemu-aarch64 {self.qemu}"}

    def describe(self) -> str:
        return f"emulated aarch64 {self.cpu_model} (qemu-aarch64 {self.qemu}, Debian {self.release}, {self.runtime})"
