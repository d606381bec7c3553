"""The Python API example of the docs (docs/getting-started/python.md; it was the README's "From Python"
section), as the tests run it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "getting-started" / "python.md"


def readme_example() -> str:
    """The first python code block of docs/getting-started/python.md."""
    text = PAGE.read_text()
    match = re.search(r"```python\n(.*?)```", text, re.S)
    assert match, f"{PAGE.relative_to(ROOT)} has no python code block"
    return match.group(1)
