"""Config parsing, fuzzed: whatever the text or the parsed structure, pipeline.config returns a Config or
raises ConfigError (never another exception) with one line that names its source and the key it refuses;
text that is not TOML says so; a Config written back out (as a dict and as TOML) reads back the same; and
`edgepipe build` answers exit 2 with one line, never a traceback."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
import tomllib
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pipeline.config import Config, config_from_dict, load_config
from pipeline.errors import ConfigError

SECTIONS = ["model", "data", "distill", "prune", "decompose", "quantize", "budget", "targets", "targets.tflite",
            "targets.openvino", "targets.tensorrt", "targets.coreml", "devices", "devices.rpi5", "devices.\"a b\""]
KEYS = ["path", "example", "images", "image_size", "scale", "mean", "std", "student", "temperature", "alpha",
        "epochs", "learning_rate", "batch_size", "patience", "validation_split", "method", "sparsity",
        "iterations", "rank_ratio", "calibration_samples", "calibration", "seed", "max_accuracy_drop",
        "max_latency_ms", "max_size_kb", "threads", "warmup", "host", "python", "target", "name", "base_dir"]
WORDS = ["channel", "magnitude", "minmax", "percentile", "entropy", "mse", "width:0.5", "width:2", "width:nan",
         "tflite", "openvino", "teacher.keras", "data.npz", "ssh://pi@host", "~nobody-here/x", "../../etc",
         "a\nb", "", " ", "\x00"]


def _float_literal(f: float) -> str:
    if math.isnan(f):
        return "nan"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    return repr(f)


scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(str),
    st.floats().map(_float_literal),
    st.sampled_from(WORDS).map(json.dumps),
    st.text(max_size=12).map(json.dumps),
    st.sampled_from(["true", "false", "1979-05-27", "0x1F", "1_000", "+inf", "'literal'"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4).map(lambda v: "[" + ", ".join(v) + "]"),
    st.dictionaries(st.sampled_from(KEYS), inner, max_size=3).map(
        lambda d: "{" + ", ".join(f"{k} = {v}" for k, v in d.items()) + "}"),
), max_leaves=8)
lines = st.one_of(
    st.tuples(st.sampled_from(KEYS) | st.text(max_size=6), values).map(lambda kv: f"{kv[0]} = {kv[1]}"),
    st.sampled_from(SECTIONS).map(lambda s: f"[{s}]"),
    st.sampled_from(SECTIONS).map(lambda s: f"[[{s}]]"),
    st.text(max_size=20),
)
toml_ish = st.lists(lines, max_size=14).map("\n".join)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10) | st.sampled_from(WORDS),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5),
                                                                  inner, max_size=4),
    max_leaves=12,
)
config_dicts = st.dictionaries(st.sampled_from([s.split(".")[0] for s in SECTIONS] + ["name", "extra"]),
                               json_values, max_size=6)


# A valid config, then a few keys set to random values: reaches every validator, not only the parser.
BASE: dict[str, Any] = {
    "model": {"path": "m.keras"}, "data": {"path": "d.npz", "scale": 16.0}, "distill": {}, "prune": {},
    "decompose": {}, "quantize": {"calibration_samples": 10}, "budget": {"max_accuracy_drop": 0.1},
    "targets": {"tflite": {}}, "devices": {"rpi": {"host": "ssh://pi@h"}},
}
WHERE = ["model", "data", "distill", "prune", "decompose", "quantize", "budget", "targets", "targets.tflite",
         "devices", "devices.rpi", ""]


def _mutate(edits: list[tuple[str, str, Any]]) -> dict[str, Any]:
    data = json.loads(json.dumps(BASE))
    for where, key, value in edits:
        node = data
        for part in filter(None, where.split(".")):
            node = node.setdefault(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node[key] = value
    return data


edit_lists = st.lists(st.tuples(st.sampled_from(WHERE), st.sampled_from(KEYS), json_values), min_size=1, max_size=3)
mutated = edit_lists.map(_mutate)


def _toml_str(s: str) -> str:
    """A TOML basic string: JSON's escapes, but characters past the BMP written as they are (JSON's ASCII form
    writes U+10000 as a surrogate pair, which TOML rejects) and DEL escaped (TOML forbids it raw)."""
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_value(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v) if -(2**63) <= v < 2**63 else _toml_str(str(v))
    if isinstance(v, float):
        return _float_literal(v)
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, list):
        return "[" + ", ".join(x for x in map(_toml_value, v) if x is not None) + "]"
    return "{" + ", ".join(f"{_toml_str(str(k))} = {x}" for k, x in ((k, _toml_value(x)) for k, x in v.items())
                           if x is not None) + "}"


def to_toml(data: dict[str, Any]) -> str:
    """A small TOML writer: top-level scalars first, then one table per dict (nested as dotted names)."""
    head, tables = [], []

    def table(name: str, d: dict[str, Any]) -> None:
        body = [f"{_toml_str(str(k))} = {x}" for k, v in d.items() if not isinstance(v, dict)
                if (x := _toml_value(v)) is not None]
        tables.append(f"[{name}]\n" + "\n".join(body))
        for k, v in d.items():
            if isinstance(v, dict):
                table(f"{name}.{_toml_str(str(k))}", v)

    for k, v in data.items():
        if isinstance(v, dict):
            table(_toml_str(str(k)), v)
        elif (x := _toml_value(v)) is not None:
            head.append(f"{_toml_str(str(k))} = {x}")
    return "\n".join(head + tables) + "\n"


Outcome = Config | str  # a config, or a ConfigError's message after its "<source>: " prefix


def _load(text: str) -> Outcome:
    """load_config of `text` written to a file: a config, or a ConfigError's one-line message that names the
    file. Any other exception fails the test."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.toml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            return load_config(path)
        except ConfigError as err:
            return _message(str(err), str(path))


