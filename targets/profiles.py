"""Device profiles: targets/devices/<name>.toml (a plain data folder), validated strictly.

A profile names the target a device runs, how to reach it and how to measure there. `host` may be
empty: then EDGEPIPE_DEVICE_<NAME> (upper case, '-' -> '_') or `--device ssh://...` supplies it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .base import TargetName
from .cpu import FEATURES, ExpectedCpu
from .errors import ConfigError, UsageError
from .ssh import SshDevice

DEVICES_DIR = Path(__file__).resolve().parent / "devices"
ALL_TARGETS = tuple(t.value for t in TargetName)
_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")


class _ProfileFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field(min_length=1)
    target: Literal["tflite", "openvino", "tensorrt", "all"]
    host: str = ""
    local: bool = False
    python: str = Field(default="python3", min_length=1)
    threads: Annotated[int, Field(ge=1)] = 1
    warmup: Annotated[int, Field(ge=0)] = 10
    iterations: Annotated[int, Field(ge=1)] = 100
    notes: tuple[str, ...] = ()
    arch: Literal["x86_64", "aarch64"] | None = None  # the device's CPU, when the profile declares it
    cpu: str = ""
    cpu_features: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _known_features(self) -> _ProfileFile:
        unknown = sorted(set(self.cpu_features) - set(FEATURES))
        if unknown:
            raise ValueError(f"unknown cpu_features {unknown} (known: {', '.join(FEATURES)})")
        if self.cpu_features and self.arch is None:
            raise ValueError("cpu_features needs arch")
        return self

    @model_validator(mode="after")
    def _local_has_no_host(self) -> _ProfileFile:
        if self.local and self.host:
            raise ValueError("a local profile has no 'host'")
        if self.host:
            SshDevice.parse(self.host)  # raises UsageError with the reason
        return self


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    target: str  # "tflite" | "openvino" | "tensorrt" | "all" (the host profile)
    host: str  # ssh://USER@HOST[:PORT] or an ssh config alias; "" = not set (see resolve_host)
    python: str
    threads: int
    warmup: int
    iterations: int
    local: bool = False
    notes: tuple[str, ...] = ()
    expected_cpu: ExpectedCpu | None = None

    @property
    def targets(self) -> tuple[str, ...]:
        return ALL_TARGETS if self.target == "all" else (self.target,)

    @property
    def env_var(self) -> str:
        return "EDGEPIPE_DEVICE_" + self.name.upper().replace("-", "_")

    def resolve_host(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The SSH destination: EDGEPIPE_DEVICE_<NAME> if set, else `host`; None for a local profile."""
        if self.local:
            return None
        host = (os.environ if environ is None else environ).get(self.env_var, "").strip() or self.host
        if not host:
            raise UsageError(
                f"device {self.name!r} has no host: set {self.env_var}=ssh://USER@HOST[:PORT] "
                f"or pass --device ssh://USER@HOST[:PORT]"
            )
        return host

    def ssh_device(self, environ: Mapping[str, str] | None = None) -> SshDevice | None:
        """Where to run this profile's measurements; None means here, without SSH."""
        host = self.resolve_host(environ)
        if host is None:
            return None
        return replace(SshDevice.parse(host, python=self.python), expected_cpu=self.expected_cpu)


def _read(path: Path) -> DeviceProfile:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    try:
        f = _ProfileFile.model_validate(data)
    except ValidationError as err:
        e = err.errors()[0]
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{path}: {'.'.join(str(p) for p in e['loc']) or '(top level)'}: {msg}") from None
    except UsageError as err:
        raise ConfigError(f"{path}: host: {err}") from None
    return DeviceProfile(
        name=path.stem, description=f.description, target=f.target, host=f.host, python=f.python,
        threads=f.threads, warmup=f.warmup, iterations=f.iterations, local=f.local, notes=f.notes,
        expected_cpu=None if f.arch is None else ExpectedCpu(path.stem, f.arch, f.cpu, f.cpu_features),
    )  # fmt: skip


def profile_names(directory: Path | None = None) -> list[str]:
    folder = directory or DEVICES_DIR
    return sorted(p.stem for p in folder.glob("*.toml") if _NAME.fullmatch(p.stem))


def list_profiles(directory: Path | None = None) -> list[DeviceProfile]:
    """Every profile in the folder, by name."""
    folder = directory or DEVICES_DIR
    return [_read(folder / f"{name}.toml") for name in profile_names(folder)]


def load_profile(name: str, directory: Path | None = None) -> DeviceProfile:
    """The profile called `name`; an unknown name is a UsageError that lists the known ones."""
    folder = directory or DEVICES_DIR
    known = profile_names(folder)
    if name not in known:
        raise UsageError(f"unknown device {name!r}: known devices are {', '.join(known) or '(none)'}, "
                         "or pass ssh://USER@HOST[:PORT]")  # fmt: skip
    return _read(folder / f"{name}.toml")
