"""report.json's JSON Schema, generated from the typed report (`schema.Report.model_json_schema()`).

    python -m pipeline.report.schema_json > docs/reference/report.schema.json

The file is checked in for the docs (docs/reference/report.md); tests/pipeline/report/test_schema_doc.py fails
when it differs from what the models generate now. It covers the keys `schema.py` types; the report keeps any
other key as written (`extra="allow"`), and the docs page lists those too."""

from __future__ import annotations

import json
import sys

from pipeline.report.schema import SCHEMA, Report

SCHEMA_DOC = "docs/reference/report.schema.json"  # relative to the repository root


def schema_text() -> str:
    """The JSON Schema of report.json as the checked-in file holds it: sorted keys, two-space indent, newline."""
    schema = Report.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"edgepipe report.json (schema {SCHEMA})"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def main() -> int:
    sys.stdout.write(schema_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
