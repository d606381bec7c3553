"""report.json (schema 1) as typed, frozen objects: what the build writes, `edgepipe verify` rewrites and
report.html reads. Keys are the contract's (docs/reference/report.md); fields this module does not name are
kept as they are (`extra="allow"`), so a report written by a newer edgepipe or another tool round-trips."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import UsageError

SCHEMA = 1


class _Entry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True)


class LatencyStats(_Entry):
    """Milliseconds per inference on the verifying device."""

    median: float
    p90: float | None = None
    p99: float | None = None
    mean: float | None = None
    std: float | None = None  # trtexec's summary has none
    min: float | None = None
    iqr: list[float] | None = None  # [p25, p75]: the spread of the samples
    median_ci: list[float] | None = None  # a distribution-free 95% interval for the median (order statistics)
    iterations: int = 0
    warmup: int = 0
    threads: int = 1
    informational: bool | None = None  # not measured on the target's kind of device: decides nothing


class Attempt(_Entry):
    """One accuracy-aware int8 variant and the task's metric it measured ("accuracy")."""

    calibration: str
    equalize: bool = False
    equalization: str | None = None  # smoothquant | cle: the Keras-equalized model it was exported from
    cross_layer_equalization: bool = False  # kept from before the two names: true when `equalization` is set
    float_layers: list[str] = []
    int16_layers: list[str] = []
    accuracy: float | None = None
    accuracy_drop: float | None = None
    passed: bool = False
    qat: bool = False  # exported from the quantization-aware fine-tuned model with its learned ranges
    samples: int | None = None  # evaluation samples it was judged on (a subset when it missed there)


class QatEntry(_Entry):
    """Quantization-aware fine-tuning in the accuracy-aware ladder: the artifact's metric in its runtime
    before (the attempt it started from) and after, and the fake-quantized Keras model's accuracy."""

    accuracy_before: float
    accuracy_after: float
    epochs: int
    fake_quant_accuracy_before: float | None = None
    fake_quant_accuracy_after: float | None = None
    learned_ranges: int = 0
    fake_quantized: list[dict[str, Any]] = []  # by layer: its kernels, each with its kind, levels and grid
    not_fake_quantized: list[dict[str, Any]] = []  # by weighted layer left out: the reason


class EqualizationEntry(_Entry):
    """The Keras equalization the shipped attempt was exported from: `smoothquant` (SmoothQuant-style
    activation-to-weight migration, Xiao et al. 2023) or `cle` (cross-layer equalization, Nagel et al. 2019)."""

    method: str
    name: str = ""
    pairs: list[dict[str, Any]] = []


class PrecisionCandidate(_Entry):
    """One candidate of `precision = "auto"` as measured on the verifying device ("accuracy": the task's metric)."""

    candidate: str  # int8 | int8-recovered | mixed | int16x8 | fp16 | float
    precision: str
    detail: str = ""
    accuracy: float | None = None
    accuracy_drop: float | None = None
    latency_ms: float | None = None  # median
    size_bytes: int | None = None
    measured: bool = False
    passed: bool = False
    chosen: bool = False
    why: str = ""


class SensitivityRow(_Entry):
    layer: str
    sqnr_db: float
    accuracy: float | None = None


class DropMetric(_Entry):
    """An entry's task metric on a split, its drop against the reference on the same samples, and the drop's
    paired interval (Newcombe's for proportions, a paired bootstrap otherwise; pipeline.measure.intervals)."""

    name: str | None = None
    value: float | None = None
    drop: float | None = None  # in the metric's worse direction: positive is worse
    interval: list[float] | None = None  # [lo, hi] at `level`; None without per-sample statistics
    level: float | None = None
    method: str | None = None  # newcombe-paired | paired-bootstrap
    higher_is_better: bool = True
    samples: int | None = None
    split: str | None = None  # test | validation
    uncertain: bool = False  # the interval holds the budget: another split could judge the other way
    reference_value: float | None = None
    discordant: int | None = None  # pairs where exactly one model is right (proportions)
    validation_value: float | None = None  # the reference entry: its value on the validation split