def _from_dict(data: Any) -> Outcome:
    """config_from_dict: a config, or a ConfigError's one-line message that names its source."""
    try:
        return config_from_dict(data, name="fuzz", base_dir=Path("."), source="fuzz")
    except ConfigError as err:
        return _message(str(err), "fuzz")


def _message(text: str, source: str) -> str:
    assert text.startswith(source + ": ") and "\n" not in text, text
    return text[len(source) + 2:]


def _location(message: str) -> list[str]:
    """The key path a validation message starts with ("quantize.calibration_samples: ..." -> [quantize,
    calibration_samples]); [] for "(top level)"."""
    loc = message.split(": ", 1)[0]
    assert loc, message  # a key may be any text, spaces included (hypothesis found {"model": {" ": None}})
    return [] if loc == "(top level)" else loc.split(".")


def _settings(outcome: Outcome) -> Any:
    """What a config says, without the name and folder its source gives it."""
    return outcome if isinstance(outcome, str) else outcome.model_dump(mode="json", exclude={"name", "base_dir"})


def _round_trips(cfg: Config) -> None:
    """A valid config written back out, as a dict and as TOML, reads back as the same config."""
    data = _settings(cfg)
    again = _from_dict(data)
    assert not isinstance(again, str), f"{again} for the dump of a valid config {data}"
    assert again == cfg.model_copy(update={"name": "fuzz", "base_dir": Path(".")})
    assert _settings(_load(to_toml(data))) == data


def _toml_of(text: str) -> dict[str, Any] | None:
    """What a TOML parser reads from `text` as load_config writes it to disk; None when it is not TOML."""
    try:
        return tomllib.loads(text.encode("utf-8", errors="surrogatepass").decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        return None


def _check_text(text: str) -> None:
    """Text that is not TOML is a ConfigError saying so; TOML gives what validating its tables gives."""
    outcome, parsed = _load(text), _toml_of(text)
    if parsed is None:
        assert isinstance(outcome, str) and outcome.startswith("not valid TOML"), outcome
        return
    assert _settings(outcome) == _settings(_from_dict(parsed))
    if isinstance(outcome, str):
        loc = _location(outcome)
        assert not loc or loc[0] in parsed or "Field required" in outcome, outcome
    else:
        _round_trips(outcome)


def _edited(location: list[str], edits: list[tuple[str, str, Any]]) -> bool:
    """Whether an error's key path lies on the path of an edit: the key itself, a section above it (a
    section's own check), or a key inside the value it was given."""
    for where, key, _ in edits:
        edit = [*filter(None, where.split(".")), key]
        if location[: len(edit)] == edit or edit[: len(location)] == location:
            return True
    return False


@settings(max_examples=300, deadline=None)
@given(toml_ish)
def test_toml_ish_texts_give_a_config_or_a_config_error(text: str) -> None:
    _check_text(text)


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_arbitrary_texts_give_a_config_or_a_config_error(text: str) -> None:
    _check_text(text)


@settings(max_examples=300, deadline=None)
@given(config_dicts)
def test_parsed_structures_give_a_config_or_a_config_error(data: dict[str, Any]) -> None:
    """An error names a key the structure has (or the required [model] it lacks); a config round-trips."""
    outcome = _from_dict(data)
    if isinstance(outcome, str):
        loc = _location(outcome)
        assert loc and (loc[0] in data or (loc[0] == "model" and "Field required" in outcome)), outcome
    else:
        _round_trips(outcome)


@settings(max_examples=300, deadline=None)
@given(edit_lists)
def test_a_valid_config_with_random_values_gives_a_config_or_a_config_error(edits: list[tuple[str, str, Any]]) -> None:
    """The base config with a few keys set to random values: an error names one of the edited keys (or a
    section above one); a config round-trips; TOML that holds exactly the same tables gives the same answer."""
    data = _mutate(edits)
    outcome = _from_dict(data)
    if isinstance(outcome, str):
        assert _edited(_location(outcome), edits), (outcome, edits)
    else:
        _round_trips(outcome)
    text = to_toml(data)
    parsed = _toml_of(text)
    if parsed is not None and json.dumps(parsed) == json.dumps(data):  # None, huge ints, odd keys: not exact
        assert _settings(_load(text)) == _settings(outcome)


# Values each of these keys takes: the base config with some of them set is a config that holds them.
VALID: dict[tuple[str, str], st.SearchStrategy[Any]] = {
    ("quantize", "calibration_samples"): st.integers(1, 100_000),
    ("quantize", "calibration"): st.sampled_from(["minmax", "percentile", "entropy", "mse"]),
    ("quantize", "seed"): st.integers(0, 2**32 - 1),
    ("quantize", "qat"): st.booleans(),
    ("quantize", "qat_epochs"): st.integers(1, 100),
    ("budget", "max_accuracy_drop"): st.floats(0, 1),
    ("budget", "max_latency_ms"): st.floats(1e-6, 1e6),
    ("budget", "max_size_kb"): st.floats(1e-6, 1e9),
    ("prune", "method"): st.sampled_from(["channel", "magnitude"]),
    ("prune", "sparsity"): st.floats(0, 1, exclude_min=True, exclude_max=True),
    ("prune", "epochs"): st.integers(0, 10_000),
    ("distill", "student"): st.floats(0, 1, exclude_min=True).map(lambda w: f"width:{w!r}"),
    ("distill", "temperature"): st.floats(1e-3, 100),
    ("distill", "alpha"): st.floats(0, 1),
    ("decompose", "rank_ratio"): st.floats(0, 1, exclude_min=True),
    ("data", "scale"): st.floats(1e-6, 1e6),
    ("targets.tflite", "threads"): st.integers(1, 256),
    ("targets.tflite", "warmup"): st.integers(0, 10_000),
    ("targets.tflite", "iterations"): st.integers(1, 100_000),
    ("devices.rpi", "python"): st.sampled_from(["python3", "/usr/bin/python3.11", "~/venv/bin/python"]),
}


def _leaves(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out: dict[tuple[str, ...], Any] = {}
    for k, v in data.items():
        out.update(_leaves(v, (*prefix, k)) if isinstance(v, dict) else {(*prefix, k): v})
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(sorted(VALID)).flatmap(lambda wk: VALID[wk].map(lambda v: (*wk, v))),
                min_size=1, max_size=6))
