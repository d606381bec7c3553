"""The subcommands behind pipeline.cli; heavy imports happen here, after argument parsing."""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pipeline.config import TARGET_NAMES, Config, InputKind, config_from_dict, load_config
from pipeline.errors import DataError, ModelLoadError, UsageError
from pipeline.inputs.arrays import split_path
from pipeline.inputs.examples import EXAMPLES, get_example
from pipeline.measure.verify import Bench
from pipeline.report.metric_keys import to_document
from pipeline.ui import print_json
from targets.base import TargetName

_RUN_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")


def _exists(path: Path) -> bool:
    """Path.exists that answers False where the OS refuses the name (too long, NUL byte, ...)."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def resolve_config(spec: str) -> Config:
    """A TOML file, or the name of a built-in example."""
    path = Path(spec)
    if path.suffix == ".toml" or _exists(path):
        return load_config(path)
    if spec in EXAMPLES:
        ex = get_example(spec)
        return config_from_dict(ex.config, name=ex.name, base_dir=Path.cwd(), source=f"example {spec}")
    raise UsageError(f"{spec}: no such config file or built-in example (see `edgepipe examples`)")


def resolve_targets(config: Config, requested: list[str] | None, how: str = "pass --target") -> tuple[str, ...]:
    """The targets to build: those requested, else those the config enables. `how`: how the caller requests
    them (a flag on the command line, an argument in the Python API), for the error."""
    for name in requested or []:
        if name not in TARGET_NAMES:
            raise UsageError(f"unknown target '{name}' (targets: {', '.join(TARGET_NAMES)})")
    chosen = list(dict.fromkeys(requested)) if requested else config.targets.enabled()
    if not chosen:
        raise UsageError(f"{config.name}: no target enabled: add [targets.tflite], [targets.openvino] or "
                         f"[targets.tensorrt], or {how}")
    return tuple(chosen)


@dataclass(frozen=True)
class DeviceChoice:
    """Where `--device` measures, and how when it names a device profile."""

    ssh: Any = None  # a targets.ssh.SshDevice; None: this host
    bench: Bench | None = None  # the profile's threads, warmup and iterations; None: no profile named
    targets: tuple[str, ...] | None = None  # the targets the device can run; None: any


def resolve_device(spec: str | None, config: Config | None, remote_python: str | None) -> DeviceChoice:
    """This host (no spec), a config [devices] entry, an ssh:// URL or a device profile (`host` included)."""
    if spec is None:
        return DeviceChoice()
    from targets.ssh import SshDevice

    if config is not None and spec in config.devices:
        d = config.devices[spec]
        ssh = replace(SshDevice.parse(d.host, python=remote_python or d.python), tensorrt=d.target == TargetName.TENSORRT,
                      name=spec)
        return DeviceChoice(ssh)
    if "://" in spec or "@" in spec:
        return DeviceChoice(replace(SshDevice.parse(spec, python=remote_python), name=spec))
    from pipeline.devices import EMULATED_TARGETS, find_emulated

    emulated = find_emulated(spec)
    if emulated is not None:
        from targets.emulate.registry import connect

        # latency under emulation is not the board's: a short run, never judged
        return DeviceChoice(replace(connect(emulated), name=spec), Bench(warmup=2, iterations=20, threads=1),
                            EMULATED_TARGETS)
    from targets.profiles import load_profile

    profile = load_profile(spec)
    bench = Bench(warmup=profile.warmup, iterations=profile.iterations, threads=profile.threads)
    device = profile.ssh_device()
    if device is None:
        return DeviceChoice(None, bench)
    ssh = replace(device, python=remote_python or device.python, tensorrt=profile.target == TargetName.TENSORRT,
                  name=spec)
    return DeviceChoice(ssh, bench)


# what is missing, by input: the error and what it says after the path
MISSING = {InputKind.MODEL: (ModelLoadError, "model not found"), InputKind.DATA: (DataError, "data file not found"),
           InputKind.IMAGES: (DataError, "image folder not found"),
           InputKind.STUDENT: (ModelLoadError, "student model not found (distill.student)"),
           InputKind.CALIBRATION: (DataError, "calibration data not found (quantize.calibration_data)")}


def check_inputs(config: Config) -> None:
    """Input files that are not there fail now: before TensorFlow loads, before any run directory exists."""
    for kind, path in config.input_paths():
        if not _exists(path) or (kind is InputKind.IMAGES and not path.is_dir()):
            error, what = MISSING[kind]
            raise error(f"{path}: {what}")
        if kind is InputKind.DATA and path.is_dir() and not any(
                split_path(path, k) or any(path.glob(f"{k}.*")) for k in ("x_train", "x_test")):
            raise DataError(f"{path}: a directory without x_train.npy / x_test.npy (a data folder holds one .npy "
                            "file, or a folder of .npy shards, per split)")


def checked_paths(config: Config, out: Path | None) -> Path:
    """Every path a build writes or reads, checked in one place before TensorFlow loads: the run directory
    (`out`, else runs/<config name>; returned resolved, check_out) and every input the config names."""
    run_dir = check_out(out if out is not None else default_out(config))
    check_inputs(config)
    return run_dir


def default_out(config: Config) -> Path:
    """runs/<config-name>; a name that is not a plain folder name cannot choose where the run goes."""
    if not _RUN_NAME.fullmatch(config.name) or set(config.name) == {"."}:
        raise UsageError(f"config name '{config.name}' is not a usable run directory name: pass --out DIR")
    return Path("runs") / config.name


