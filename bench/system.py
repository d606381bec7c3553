"""This machine: CPU model, clock, int8 peak, library versions."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# AVX-512 VNNI: VPDPBUSD does 64 u8 x s8 multiply-accumulates per 512-bit instruction, two per cycle on
# cores with two 512-bit FMA ports (Ice Lake / Sapphire Rapids Xeon): 128 int8 MACs per cycle per core.
VNNI_MACS_PER_CYCLE = 128
DISTS = ("tensorflow-cpu", "keras", "ai-edge-litert", "openvino", "nncf", "onnx", "onnxruntime", "tf2onnx", "numpy")


@dataclass(frozen=True)
class Machine:
    cpu: str
    cores: int
    mhz: float
    vnni: bool

    def peak_macs_per_s(self, threads: int) -> float:
        return VNNI_MACS_PER_CYCLE * self.mhz * 1e6 * threads


def machine() -> Machine:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields: dict[str, str] = {}
    flags = ""
    mhz = []
    for line in text.splitlines():
        key, _, val = line.partition(":")
        key, val = key.strip(), val.strip()
        if key == "cpu MHz":
            mhz.append(float(val))
        elif key == "flags" and not flags:
            flags = val
        fields.setdefault(key, val)
    return Machine(
        cpu=fields.get("model name", platform.processor() or "unknown"),
        cores=os.cpu_count() or 1,
        mhz=max(mhz) if mhz else 0.0,
        vnni="avx512_vnni" in flags.split(),
    )


def host_words() -> str:
    """This host as a table's heading names it: "AMD EPYC (int8 features: avx2, avx512_vnni)"."""
    from targets.runner import cpu_info

    info = cpu_info()
    return f"{info.get('model', '?')} (int8 features: {', '.join(info.get('features', [])) or 'none'})"


def emit(text: str, out: Path | None) -> None:
    """Print a bench script's markdown and write it to `out` as well, where given."""
    print(text)
    if out:
        out.write_text(text)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for d in DISTS:
        try:
            out[d] = version(d)
        except PackageNotFoundError:
            continue
    return out
