"""The measuring CPU's features (runner.cpu_info) against what a device profile declares (targets.cpu)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from targets.cpu import ExpectedCpu
from targets.profiles import load_profile
from targets.runner import cpu_info

XEON = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\nflags\t\t: fpu sse avx2 avx512f avx512_vnni amx_int8 amx_tile\n"
EPYC = "processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu sse avx avx2 fma\n"
PI5 = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes crc32 atomics fphp asimdhp asimdrdm lrcpc dcpop asimddp\n"


def test_features_from_cpuinfo() -> None:
    assert cpu_info(XEON)["features"] == ["amx", "avx2", "avx512", "avx512_vnni"]
    assert cpu_info(XEON)["model"] == "Intel(R) Xeon(R) Platinum 8481C"
    assert cpu_info(EPYC)["features"] == ["avx2"]
    assert cpu_info(PI5)["features"] == ["dotprod", "neon"]
    here = cpu_info()
    assert here["arch"] and set(here["features"]) <= {"amx", "avx2", "avx512", "avx512_vnni", "avx_vnni"} | {
        "neon", "dotprod", "i8mm", "sve"}


def test_mismatch_names_both_cpus() -> None:
    nuc = ExpectedCpu("intel-nuc", "x86_64", "Core", ("avx2", "avx_vnni"))
    epyc = {**cpu_info(EPYC), "arch": "x86_64"}
    msg = nuc.mismatch(epyc)
    assert msg is not None and "AMD EPYC 7B12 (x86_64: avx2)" in msg and "intel-nuc's Core (x86_64: avx2, avx_vnni)" in msg
    assert nuc.mismatch({"arch": "x86_64", "model": "x", "features": ["avx_vnni", "avx2"]}) is None
    assert nuc.mismatch(None) is None  # an old runner that does not report its CPU


def test_bundled_profiles_declare_their_cpu() -> None:
    rpi4, rpi5 = load_profile("rpi4"), load_profile("rpi5")
    assert rpi5.expected_cpu == ExpectedCpu("rpi5", "aarch64", "Cortex-A76", ("neon", "dotprod"))
    assert rpi4.expected_cpu is not None and "dotprod" not in rpi4.expected_cpu.features
    assert load_profile("host").expected_cpu is None  # the host measures for itself
    device = rpi5.ssh_device({"EDGEPIPE_DEVICE_RPI5": "ssh://pi@10.0.0.5"})
    assert device is not None and device.expected_cpu == rpi5.expected_cpu


@pytest.mark.parametrize(("extra", "error"), [
    ('arch = "aarch64"\ncpu_features = ["vnni"]\n', "unknown cpu_features"),
    ('cpu_features = ["neon"]\n', "cpu_features needs arch"),
    ('arch = "riscv64"\n', "arch"),
])
def test_bad_cpu_declarations(tmp_path: Path, extra: str, error: str) -> None:
    (tmp_path / "board.toml").write_text('description = "b"\ntarget = "tflite"\n' + extra)
    with pytest.raises(ConfigError, match=error):
        load_profile("board", tmp_path)
