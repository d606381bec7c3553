"""`edgepipe device emulate|list|remove`: emulated aarch64 devices (targets.emulate), kept in the user's cache
folder, and how `--device NAME` reaches one."""

from __future__ import annotations

import argparse
from typing import Any

from pipeline.cache import default_root
from pipeline.errors import UsageError

EMULATED_TARGETS = ("tflite",)  # what an emulated device's runtime (LiteRT / tflite-runtime) runs


def find_emulated(name: str) -> Any:
    """The emulated device called `name` (a targets.emulate.registry.EmulatedDevice), or None."""
    from targets.emulate.registry import load
    from targets.emulate.spec import check_name

    try:
        check_name(name)
    except UsageError:  # not a name an emulated device can have
        return None
    return load(name, default_root())


def add_device_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    from targets.emulate.spec import DEFAULT_CPU, DEFAULT_RELEASE, DEFAULT_RUNTIME, RELEASES

    d = sub.add_parser("device", parents=parents, help="emulated aarch64 devices: emulate, list, remove")
    dsub = d.add_subparsers(dest="device_command", required=True, parser_class=type(d))
    e = dsub.add_parser("emulate", parents=parents, help="build an emulated aarch64 device (QEMU) usable as --device NAME")
    e.add_argument("name")
    e.add_argument("--release", default=DEFAULT_RELEASE, help=f"Debian release: {', '.join(RELEASES)} (default {DEFAULT_RELEASE})")
    e.add_argument("--runtime", default=DEFAULT_RUNTIME, help="ai-edge-litert (default) or tflite-runtime, e.g. tflite-runtime==2.13.0")
    e.add_argument("--cpu", default=DEFAULT_CPU, help=f"QEMU CPU model (default {DEFAULT_CPU}, as on a Raspberry Pi 5)")
    dsub.add_parser("list", parents=parents, help="the emulated devices")
    r = dsub.add_parser("remove", parents=parents, help="remove an emulated device")
    r.add_argument("name")


def cmd_device(args: argparse.Namespace, ui: Any) -> int:
    from targets.emulate import registry
    from targets.emulate.spec import EmulatedSpec, check_name, check_spec
    from targets.profiles import profile_names

    cache = default_root()
    if args.device_command == "emulate":
        check_name(args.name)
        if args.name in profile_names():
            raise UsageError(f"{args.name!r} is a device profile's name: choose another name")
        spec = check_spec(EmulatedSpec(release=args.release, runtime=args.runtime, cpu=args.cpu))
        with ui.task(f"emulated device {args.name}: Debian {spec.release} arm64, {spec.runtime}, {spec.cpu}"):
            device, built = registry.emulate(args.name, spec, cache)
        ui.info(f"{args.name}: {device.emulation.describe()} ({'built' if built else 'up to date'}); "
                f"use --device {args.name}")
        return 0
    if args.device_command == "remove":
        registry.remove(args.name, cache)
        ui.info(f"removed {args.name}")
        return 0
    for d in registry.list_devices(cache):
        print(f"{d.name}\t{d.emulation.describe()}\t{d.folder}")
    return 0
