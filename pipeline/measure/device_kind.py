"""Whether a latency may decide anything: only where it was measured on the target's kind of device.

tflite serves ARM CPUs, openvino x86 (Intel) CPUs, tensorrt NVIDIA GPUs through TensorRT (targets' device_family).
A latency measured elsewhere (the x86 host for tflite, ONNX Runtime for tensorrt, any emulated device) is
recorded as informational: never judged against max_latency_ms, never used by ship_faster_float, precision
auto, the slower-int8 warning's advice or a search's latency objective. `[targets.X] deploy_on_host = true`
says this host is the deployment machine: its latency then counts."""

from __future__ import annotations

from typing import Any

from targets import DeviceFamily, TargetName, get_target

ARM_ARCHES = ("aarch64", "arm64", "armv7l", "armv8l", "armv7", "armv8")
X86_ARCHES = ("x86_64", "amd64", "i386", "i686", "x86")


def family_of(target: TargetName | str) -> DeviceFamily:
    return get_target(target).device_family


def _arch_family(arch: str) -> DeviceFamily | None:
    arch = arch.lower()
    if arch in ARM_ARCHES or arch.startswith("arm"):
        return DeviceFamily.ARM_CPU
    if arch in X86_ARCHES:
        return DeviceFamily.X86_CPU
    return None


def informational_reason(target: TargetName | str, device: Any, cpu: dict[str, Any] | None,
                         deploy_on_host: bool = False) -> str | None:
    """None when a latency of `target`'s artifact measured on `device` (None: this host) with CPU `cpu` (what
    the runner reported) decides; else why it is informational only."""
    family = family_of(target)
    if device is not None and getattr(device, "emulated", None) is not None:
        return f"measured under emulation, not on {_a(family)}"
    if device is None and deploy_on_host:
        return None
    if family is DeviceFamily.TENSORRT:
        if device is not None and getattr(device, "tensorrt", False):
            return None
        where = "this host" if device is None else getattr(device, "url", "the device")
        return f"measured with ONNX Runtime on {where}, not with TensorRT on {_a(family)}"
    declared = getattr(getattr(device, "expected_cpu", None), "arch", None)
    arch = str((cpu or {}).get("arch") or declared or "")
    measured = _arch_family(arch)
    if measured is family:
        return None
    where = "this host" if device is None else "the device"
    return (f"measured on {where}'s {arch or 'unknown'} CPU, not on {_a(family)}"
            + ("; set deploy_on_host = true under [targets." + TargetName(target).value + "] if this host is "
               "where it runs" if device is None else ""))


def _a(family: DeviceFamily) -> str:
    return "an " + family.value  # an ARM CPU, an x86 CPU, an NVIDIA GPU


def decides_on(target: TargetName | str) -> str:
    """Where a latency of this target could decide, in words (for auto's reason)."""
    family = family_of(target)
    if family is DeviceFamily.TENSORRT:
        return "a Jetson (or any NVIDIA GPU) measured with TensorRT (--device with tensorrt = true)"
    if family is DeviceFamily.ARM_CPU:
        return "an ARM CPU (a board over SSH, e.g. --device rpi5)"
    return "an x86 CPU (this host when it is x86, or deploy_on_host = true)"
