"""The build config: TOML validated with pydantic, unknown keys are errors."""

from __future__ import annotations

from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated, Literal

import tomllib
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.errors import ConfigError
from targets import target_names
from targets.base import KeptPrecision, Precision, TargetName

TARGET_NAMES = tuple(target_names())  # from the target registry
MAX_IMAGE_SIDE = 8192
MAX_BATCH = 65_536
MAX_SEED = 2**32 - 1  # numpy's and Keras' seeding take 0 .. 2**32 - 1


class _Strict(BaseModel):
    # nan/inf are valid TOML floats but no setting means anything with them
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _path_text(v: str | None) -> str | None:
    """A path from the config: not empty, no NUL byte (the OS refuses those with a bare ValueError)."""
    if v is not None and (not v.strip() or "\x00" in v):
        raise ValueError("must be a non-empty path without NUL characters")
    return v


PathText = Annotated[str, AfterValidator(_path_text)]


class CalibrationMethod(str, Enum):
    MINMAX = "minmax"
    PERCENTILE = "percentile"
    ENTROPY = "entropy"
    MSE = "mse"


class PruneMethod(str, Enum):
    CHANNEL = "channel"
    MAGNITUDE = "magnitude"


class ModelSection(_Strict):
    path: PathText | None = None
    example: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ModelSection:
        if (self.path is None) == (self.example is None):
            raise ValueError("set exactly one of 'path' or 'example'")
        return self


class DataSection(_Strict):
    path: PathText | None = None
    images: PathText | None = None
    image_size: tuple[Annotated[int, Field(gt=0, le=MAX_IMAGE_SIDE)],
                      Annotated[int, Field(gt=0, le=MAX_IMAGE_SIDE)]] | None = None
    scale: Annotated[float, Field(gt=0)] = 1.0
    mean: Annotated[list[float], Field(min_length=1)] | None = None
    std: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> DataSection:
        if (self.path is None) == (self.images is None):
            raise ValueError("set exactly one of 'path' or 'images'")
        if self.images is not None and self.image_size is None:
            raise ValueError("'images' needs 'image_size = [H, W]'")
        if (self.mean is None) != (self.std is None):
            raise ValueError("'mean' and 'std' go together")
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            raise ValueError("'mean' and 'std' must have the same length")
        return self


class DistillSection(_Strict):
    student: str = "width:0.5"
    temperature: Annotated[float, Field(gt=0)] = 4.0
    alpha: Annotated[float, Field(ge=0, le=1)] = 0.7
    epochs: Annotated[int, Field(ge=1, le=10_000)] = 10
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 2e-3
    batch_size: Annotated[int, Field(ge=1, le=MAX_BATCH)] = 64
    patience: Annotated[int, Field(ge=1, le=10_000)] = 4
    validation_split: Annotated[float, Field(gt=0, lt=1)] = 0.1

    @field_validator("student")
    @classmethod
    def _student(cls, v: str) -> str:
        _path_text(v)
        if v.startswith("width:"):
            try:
                w = float(v.split(":", 1)[1])
            except ValueError:
                raise ValueError(f"'{v}' is not 'width:<number>'") from None
            if not 0 < w <= 1:  # also refuses nan
                raise ValueError(f"width multiplier must be in (0, 1], got {w}")
        return v


class PruneSection(_Strict):
    method: PruneMethod = PruneMethod.CHANNEL
    sparsity: Annotated[float, Field(gt=0, lt=1)] = 0.5
    epochs: Annotated[int, Field(ge=0, le=10_000)] = 5
    iterations: Annotated[int, Field(ge=1, le=20)] = 1
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 1e-3
    batch_size: Annotated[int, Field(ge=1, le=MAX_BATCH)] = 64


class DecomposeSection(_Strict):
    rank_ratio: Annotated[float, Field(gt=0, le=1)] = 0.5
    epochs: Annotated[int, Field(ge=0, le=10_000)] = 3
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 1e-3
    batch_size: Annotated[int, Field(ge=1, le=MAX_BATCH)] = 64


class Sampling(str, Enum):
    RANDOM = "random"
    STRATIFIED = "stratified"


class QuantizeSection(_Strict):
    calibration_samples: Annotated[int, Field(ge=1, le=100_000)] = 300
    calibration: CalibrationMethod = CalibrationMethod.MINMAX
    # unlabeled calibration samples instead of the training split: an npz with `x`, or a folder of images
    calibration_data: str | None = None
    sampling: Sampling | None = None  # default: stratified by label on the training split, else random
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = 0
    # quantization-aware fine-tuning first for every int8 target (the accuracy-aware ladder tries it anyway)
    qat: StrictBool = False
    qat_epochs: Annotated[int, Field(ge=1, le=100)] = 5


