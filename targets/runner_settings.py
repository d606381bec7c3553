"""How the runner times an artifact: warm-up runs, timed iterations and threads, one frozen object from the
build's config or a device profile down to the runner on the device.

Self-contained like runner.py (Python >= 3.8, the standard library only) and copied next to it."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class Bench:
    warmup: int = 10
    iterations: int = 100
    threads: int = 1

    def overridden(self, explicit: dict) -> Bench:
        """These settings with those given explicitly (a CLI flag, a config key) in their place."""
        names = {f.name for f in fields(self)}
        return replace(self, **{k: v for k, v in explicit.items() if k in names})
