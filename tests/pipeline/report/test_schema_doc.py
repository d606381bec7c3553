"""docs/reference/report.schema.json is what the typed report (pipeline/report/schema.py) generates now."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pipeline.report.schema import Report
from pipeline.report.schema_json import SCHEMA_DOC, schema_text

ROOT = Path(__file__).resolve().parents[3]
REGENERATE = f"python -m pipeline.report.schema_json > {SCHEMA_DOC}"


def test_checked_in_schema_is_current() -> None:
    checked_in = (ROOT / SCHEMA_DOC).read_text(encoding="utf-8")
    assert checked_in == schema_text(), f"{SCHEMA_DOC} is out of date: run `{REGENERATE}`"


def test_schema_is_the_report_models() -> None:
    """Every field of every typed entry is in the file under its report.json key (`schema`, not schema_version)."""
    doc = json.loads((ROOT / SCHEMA_DOC).read_text(encoding="utf-8"))
    assert set(doc["properties"]) == {f.alias or name for name, f in Report.model_fields.items()}
    assert {"TargetEntry", "StageEntry", "LatencyStats", "Attempt", "PrecisionCandidate", "QatEntry",
            "MetricInfo", "OutputCheck"} <= set(doc["$defs"])
    assert all(d.get("additionalProperties") is True for d in doc["$defs"].values()), "unknown keys are kept"


def test_the_module_writes_it() -> None:
    """The command the docs name writes exactly the checked-in text."""
    out = subprocess.run([sys.executable, "-m", "pipeline.report.schema_json"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out == (ROOT / SCHEMA_DOC).read_text(encoding="utf-8")