class MetricName(str, Enum):
    ACCURACY = "accuracy"
    TOP_K = "top_k"
    MSE = "mse"
    MAE = "mae"
    RMSE = "rmse"
    RECONSTRUCTION_AUC = "reconstruction_auc"
    SQNR = "sqnr"
    AGREEMENT = "agreement"


class MetricSection(_Strict):
    """The task's metric: a name, or a user's function (outputs, y) -> float with its direction."""

    name: MetricName | None = None
    k: Annotated[int, Field(ge=1, le=1000)] | None = None
    output: str | None = None  # which output a metric reads (models with several; checked against the model)
    function: str | None = None  # "package.module:function", imported from the user's environment
    higher_is_better: bool | None = None

    @model_validator(mode="after")
    def _consistent(self) -> MetricSection:
        if (self.name is None) == (self.function is None):
            raise ValueError("set exactly one of name and function")
        if self.function is not None:
            if self.higher_is_better is None:
                raise ValueError("function needs higher_is_better")
            module, _, attr = self.function.partition(":")
            if not module or not attr.isidentifier() or not all(p.isidentifier() for p in module.split(".")):
                raise ValueError("function must be 'package.module:function'")
        elif self.higher_is_better is not None:
            raise ValueError("higher_is_better goes with function (a named metric knows its direction)")
        if (self.k is not None) != (self.name is MetricName.TOP_K):
            raise ValueError("k goes with name = \"top_k\" (and top_k needs k)")
        return self


class BudgetSection(_Strict):
    max_accuracy_drop: Annotated[float, Field(ge=0, le=1)] | None = None
    max_metric_drop: Annotated[float, Field(ge=0)] | None = None  # in the metric's units, its worse direction
    max_latency_ms: Annotated[float, Field(gt=0)] | None = None
    max_size_kb: Annotated[float, Field(gt=0)] | None = None
    # None: the drop passes on its point estimate (the interval is reported, `uncertain` when it holds the
    # budget); a level (e.g. 0.95): the drop's interval at that level must lie within the budget
    confidence: Annotated[float, Field(ge=0.5, lt=1)] | None = None


class PrecisionSetting(str, Enum):
    """[targets.X] precision: one of the targets' Precision values, or "auto" (pipeline.quantize.auto_precision:
    the fastest candidate that meets the budget on the verifying device)."""

    INT8 = Precision.INT8.value
    INT16X8 = Precision.INT16X8.value
    FP16 = Precision.FP16.value
    FLOAT = Precision.FLOAT.value
    AUTO = "auto"

    @property
    def fixed(self) -> Precision | None:
        """The one precision to export, None for auto."""
        return None if self is PrecisionSetting.AUTO else Precision(self.value)


class TargetSection(_Strict):
    threads: Annotated[int, Field(ge=1, le=256)] = 1
    warmup: Annotated[int, Field(ge=0, le=10_000)] = 10
    iterations: Annotated[int, Field(ge=1, le=100_000)] = 100
    ship_faster_float: bool = False  # ship the float artifact when it runs faster than the int8 one
    precision: PrecisionSetting = PrecisionSetting.INT8  # one the target supports (targets.precision_problem), or auto
    kept_precision: KeptPrecision = KeptPrecision.CHEAPEST  # sensitive layers kept out of int8: cheapest | int16 | float
    # This host is where the artifact is deployed: its latency is judged (max_latency_ms, ship_faster_float, auto)
    # even when it is not of the target's device family (pipeline.measure.device_kind)
    deploy_on_host: bool = False


class TargetsSection(_Strict):
    tflite: TargetSection | None = None
    openvino: TargetSection | None = None
    tensorrt: TargetSection | None = None

    @model_validator(mode="after")
    def _precisions(self) -> TargetsSection:
        from targets import precision_problem

        for name in self.enabled():
            fixed = self.settings(name).precision.fixed
            problem = None if fixed is None else precision_problem(name, fixed)
            if problem is not None:
                raise ValueError(f"{name}.precision: {problem}")
        return self

    def enabled(self) -> list[str]:
        return [n for n in TARGET_NAMES if getattr(self, n) is not None]

    def settings(self, name: str) -> TargetSection:
        return getattr(self, name) or TargetSection()


class DeviceSection(_Strict):
    host: str
    python: str = "python3"
    target: TargetName | None = None


Unit = Annotated[float, Field(gt=0, le=1)]


