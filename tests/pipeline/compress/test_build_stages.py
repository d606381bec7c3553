from __future__ import annotations

from pathlib import Path

from pipeline.compress import build_stages
from pipeline.config import Config, DecomposeSection, DistillSection, ModelSection, PruneMethod, PruneSection


def test_build_stages_order_and_student_path(tmp_path: Path) -> None:
    cfg = Config(
        model=ModelSection(example="tiny"),
        base_dir=tmp_path,
        decompose=DecomposeSection(),
        prune=PruneSection(),
        distill=DistillSection(student="students/s.keras"),
    )
    stages = build_stages(cfg)
    assert [s.name for s in stages] == ["distill", "prune", "decompose"]
    assert stages[0].student_path == tmp_path / "students/s.keras"  # type: ignore[attr-defined]
    assert build_stages(Config(model=ModelSection(example="tiny"))) == []
    only = build_stages(
        Config(model=ModelSection(example="tiny"), prune=PruneSection(method=PruneMethod.MAGNITUDE))
    )
    assert [s.name for s in only] == ["prune"]