def test_valid_values_give_a_config_that_holds_them_and_round_trips(edits: list[tuple[str, str, Any]]) -> None:
    data = _mutate(edits)
    cfg = _from_dict(data)
    assert not isinstance(cfg, str), (cfg, edits)
    held = _leaves(_settings(cfg))
    for path, value in _leaves(data).items():
        assert held[path] == value, (path, value, held[path])
    _round_trips(cfg)


def test_the_base_config_is_valid() -> None:
    cfg = _from_dict(BASE)
    assert not isinstance(cfg, str), cfg
    assert cfg.prune is not None and cfg.quantize.calibration_samples == 10 and cfg.targets.enabled() == ["tflite"]
    assert cfg.devices["rpi"].host == "ssh://pi@h" and cfg.budget.max_accuracy_drop == 0.1
    _round_trips(cfg)


def test_an_edit_the_config_takes_is_kept_and_one_it_refuses_is_named() -> None:
    """The two outcomes the fuzzing above sorts into, each pinned once."""
    cfg = _from_dict(_mutate([("quantize", "calibration_samples", 7), ("targets.tflite", "threads", 3)]))
    assert not isinstance(cfg, str) and cfg.quantize.calibration_samples == 7, cfg
    assert cfg.targets.settings("tflite").threads == 3
    assert _from_dict(_mutate([("quantize", "calibration_samples", 0)])).startswith(
        "quantize.calibration_samples: ")
    assert _from_dict(_mutate([("budget", "max_acc_drop", 0.1)])) == "budget.max_acc_drop: unknown key"
    assert _from_dict(_mutate([("targets.tflite", "threads", "two")])).startswith("targets.tflite.threads: ")


@settings(max_examples=30, deadline=None)
@given(st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=3)))
def test_a_top_level_that_is_not_a_table_is_a_config_error(data: Any) -> None:
    with pytest.raises(ConfigError, match="top level"):
        config_from_dict(data, name="fuzz", base_dir=Path("."), source="fuzz")


def test_deep_nesting_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.toml"
    path.write_text("x = " + "[" * 50_000 + "]" * 50_000)
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=toml_ish | mutated.map(to_toml))
def test_the_cli_answers_any_config_with_one_line(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main
    from pipeline.inputs.examples import EXAMPLES

    assume(not any(name in text for name in EXAMPLES))  # a built-in example would really build
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "fuzz.toml"
        cfg.write_text(text, encoding="utf-8", errors="surrogatepass")
        runs = Path(tmp) / "runs"
        runs.mkdir()
        capsys.readouterr()
        rc = main(["--quiet", "build", str(cfg), "--out", str(runs / "run")])
        err = capsys.readouterr().err
        assert rc == 2, err
        assert err.count("\n") == 1 and err.startswith("edgepipe: error: "), err
        assert "Traceback" not in err and "internal error" not in err
        assert list(runs.iterdir()) == []
