"""report.json (schema 1) as typed, frozen objects: what the build writes, `edgepipe verify` rewrites and
report.html reads. Keys are the contract's (docs/reference/report.md); fields this module does not name are
kept as they are (`extra="allow"`), so a report written by a newer edgepipe or another tool round-trips."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import UsageError

SCHEMA = 1


class _Entry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True)

    def as_dict(self) -> dict[str, Any]:
        """The keys it was made with or given since (model_copy), as plain values: the report's dict form."""
        return self.model_dump(exclude_unset=True)


E = TypeVar("E", bound=_Entry)


def unset(entry: E, *keys: str) -> E:
    """A copy of `entry` without `keys`, as if they were never set (report.json then has no such key)."""
    if not any(k in entry.model_fields_set for k in keys):
        return entry
    return type(entry).model_validate({k: v for k, v in entry if k in entry.model_fields_set and k not in keys})


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
    emulated: bool | None = None  # measured under emulation: not the board's latency, decides nothing


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


class SpeedupStats(_Entry):
    """int8 (or the target's precision) against its float twin: the ratio of medians and its bootstrap interval."""

    ratio: float
    interval: list[float] | None = None  # [lo, hi] at `level`
    level: float | None = None
    verdict: str | None = None  # faster | slower | no measurable difference
    interleaved: bool | None = None  # both timed in alternating rounds in one process (this host)


class Int8Twin(_Entry):
    """ship_faster_float shipped the float artifact: the int8 artifact it was measured against."""

    artifact: str
    latency_ms: LatencyStats
    speedup: SpeedupStats | None = None


class HostAgreement(_Entry):
    """A device's top-1 per sample against the host's run of the same artifact."""

    top1: float  # the share of samples that agree
    samples: int
    host: str  # how the host computed it (its runtime's evaluation)


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
    details: dict[str, Any] | None = None  # what the stage did: widths, ranks, sparsity (the stage's own keys)


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
    speedup: SpeedupStats | None = None  # int8 vs float: ratio, interval, level, verdict, interleaved
    # keys report.json has had beside the ones above, in the order a build sets them (report.json keeps it)
    peak_memory_kb: int | None = None  # the measuring process's peak resident memory
    evaluation: str | None = None  # how the runtime computed the metric (its session, e.g. ONNX Runtime's provider)
    cpu: dict[str, Any] | None = None  # the measuring machine's CPU (targets.runner.cpu_info)
    emulated: dict[str, Any] | None = None  # the emulation that measured (targets.emulate): latency not judged
    host_agreement: HostAgreement | None = None  # a device's run: its top-1 against the host's
    int8: Int8Twin | None = None  # ship_faster_float shipped float: the int8 artifact it was measured against
    float_artifact: str | None = None  # the float twin the speed-up was measured against (or that shipped)
    int8_speedup: float | None = None  # an int8 artifact: float median / int8 median, 3 decimals
    speedup_vs_float: float | None = None  # another precision: the same ratio
    calibration: str | None = None  # the shipped artifact's calibration method
    cached: bool | None = None  # the artifact was reused from the cache
    converter_versions: dict[str, str] | None = None  # the converter packages that exported it

    def noted(self, *notes: str) -> TargetEntry:
        """A copy with `notes` appended."""
        return self.model_copy(update={"notes": [*self.notes, *notes]})


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
