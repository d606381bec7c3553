"""The CPU a device profile expects, against the CPU that really measured (runner.cpu_info()).

Int8 kernels differ by ISA (VNNI, AMX, ARM dot-product): accuracy and latency measured on one CPU are not
another's. When they differ, the report and the terminal say whose numbers they are."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .runner import CPU_FLAGS

FEATURES = tuple(sorted(set(CPU_FLAGS.values())))


@dataclass(frozen=True)
class ExpectedCpu:
    """What a device profile declares: `device` is the profile name, `model` a free-text CPU name."""

    device: str
    arch: str
    model: str = ""
    features: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"{self.device}'s {self.model or self.arch} ({self.arch}: {', '.join(sorted(self.features)) or 'baseline'})"

    def mismatch(self, measured: dict[str, Any] | None) -> str | None:
        """A sentence when the measuring CPU is not the one expected; None when it matches (or is unknown)."""
        if not measured or not measured.get("arch"):
            return None
        got = tuple(sorted(str(f) for f in measured.get("features", ())))
        if measured["arch"] == self.arch and got == tuple(sorted(self.features)):
            return None
        where = f"{measured.get('model') or measured['arch']} ({measured['arch']}: {', '.join(got) or 'baseline'})"
        return (f"accuracy and latency were measured on {where}, not on {self.describe()}: they are that "
                "CPU's numbers, not the device's")
