"""Content-addressed cache of stage and target outputs (directories), written atomically and verified
by hash on read: a killed build leaves no entry that a later build would trust."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import zipfile
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


def _update(h: Any, path: Path) -> None:
    with path.open("rb") as f:  # in chunks: a file can be as large as the data
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def file_digest(path: Path) -> str:
    """SHA-256 of one file's bytes (the hashing every module uses)."""
    h = hashlib.sha256()
    _update(h, path)
    return h.hexdigest()


def content_hash(path: Path) -> str:
    """SHA-256 over a file (its name and bytes) or a directory (each file's relative path and bytes, sorted)."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        _update(h, f)
    return h.hexdigest()


def keras_file_hash(path: Path) -> str:
    """A .keras file's identity for cache keys: its members' names and bytes, less the save date Keras writes into
    metadata.json, so the same model saved again (a notebook re-running its cells) keeps its id and its cached
    stages and exports; any change of config, weights or Keras version gives a new one. A file that is not a
    readable zip gets content_hash's."""
    h = hashlib.sha256(b"keras-members\0")
    try:
        with zipfile.ZipFile(path) as z:
            for name in sorted(z.namelist()):
                h.update(name.encode() + b"\0")
                if name == "metadata.json":
                    meta = {k: v for k, v in json.loads(z.read(name)).items() if k != "date_saved"}
                    h.update(json.dumps(meta, sort_keys=True).encode())
                    continue
                with z.open(name) as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):  # noqa: B023
                        h.update(chunk)
    except (zipfile.BadZipFile, OSError, ValueError, AttributeError):
        return content_hash(path)
    return h.hexdigest()


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)


class Cache:
    def __init__(self, root: Path | None = None, enabled: bool = True) -> None:
        # A disabled cache still stores (in `root`, which the caller throws away, or a fresh temporary
        # folder) but never reuses.
        if enabled:
            self.root = root or default_root()
        else:
            self.root = root or Path(tempfile.mkdtemp(prefix="edgepipe-nocache-"))
        self.enabled = enabled

    def _entry(self, key: str) -> Path:
        return self.root / key[:2] / key

    @staticmethod
    def _intact(entry: Path) -> bool:
        """Every file the manifest lists is there with its hash, and no other file is."""
        manifest = entry / MANIFEST
        if not manifest.is_file():
            return False
        try:
            want = json.loads(manifest.read_text())["files"]
            have = {str(p.relative_to(entry)): file_digest(p) for p in _files(entry)}
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return bool(want == have)

    def get(self, key: str) -> Path | None:
        """The entry's directory if present and intact; a damaged entry is removed."""
        if not self.enabled:
            return None
        entry = self._entry(key)
        if not entry.exists():
            return None
        if not self._intact(entry):
            shutil.rmtree(entry, ignore_errors=True)
            return None
        return entry

    def put(self, key: str, src: Path) -> Path:
        """Copy directory `src` into the cache under `key`, atomically (temp dir, then rename)."""
        entry = self._entry(key)
        entry.parent.mkdir(parents=True, exist_ok=True)
        _sweep_stale_temps(entry.parent)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:8]}-", dir=entry.parent))
        try:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
            files = {str(p.relative_to(tmp)): file_digest(p) for p in _files(tmp)}
            (tmp / MANIFEST).write_text(json.dumps({"files": files}))
            if entry.exists():  # damaged, or not usable by the caller: replaced
                shutil.rmtree(entry, ignore_errors=True)
            try:
                os.replace(tmp, entry)
            except OSError:  # another build renamed its copy in first: theirs is as good as ours
                if not self._intact(entry):
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return entry


STALE_TEMP_S = 24 * 3600


def _sweep_stale_temps(shard: Path) -> None:
    """Remove temp dirs of puts that were killed mid-copy (never read: entries are only ever renamed in)."""
    now = time.time()
    for p in shard.glob(".*-*"):
        try:
            if p.is_dir() and now - p.stat().st_mtime > STALE_TEMP_S:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            continue