def check_out(out: Path) -> Path:
    """The run directory that `build` will replace: refuse anything but a new path, an empty directory or
    an earlier edgepipe run (a report.json in it), so a mistyped --out cannot delete a user's files."""
    try:
        resolved = out.resolve()
        if resolved.is_symlink() or resolved.exists():
            if not resolved.is_dir():
                raise UsageError(f"--out {out}: exists and is not a directory")
            if any(resolved.iterdir()) and not (resolved / "report.json").is_file():
                raise UsageError(f"--out {out}: a directory with files that is not an edgepipe run (no report.json); "
                                 "refusing to replace it")
        parent = next((p for p in resolved.parents if p.exists()), None)
        if parent is None or not parent.is_dir():
            raise UsageError(f"--out {out}: {parent} is not a directory")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise UsageError(f"--out {out}: {parent} is not writable")
    except OSError as err:
        raise UsageError(f"--out {out}: {err.strerror or err}") from None
    return resolved


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and Keras with file descriptor 2 on /dev/null. TF 2.21 writes absl lines
    ("All log messages before absl::InitializeLog()...", oneDNN notices) to stderr while it loads,
    whatever TF_CPP_MIN_LOG_LEVEL says; they would break the one-line error contract. Import errors
    still raise as usual."""
    import sys

    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


def cmd_build(args: argparse.Namespace, ui: Any) -> int:

    config = resolve_config(args.config)
    targets = resolve_targets(config, args.targets)
    device = resolve_device(args.device, config, args.remote_python)
    kept = device_targets(targets, device, explicit=bool(args.targets), name=args.device)
    if kept != targets:
        ui.info(f"building {', '.join(kept)} only: device {args.device} runs {', '.join(device.targets or ())}")
    targets = kept
    out = checked_paths(config, args.out)
    import_tensorflow_quietly()
    from pipeline.build import BuildRequest, build
    req = BuildRequest(config, targets, out, device.ssh, args.allow_unsafe_model, not args.no_cache, device.bench)
    report = build(req, ui)
    if args.json:
        print_json(to_document(report))
    return 0 if report["passed"] else 1


def device_targets(targets: tuple[str, ...], device: DeviceChoice, explicit: bool, name: str | None) -> tuple[str, ...]:
    """The targets to build for a device that runs only some (an emulated one runs tflite)."""
    if device.targets is None:
        return targets
    wrong = [t for t in targets if t not in device.targets]
    if explicit and wrong:
        raise UsageError(f"device {name} runs only {', '.join(device.targets)}, not {', '.join(wrong)}")
    kept = tuple(t for t in targets if t in device.targets)
    if not kept:
        raise UsageError(f"device {name} runs only {', '.join(device.targets)}: enable that target")
    return kept


def cmd_verify(args: argparse.Namespace, ui: Any) -> int:
    from pipeline.measure.rerun import verify_run

    device = resolve_device(args.device, None, args.remote_python)
    report = verify_run(args.run_dir, device.ssh, ui, device.bench, device.targets)
    if args.json:
        print_json(to_document(report))
    return 0 if report["passed"] else 1


def bench_flags(args: argparse.Namespace) -> dict[str, int]:
    """The --threads, --warmup and --iterations given on the command line (they win over a profile's)."""
    given = {k: getattr(args, k) for k in ("threads", "warmup", "iterations") if getattr(args, k) is not None}
    for flag in ("threads", "iterations"):
        if given.get(flag, 1) < 1:
            raise UsageError(f"--{flag} must be at least 1")
    if given.get("warmup", 0) < 0:
        raise UsageError("--warmup must not be negative")
    return given


def cmd_search(args: argparse.Namespace, ui: Any) -> int:
    from pipeline.search.runner import SearchRequest, check_search_out, run_search
    from pipeline.search.space import plan

    config = resolve_config(args.config)
    if args.trials is not None and args.trials < 1:
        raise UsageError("--trials must be at least 1")
    plan(config)
    out = check_search_out(args.out or default_out(config).with_name(f"{config.name}-search"))
    check_inputs(config)
    import_tensorflow_quietly()
    req = SearchRequest(config, out, args.trials or config.search.trials, args.storage, args.study or config.name)
    return run_search(req, ui)


def cmd_init(args: argparse.Namespace, ui: Any) -> int:
    from pipeline.init_config import check_output, write_starter_config

    out = args.output or Path(f"{args.model.stem or 'model'}.toml")
    check_output(out)
    if not _exists(args.model):
        raise ModelLoadError(f"{args.model}: model not found")
    if args.data is not None and not args.data.is_file():
        raise DataError(f"{args.data}: data file not found")
    import_tensorflow_quietly()
    path = write_starter_config(args.model, args.data, out, args.allow_unsafe_model)
    ui.info(f"wrote {path}: check it, then `edgepipe build {path}`")
    return 0


def cmd_examples(args: argparse.Namespace, ui: Any) -> int:
    for ex in EXAMPLES.values():
        print(f"{ex.name}\t{ex.description}")
    return 0


def cmd_report(args: argparse.Namespace, ui: Any) -> int:
    from pipeline.report.html import render_run

    path = render_run(args.run_dir)
    ui.info(f"wrote {path}")
    return 0
