from __future__ import annotations

from pathlib import Path

from pipeline.cache import Cache, cache_key


def test_put_get_and_corruption_is_detected(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.keras").write_bytes(b"abc")
    key = cache_key("stage", "prune", {"sparsity": 0.5})
    assert cache.get(key) is None
    entry = cache.put(key, src)
    assert cache.get(key) == entry and (entry / "model.keras").read_bytes() == b"abc"
    (entry / "model.keras").write_bytes(b"abX")  # damaged on disk
    assert cache.get(key) is None and not entry.exists()
    assert not [p for p in (tmp_path / "c").rglob(".*") if p.is_dir()], "no temporary entries left"


def test_keys_depend_on_every_part() -> None:
    assert cache_key("a", {"x": 1, "y": 2}) == cache_key("a", {"y": 2, "x": 1})
    assert cache_key("a", {"x": 1}) != cache_key("a", {"x": 2})


def test_disabled_cache_never_reuses(tmp_path: Path) -> None:
    src = tmp_path / "s"
    src.mkdir()
    (src / "f").write_text("1")
    cache = Cache(tmp_path / "c", enabled=False)
    cache.put("k" * 64, src)
    assert cache.get("k" * 64) is None
