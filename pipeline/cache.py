"""Content-addressed cache of stage and target outputs (directories), written atomically and verified
by hash on read: a killed build leaves no entry that a later build would trust."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


def cache_key(*parts: Any) -> str:
    """Hash of the parts, JSON-encoded with sorted keys (stage name, version, config, input hashes...)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def default_root() -> Path:
    env = os.environ.get("EDGEPIPE_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgepipe"


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)


class Cache:
    def __init__(self, root: Path | None = None, enabled: bool = True) -> None:
        # A disabled cache still stores (in a throw-away folder) but never reuses.
        self.root = (root or default_root()) if enabled else Path(tempfile.mkdtemp(prefix="edgepipe-nocache-"))
        self.enabled = enabled

    def _entry(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> Path | None:
        """The entry's directory if present and intact; a damaged entry is removed."""
        if not self.enabled:
            return None
        entry = self._entry(key)
        manifest = entry / MANIFEST
        if not manifest.is_file():
            return None
        try:
            want = json.loads(manifest.read_text())["files"]
            have = {str(p.relative_to(entry)): _digest(p) for p in _files(entry)}
        except (OSError, ValueError, KeyError):
            want, have = None, {}
        if want != have:
            shutil.rmtree(entry, ignore_errors=True)
            return None
        return entry

    def put(self, key: str, src: Path) -> Path:
        """Copy directory `src` into the cache under `key`, atomically (temp dir, then rename)."""
        entry = self._entry(key)
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:8]}-", dir=entry.parent))
        try:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
            files = {str(p.relative_to(tmp)): _digest(p) for p in _files(tmp)}
            (tmp / MANIFEST).write_text(json.dumps({"files": files}))
            if entry.exists():
                shutil.rmtree(entry, ignore_errors=True)
            os.replace(tmp, entry)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return entry
