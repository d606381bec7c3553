"""The devices of a benchmark run: each `--device` resolved once (this host, an SSH board, a profile, an
emulated device), what artifact kinds it runs, and the machine it shares (its lane): devices on one machine
measure one at a time, so that no measurement runs against another."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import UsageError
from pipeline.measure.verify import HOST, Bench
from targets import target_of_artifact

LOCAL = "this host"  # the lane of the host itself, loopback SSH devices and emulated devices
_LOOPBACK = ("127.0.0.1", "::1", "localhost", "ip6-localhost")


@dataclass(frozen=True)
class BenchDevice:
    """One `--device`: `ssh` None is this host; `targets` None runs any artifact kind."""

    name: str  # what the user typed ("host" for none)
    ssh: Any = None  # a targets.ssh.SshDevice
    bench: Bench | None = None  # a profile's threads, warmup and iterations
    targets: tuple[str, ...] | None = None

    @property
    def url(self) -> str:
        return HOST if self.ssh is None else str(self.ssh.url)

    @property
    def emulated(self) -> bool:
        return self.ssh is not None and self.ssh.emulated is not None

    @property
    def lane(self) -> str:
        """The machine the device is: devices with one lane never measure at the same time."""
        if self.ssh is None or self.emulated or str(self.ssh.host).lower() in _LOOPBACK:
            return LOCAL
        return f"{self.ssh.host}:{self.ssh.port or 22}"

    @property
    def measured_on(self) -> str:
        """Where its latency comes from: "host", "device" (a board over SSH) or "emulated" (never a board's)."""
        return "emulated" if self.emulated else "host" if self.ssh is None else "device"

    def where(self) -> str:
        """Where the latency was measured, in words."""
        if self.emulated:
            return str(self.ssh.emulated.describe())
        if self.ssh is None:
            return "this host"
        loop = " (this host, over loopback SSH)" if self.lane == LOCAL else ""
        return f"{self.ssh.url}{loop}"

    def can_run(self, artifact: Path) -> bool:
        target = target_of_artifact(artifact)
        return target is not None and (self.targets is None or target.value in self.targets)

    def why_not(self, artifact: Path) -> str:
        return f"device {self.name} runs only {', '.join(self.targets or ())} artifacts, not {artifact.name}"


def resolve_one(spec: str | None, remote_python: str | None) -> BenchDevice:
    """A device spec as `--device` takes it (None: this host); an unknown name is a UsageError."""
    from pipeline.commands import resolve_device
    from pipeline.devices import EMULATED_TARGETS, find_emulated
    from targets.profiles import load_profile, profile_names

    choice = resolve_device(spec, None, remote_python)
    name = spec or HOST
    targets: tuple[str, ...] | None = None
    if spec is not None and "://" not in spec and "@" not in spec:
        if find_emulated(spec) is not None:
            targets = EMULATED_TARGETS
        elif spec in profile_names():
            targets = load_profile(spec).targets
    return BenchDevice(name, choice.ssh, choice.bench, targets)


def resolve_devices(specs: list[str] | None, remote_python: str | None) -> list[BenchDevice]:
    """Every `--device` once, in the order given; none: this host."""
    devices: list[BenchDevice] = []
    for spec in dict.fromkeys(specs or [None]):  # type: ignore[list-item]
        devices.append(resolve_one(spec, remote_python))
    return devices


def plan(artifacts: list[Path], devices: list[BenchDevice]) -> list[tuple[Path, BenchDevice]]:
    """The (artifact, device) cells to measure: each artifact on each device that runs its kind. An artifact no
    named device runs, or a device that runs none of the artifacts, is a UsageError (nothing is measured)."""
    for artifact in artifacts:
        if not any(d.can_run(artifact) for d in devices):
            raise UsageError(devices[0].why_not(artifact) if len(devices) == 1 else
                             f"no device given runs {artifact.name}: "
                             + "; ".join(f"{d.name} runs {', '.join(d.targets or ())}" for d in devices))
    for d in devices:
        if not any(d.can_run(a) for a in artifacts):
            raise UsageError(f"device {d.name} runs only {', '.join(d.targets or ())} artifacts: none given")
    return [(a, d) for d in devices for a in artifacts if d.can_run(a)]
