"""The public functions: `build`, `verify`, `bench`. Each runs the same code as the command of that name
(pipeline.commands and pipeline.build); pipeline errors come out as the public types of edgepipe.errors."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgepipe.errors import InputError, public_errors
from edgepipe.inputs import ConfigLike, DataLike, ModelLike, data_path, make_config, model_path
from edgepipe.run import LatencyStats, Run, load_run


def _ui(quiet: bool):  # type: ignore[no-untyped-def]
    from pipeline.ui import UI

    return UI(quiet=quiet)


@dataclass(frozen=True)
class BuildOptions:
    """`build`'s less common settings, as the command's flags: `quiet` prints no progress (--quiet),
    `allow_unsafe_model` loads a model file with Lambda layers or custom objects, Keras' safe mode off
    (--allow-unsafe-model: only for a file you trust), `use_cache` False rebuilds everything (--no-cache)."""

    quiet: bool = False
    allow_unsafe_model: bool = False
    use_cache: bool = True


def build(model: ModelLike, data: DataLike, config: ConfigLike = None, targets: Sequence[str] | None = None,
          device: str | None = None, out: str | Path | None = None, *, options: BuildOptions = BuildOptions()) -> Run:
    """Build and verify int8 artifacts of `model`, as `edgepipe build` does, and return the run.

    model: a .keras / .h5 file or SavedModel directory, or an in-memory `keras.Model` (saved to a
        temporary .keras file first).
    data: an .npz path; a mapping of arrays with the keys x_train, y_train, x_test, y_test and optionally
        x_val, y_val (or, for models with several inputs or outputs, `x_train.<input name>` ...); or
        (train, test) or (train, val, test) `tf.data.Dataset`s yielding (x, y), batched or not. Every choice
        of the build is judged on the validation split (without one, a seeded 20% of train is held out).
        Arrays are written to a temporary .npz; memory-mapped .npy arrays are linked and datasets written a
        batch at a time as .npy shards, which the pipeline reads a batch at a time. Unless `config` sets
        [data] scale / mean / std, x is used as given (already preprocessed).
    config: None, a TOML path, a dict with the TOML's sections, or a `pipeline.config.Config`; its [model]
        and [data] paths are replaced by `model` and `data`. None: every installed target with the demo's
        budget (max_accuracy_drop = 0.01).
    targets: "tflite", "openvino", "tensorrt" (default: those the config enables).
    device: None (this host), a device profile or config [devices] name, or ssh://USER@HOST[:PORT].
    out: the run directory (default runs/<config name, else the model's name>); an existing one must be an
        earlier run, which is replaced.
    options: `BuildOptions(quiet=..., allow_unsafe_model=..., use_cache=...)`, the command's flags of those
        names (default: progress shown, safe loading, the cache used).

    A missed budget is a result (`Run.passed` is False), not an error. Raises `InputError` for bad input,
    `StageError` when a compression stage fails; a target that fails is recorded in the run."""
    with public_errors(), tempfile.TemporaryDirectory(prefix="edgepipe-api-") as tmp:
        from pipeline import commands

        mpath, mname = model_path(model, Path(tmp))
        cfg = make_config(config, mpath, mname, data_path(data, Path(tmp)))
        chosen = commands.resolve_targets(cfg, list(targets) if targets is not None else None,
                                          how='pass targets=["tflite", ...]')
        choice = commands.resolve_device(device, cfg, None)
        chosen = commands.device_targets(chosen, choice, explicit=targets is not None, name=device)
        run_dir = commands.checked_paths(cfg, Path(out) if out is not None else None)
        commands.import_tensorflow_quietly()
        from pipeline.build import BuildRequest
        from pipeline.build import build as run_build

        req = BuildRequest(cfg, chosen, run_dir, choice.ssh, options.allow_unsafe_model, options.use_cache,
                           choice.bench)
        run_build(req, _ui(options.quiet))
        return load_run(run_dir)


def verify(run: Run | str | Path, device: str | None = None, *, quiet: bool = False) -> Run:
    """Measure a run's artifacts again (on this host or `device`), rewrite its report, return the new run."""
    run_dir = run.path if isinstance(run, Run) else Path(run).expanduser().resolve()
    with public_errors():
        from pipeline.commands import resolve_device
        from pipeline.measure.rerun import verify_run

        choice = resolve_device(device, None, None)
        verify_run(run_dir, choice.ssh, _ui(quiet), choice.bench, choice.targets)
    return load_run(run_dir)


@dataclass(frozen=True)
class BenchResult:
    """`bench`'s answer: where and in what runtime the artifact ran, its latency, and its accuracy on an
    eval set when one was given."""

    artifact: Path
    runtime: str
    device: str
    latency: LatencyStats
    accuracy: float | None
    samples: int | None

    def __repr__(self) -> str:
        acc = "" if self.accuracy is None else f", accuracy {self.accuracy:.4f} on {self.samples} samples"
        return (f"<BenchResult {self.artifact.name} on {self.device} ({self.runtime}): median "
                f"{self.latency.median:.3f} ms, p90 {self.latency.p90:.3f} ms{acc}>")


def bench(artifact: str | Path, device: str | None = None, *, threads: int | None = None,
          warmup: int | None = None, iterations: int | None = None, eval_set: str | Path | None = None,
          quiet: bool = True) -> BenchResult:
    """Latency of one .tflite / .onnx / OpenVINO .xml in its own runtime, as `edgepipe bench` measures it;
    `eval_set` (an eval.npz with x, y, such as a run's data/eval.npz) adds its accuracy."""
    path = Path(artifact).expanduser().resolve()
    with public_errors():
        from pipeline.commands import resolve_device
        from pipeline.measure.verify import Bench, Measuring, run_measurement
        from targets import target_of_artifact

        target = target_of_artifact(path) if path.is_file() else None
        if target is None:
            raise InputError(f"{path}: not an artifact file (.tflite, .onnx or OpenVINO .xml)")
        flags = {k: v for k, v in (("threads", threads), ("warmup", warmup), ("iterations", iterations))
                 if v is not None}
        if any(v < (0 if k == "warmup" else 1) for k, v in flags.items()):
            raise InputError(f"bench: threads and iterations must be at least 1, warmup at least 0 (got {flags})")
        choice = resolve_device(device, None, None)
        settings = (choice.bench or Bench()).overridden(flags)
        eval_path = None if eval_set is None else Path(eval_set).expanduser().resolve()
        m = run_measurement(path, eval_path, Measuring(settings, _ui(quiet), target, choice.ssh), path.name)
    latency = LatencyStats.model_validate(m["latency_ms"])
    assert latency is not None
    return BenchResult(path, str(m["runtime"]), str(m["device"]), latency, m.get("accuracy"), m.get("samples"))
