"""The docs' reference pages name every command flag (pipeline/cli.py) and every config key (pipeline/config.py),
so a flag or key added in code without its line in docs/reference/ fails here."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline import config as cfg
from pipeline.cli import _parser

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "reference"


def _commands(parser: argparse.ArgumentParser, name: str = "edgepipe") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, p in action.choices.items():
                yield from _commands(p, f"{name} {sub}")


FLAGS = sorted({(cmd, opt) for cmd, p in _commands(_parser()) for a in p._actions for opt in a.option_strings
                if opt not in ("-h", "--help")})


@pytest.mark.parametrize(("command", "flag"), FLAGS)
def test_every_flag_is_documented(command: str, flag: str) -> None:
    assert f"`{flag}" in (REFERENCE / "cli.md").read_text(), f"{command} {flag}: not in docs/reference/cli.md"


def test_every_command_has_a_section() -> None:
    text = (REFERENCE / "cli.md").read_text()
    for command, _ in _commands(_parser()):
        if command.count(" ") == 1:
            assert f"## `{command}`" in text, f"docs/reference/cli.md has no section for {command}"


SECTIONS = {"model": cfg.ModelSection, "data": cfg.DataSection, "distill": cfg.DistillSection,
            "prune": cfg.PruneSection, "decompose": cfg.DecomposeSection, "quantize": cfg.QuantizeSection,
            "metric": cfg.MetricSection, "budget": cfg.BudgetSection, "targets.tflite": cfg.TargetSection,
            "devices.NAME": cfg.DeviceSection, "search": cfg.SearchSection}


def test_every_config_section_is_documented() -> None:
    """Every section of Config has its table (targets: one table for the three, devices: per name)."""
    fields = set(cfg.Config.model_fields) - {"name", "base_dir"}
    assert fields == {s.split(".")[0] for s in SECTIONS}
    assert set(cfg.TargetsSection.model_fields) == set(cfg.TARGET_NAMES)


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_every_config_key_is_documented(section: str) -> None:
    text = (REFERENCE / "config.md").read_text()
    chunks = [c for c in text.split("\n## ") if c.startswith(f"`[{section}]`")]
    assert chunks, f"docs/reference/config.md has no section [{section}]"
    for key in SECTIONS[section].model_fields:
        assert f"| `{key}` |" in chunks[0], f"[{section}] {key}: not in docs/reference/config.md"