class SearchSection(_Strict):
    """`edgepipe search`: the knobs' ranges ([low, high]), the study's size and its coarse-to-fine policy."""

    target: TargetName | None = None  # None: the first enabled target
    trials: Annotated[int, Field(ge=1, le=100_000)] = 20
    width: tuple[Unit, Unit] = (0.25, 1.0)
    sparsity: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.0, 0.7)
    rank_ratio: tuple[Unit, Unit] = (0.25, 1.0)
    calibration: Annotated[tuple[CalibrationMethod, ...], Field(min_length=1)] = tuple(CalibrationMethod)
    learning_rate: tuple[Unit, Unit] = (1e-4, 1e-2)
    epochs: tuple[Annotated[int, Field(ge=1, le=10_000)], Annotated[int, Field(ge=1, le=10_000)]] = (1, 10)
    coarse_fraction: Unit = 0.3  # 1.0: no coarse step
    promote_top: Annotated[float, Field(ge=0, le=1)] = 0.3
    sampler: Literal["tpe", "nsga2"] = "tpe"
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = 0
    heartbeat_interval: Annotated[int, Field(ge=1, le=3600)] = 10  # seconds
    grace_period: Annotated[int, Field(ge=2, le=86_400)] = 60

    @model_validator(mode="after")
    def _ranges(self) -> SearchSection:
        for name in ("width", "sparsity", "rank_ratio", "learning_rate", "epochs"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name}: expected [low, high] with low <= high, got [{lo}, {hi}]")
        if len(set(self.calibration)) != len(self.calibration):
            raise ValueError("calibration: a method is listed twice")
        if self.grace_period <= self.heartbeat_interval:
            raise ValueError("grace_period must be longer than heartbeat_interval")
        return self


class InputKind(str, Enum):
    """What a path of the config is an input of (Config.input_paths)."""

    MODEL = "model"
    DATA = "data"
    IMAGES = "images"
    STUDENT = "student"
    CALIBRATION = "calibration_data"


class Config(_Strict):
    name: str = "build"
    base_dir: Path = Path(".")
    model: ModelSection
    data: DataSection | None = None
    distill: DistillSection | None = None
    prune: PruneSection | None = None
    decompose: DecomposeSection | None = None
    quantize: QuantizeSection = QuantizeSection()
    metric: MetricSection | None = None
    budget: BudgetSection = BudgetSection()
    targets: TargetsSection = TargetsSection()
    devices: dict[str, DeviceSection] = {}
    search: SearchSection = SearchSection()

    @model_validator(mode="after")
    def _data_needed(self) -> Config:
        if self.model.path is not None and self.data is None:
            raise ValueError("a [data] section is needed with model.path")
        named = self.metric.name if self.metric is not None else MetricName.ACCURACY
        if self.budget.max_accuracy_drop is not None and named is not MetricName.ACCURACY:
            raise ValueError("budget.max_accuracy_drop is for accuracy: use max_metric_drop with this [metric]")
        return self

    def resolve(self, p: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        try:
            path = Path(p).expanduser()
        except RuntimeError:  # "~someone/..." for an unknown user
            raise ConfigError(f"{p}: cannot expand '~' (no such user)") from None
        return path if path.is_absolute() else (self.base_dir / path)

    def input_paths(self) -> Iterator[tuple[InputKind, Path]]:
        """Every file or folder the build reads, as named by the config, resolved one at a time in this order."""
        d = self.data
        named = ((InputKind.MODEL, self.model.path), (InputKind.DATA, d.path if d else None),
                 (InputKind.IMAGES, d.images if d else None),
                 (InputKind.STUDENT, None if self.distill is None or self.distill.student.startswith("width:")
                  else self.distill.student),
                 (InputKind.CALIBRATION, self.quantize.calibration_data))
        for kind, p in named:
            if p is not None:
                yield kind, self.resolve(p)


def _format_error(source: str, err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
    msg = e["msg"]
    if e["type"] == "extra_forbidden":
        msg = "unknown key"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{source}: {loc}: {msg}{more}"


def config_from_dict(data: dict, *, name: str, base_dir: Path, source: str) -> Config:
    """Validate a parsed config; a problem raises ConfigError naming the source and key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: (top level): expected a table of sections")
    for reserved in ("name", "base_dir"):
        if reserved in data:
            raise ConfigError(f"{source}: {reserved}: unknown key")
    try:
        return Config.model_validate({**data, "name": name, "base_dir": base_dir})
    except ValidationError as err:
        raise ConfigError(_format_error(source, err)) from None


def load_config(path: Path) -> Config:
    """Read and validate a TOML config file."""
    try:
        if path.is_dir():
            raise ConfigError(f"{path}: a directory, not a config file")
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        text = path.read_bytes().decode("utf-8")  # as written: TOML takes CRLF, not a lone CR (read_text's newlines)
    except OSError as err:  # unreadable, name too long, ...
        raise ConfigError(f"{path}: cannot read the config file ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    except RecursionError:  # tomllib recurses on nested arrays and inline tables
        raise ConfigError(f"{path}: not valid TOML: nested too deeply") from None
    return config_from_dict(data, name=path.stem, base_dir=path.parent.resolve(), source=str(path))
