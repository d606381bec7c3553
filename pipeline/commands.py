"""The subcommands behind pipeline.cli; heavy imports happen here, after argument parsing."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .config import TARGET_NAMES, Config, config_from_dict, load_config
from .errors import UsageError
from .examples import EXAMPLES, get_example


def resolve_config(spec: str) -> Config:
    """A TOML file, or the name of a built-in example."""
    path = Path(spec)
    if path.suffix == ".toml" or path.exists():
        return load_config(path)
    if spec in EXAMPLES:
        ex = get_example(spec)
        return config_from_dict(ex.config, name=ex.name, base_dir=Path.cwd(), source=f"example {spec}")
    raise UsageError(f"{spec}: no such config file or built-in example (see `edgepipe examples`)")


def resolve_targets(config: Config, requested: list[str] | None) -> tuple[str, ...]:
    for name in requested or []:
        if name not in TARGET_NAMES:
            raise UsageError(f"unknown target '{name}' (targets: {', '.join(TARGET_NAMES)})")
    chosen = list(dict.fromkeys(requested)) if requested else config.targets.enabled()
    if not chosen:
        raise UsageError(f"{config.name}: no target enabled: add [targets.tflite], [targets.openvino] or "
                         "[targets.tensorrt], or pass --target")
    return tuple(chosen)


def resolve_device(spec: str | None, config: Config | None, remote_python: str | None) -> Any:
    """None for this host; otherwise an SshDevice from a URL, a config [devices] entry or a profile."""
    if spec is None or spec == "host":
        return None
    from targets.ssh import SshDevice

    if config is not None and spec in config.devices:
        d = config.devices[spec]
        return SshDevice.parse(d.host, python=remote_python or d.python)
    if spec.startswith("ssh://"):
        return SshDevice.parse(spec, python=remote_python)
    from targets.profiles import load_profile

    profile = load_profile(spec)
    import os

    host = os.environ.get(f"EDGEPIPE_DEVICE_{spec.upper().replace('-', '_')}") or profile.host
    if not host:
        return None if profile.name == "host" else _no_host(spec)
    return SshDevice.parse(host, python=remote_python or profile.python)


def _no_host(name: str) -> Any:
    env = f"EDGEPIPE_DEVICE_{name.upper().replace('-', '_')}"
    raise UsageError(f"device '{name}' has no address: set {env}=ssh://USER@HOST or pass --device ssh://...")


def cmd_build(args: argparse.Namespace, ui: Any) -> int:
    from .build import BuildRequest, build
    from .cli import print_json

    config = resolve_config(args.config)
    targets = resolve_targets(config, args.targets)
    device = resolve_device(args.device, config, args.remote_python)
    out = args.out or Path("runs") / config.name
    req = BuildRequest(config, targets, out, device, args.allow_unsafe_model, not args.no_cache)
    report = build(req, ui)
    if args.json:
        print_json(report)
    return 0 if report["passed"] else 1


def cmd_verify(args: argparse.Namespace, ui: Any) -> int:
    from .cli import print_json
    from .rerun import verify_run

    device = resolve_device(args.device, None, args.remote_python)
    report = verify_run(args.run_dir, device, ui)
    if args.json:
        print_json(report)
    return 0 if report["passed"] else 1


def cmd_bench(args: argparse.Namespace, ui: Any) -> int:
    from rich.table import Table

    from .cli import print_json
    from .verify import Bench, run_measurement

    if not args.artifact.is_file():
        raise UsageError(f"{args.artifact}: artifact not found")
    if args.artifact.suffix.lower() not in (".tflite", ".onnx", ".xml"):
        raise UsageError(f"{args.artifact}: expected a .tflite, .onnx or OpenVINO .xml file")
    for flag in ("threads", "iterations"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag} must be at least 1")
    if args.warmup < 0:
        raise UsageError("--warmup must not be negative")
    device = resolve_device(args.device, None, args.remote_python)
    bench = Bench(args.warmup, args.iterations, args.threads)
    result = run_measurement(args.artifact, args.eval, bench, ui, args.artifact.name, device)
    result.pop("latency_samples_ms", None)
    if args.json:
        print_json(result)
        return 0
    lat = result["latency_ms"]
    table = Table(title=f"{args.artifact.name} on {result['device']} ({result['runtime']})")
    for k in ("median", "p90", "p99", "mean", "std", "min"):
        table.add_column(f"{k} ms", justify="right")
    table.add_row(*(f"{lat[k]:.4f}" for k in ("median", "p90", "p99", "mean", "std", "min")))
    ui.console.print(table)
    if result.get("accuracy") is not None:
        ui.info(f"accuracy {result['accuracy']:.4f} on {result['samples']} samples")
    return 0


def cmd_examples(args: argparse.Namespace, ui: Any) -> int:
    for ex in EXAMPLES.values():
        print(f"{ex.name}\t{ex.description}")
    return 0


def cmd_report(args: argparse.Namespace, ui: Any) -> int:
    from .html_report import render_run

    path = render_run(args.run_dir)
    ui.info(f"wrote {path}")
    return 0