class Selection(_Entry):
    """How a target's artifact was chosen: on which split, among how many candidates, and the chosen one's
    validation value beside its test value."""

    split: str = "validation"
    samples: int | None = None
    candidates: int | None = None
    validation_value: float | None = None
    validation_drop: float | None = None
    test_value: float | None = None
    test_drop: float | None = None


class ModelEntry(_Entry):
    """The reference or a compression stage's float model."""

    path: str | None = None
    accuracy: float | None = None
    params: int | None = None
    macs: int | None = None
    size_bytes: int | None = None
    latency_ms: float | None = None  # float, this host (Keras)
    metric: DropMetric | None = None


class StageEntry(ModelEntry):
    name: str
    split: str | None = None  # the split its metric was measured on (validation)
    seconds: float | None = None
    cached: bool = False
    notes: list[str] = []


class TargetEntry(_Entry):
    artifact: str | None = None
    precision: str = "int8"
    runtime: str | None = None
    device: str = "host"
    device_name: str | None = None  # what the user called the device (profile, [devices] name, emulated, URL)
    size_bytes: int | None = None
    float_accuracy: float | None = None
    accuracy: float | None = None
    accuracy_drop: float | None = None
    float_layers: list[str] = []
    int16_layers: list[str] = []
    latency_ms: LatencyStats | None = None
    latency_samples_ms: list[float] = []
    evaluation_batch: int | None = None  # samples per runtime call the metric was computed with (1: as deployed)
    float_latency_ms: LatencyStats | None = None
    notes: list[str] = []
    violations: list[str] = []
    passed: bool = False
    error: str | None = None
    attempts: list[Attempt] = []
    equalization: EqualizationEntry | None = None
    cross_layer_equalization: list[dict[str, Any]] | None = None  # equalization.pairs, under its earlier name
    qat: QatEntry | None = None
    sensitivity: list[SensitivityRow] | None = None
    precision_candidates: list[PrecisionCandidate] = []  # precision = "auto" only
    precision_choice: str | None = None  # why the shipped candidate won, one line
    outputs: dict[str, OutputCheck] | None = None  # models with several outputs: every output checked
    metric: DropMetric | None = None
    selection: Selection | None = None
    uncertain: bool | None = None  # metric.uncertain
    latency_informational: str | None = None  # why the latency does not decide (not the target's kind of device)
    deploy_on_host: bool | None = None  # [targets.X] deploy_on_host: this host's latency decides
    speedup: dict[str, Any] | None = None  # int8 vs float: ratio, interval, level, verdict, interleaved


class MetricInfo(_Entry):
    name: str
    higher_is_better: bool
    output: str | None = None  # the output it reads (models with several outputs)
    output_index: int | None = None


class OutputCheck(_Entry):
    """One output of a target's artifact against its float twin, both in the target's runtime, on the eval set."""

    sqnr_db: float
    cosine: float
    agreement_top1: float | None = None  # outputs of two or more scores: the same top-1 per sample


class Report(_Entry):
    schema_version: int = Field(SCHEMA, alias="schema")
    edgepipe_version: str = ""
    passed: bool = False
    metric: MetricInfo | None = None
    budget: dict[str, Any] = {}
    reference: ModelEntry = ModelEntry()
    stages: list[StageEntry] = []
    eval_set: dict[str, Any] = {}
    validation_set: dict[str, Any] = {}  # path, samples, source (given | held out)
    versions: dict[str, str] = {}
    targets: dict[str, TargetEntry] = {}

    def metric_name(self) -> str:
        return self.metric.name if self.metric is not None else "accuracy"

    def to_json(self) -> dict[str, Any]:
        """The report.json object: the keys it was made from (or set), nothing added."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


def parse_report(data: Any, where: str) -> Report:
    """A report.json object as a typed Report; anything else is one UsageError naming the first problem."""
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise UsageError(f"{where}: not a schema {SCHEMA} edgepipe report")
    try:
        return Report.model_validate(data)
    except ValidationError as err:
        e = err.errors()[0]
        raise UsageError(f"{where}: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}") from None
