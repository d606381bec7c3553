"""Config parsing, fuzzed: whatever the text or the parsed structure, pipeline.config raises ConfigError
(or returns a Config), and `edgepipe build` answers exit 2 with one line, never a traceback."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
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


mutated = st.lists(st.tuples(st.sampled_from(WHERE), st.sampled_from(KEYS), json_values), min_size=1,
                   max_size=3).map(_mutate)


def _toml_value(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v) if -(2**63) <= v < 2**63 else json.dumps(str(v))
    if isinstance(v, float):
        return _float_literal(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(x for x in map(_toml_value, v) if x is not None) + "]"
    return "{" + ", ".join(f"{json.dumps(str(k))} = {x}" for k, x in ((k, _toml_value(x)) for k, x in v.items())
                           if x is not None) + "}"


def to_toml(data: dict[str, Any]) -> str:
    """A small TOML writer: top-level scalars first, then one table per dict (nested as dotted names)."""
    head, tables = [], []

    def table(name: str, d: dict[str, Any]) -> None:
        body = [f"{json.dumps(str(k))} = {x}" for k, v in d.items() if not isinstance(v, dict)
                if (x := _toml_value(v)) is not None]
        tables.append(f"[{name}]\n" + "\n".join(body))
        for k, v in d.items():
            if isinstance(v, dict):
                table(f"{name}.{json.dumps(str(k))}", v)

    for k, v in data.items():
        if isinstance(v, dict):
            table(json.dumps(str(k)), v)
        elif (x := _toml_value(v)) is not None:
            head.append(f"{json.dumps(str(k))} = {x}")
    return "\n".join(head + tables) + "\n"


def _load(text: str) -> Config | None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.toml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            return load_config(path)
        except ConfigError as err:
            assert str(err).startswith(str(path)), err
            return None


def _from_dict(data: dict[str, Any]) -> Config | None:
    """A config, or a ConfigError whose message names its source: nothing else may escape."""
    try:
        return config_from_dict(data, name="fuzz", base_dir=Path("."), source="fuzz")
    except ConfigError as err:
        assert str(err).startswith("fuzz"), err
        return None


@settings(max_examples=300, deadline=None)
@given(toml_ish)
def test_toml_ish_texts_give_a_config_or_a_config_error(text: str) -> None:
    _load(text)


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_arbitrary_texts_give_a_config_or_a_config_error(text: str) -> None:
    _load(text)


@settings(max_examples=300, deadline=None)
@given(config_dicts)
def test_parsed_structures_give_a_config_or_a_config_error(data: dict[str, Any]) -> None:
    _from_dict(data)


@settings(max_examples=300, deadline=None)
@given(mutated)
def test_a_valid_config_with_random_values_gives_a_config_or_a_config_error(data: dict[str, Any]) -> None:
    _from_dict(data)
    _load(to_toml(data))  # the same through TOML


def test_the_base_config_is_valid() -> None:
    assert config_from_dict(BASE, name="fuzz", base_dir=Path("."), source="fuzz").prune is not None
    assert _load(to_toml(BASE)) is not None


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
