"""The results store: every benchmark run appended, one transaction per run (a run that stops half-way writes
nothing), each measurement keyed by the artifact's content hash, the device, its CPU, the runtime and its
version, threads and edgepipe's version. SQLite by default (DATA/bench.sqlite, DATA = $EDGEPIPE_DATA_DIR, else
$XDG_DATA_HOME/edgepipe, else ~/.local/share/edgepipe), or any SQLAlchemy URL (postgresql://USER@HOST/DB for a
team)."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.errors import UsageError

FILE_NAME = "bench.sqlite"
_NUMBERS = {"median_ms": ("latency_ms", "median"), "p90_ms": ("latency_ms", "p90"), "p99_ms": ("latency_ms", "p99"),
            "load_ms": ("cold_start", "load_ms"), "first_inference_ms": ("cold_start", "first_inference_ms")}


def data_dir() -> Path:
    env = os.environ.get("EDGEPIPE_DATA_DIR", "").strip()
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME", "").strip() or str(Path.home() / ".local" / "share")
    return Path(base) / "edgepipe"


def cpu_key(cpu: dict[str, Any] | None) -> str:
    """The CPU as the store keys it: architecture, model and int8-relevant features."""
    if not cpu:
        return ""
    return f"{cpu.get('arch', '')} {cpu.get('model', '')} [{','.join(cpu.get('features', []))}]".strip()


def _tables() -> tuple[Any, Any, Any]:
    import sqlalchemy as sa

    meta = sa.MetaData()
    runs = sa.Table(
        "bench_runs", meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("command", sa.String(40), nullable=False),
        sa.Column("edgepipe_version", sa.String(40), nullable=False),
        sa.Column("machine", sa.String(255), nullable=False))  # fmt: skip
    results = sa.Table(
        "bench_results", meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("bench_runs.id"), nullable=False, index=True),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("artifact", sa.String(1024), nullable=False),
        sa.Column("artifact_sha256", sa.String(64), nullable=False),
        sa.Column("device", sa.String(1024), nullable=False),
        sa.Column("cpu", sa.String(1024), nullable=False),
        sa.Column("runtime", sa.String(120), nullable=False),
        sa.Column("runtime_version", sa.String(120), nullable=False),
        sa.Column("threads", sa.Integer, nullable=False),
        sa.Column("edgepipe_version", sa.String(40), nullable=False),
        sa.Column("measured_on", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("error", sa.Text),
        *(sa.Column(name, sa.Float) for name in _NUMBERS),
        sa.Column("peak_memory_kb", sa.Integer),
        sa.Column("accuracy", sa.Float),
        sa.Column("data", sa.Text, nullable=False))  # fmt: skip  # the whole cell as JSON: samples, profile, notes
    sa.Index("ix_bench_key", results.c.artifact_sha256, results.c.device, results.c.cpu, results.c.runtime,
             results.c.runtime_version, results.c.threads, results.c.edgepipe_version)
    return meta, runs, results


def redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable store URL>"


def store_url(spec: str | None) -> str:
    """--store as a SQLAlchemy URL: a URL as given (postgresql:// with the psycopg2 driver where psycopg 3 is
    missing), a path as a SQLite file, none the default SQLite file."""
    import importlib.util

    from sqlalchemy.engine import make_url

    if spec is None or "://" not in spec:
        path = Path(spec).expanduser() if spec else data_dir() / FILE_NAME
        if path.is_dir():
            raise UsageError(f"--store {spec}: a directory, not a SQLite file")
        return f"sqlite:///{path.resolve()}"
    try:
        u = make_url(spec)
    except Exception as err:
        raise UsageError(f"--store: not a database URL ({' '.join(str(err).split())[:200]})") from None
    if u.drivername == "postgresql" and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return u.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    return spec


@dataclass
class Store:
    """An open results store (tables created when missing)."""

    engine: Any
    url: str
    runs: Any
    results: Any

    @classmethod
    def open(cls, spec: str | None) -> Store:
        """Open (and create) the store; anything that keeps it from opening is a one-line UsageError."""
        try:
            import sqlalchemy as sa
        except ImportError:
            raise UsageError("the results store needs SQLAlchemy: pip install 'edgepipe[search]', or pass "
                             "--no-store") from None
        url = store_url(spec)
        if spec is None or "://" not in spec:  # a path: its folder is made (a URL's must exist)
            try:
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise UsageError(f"cannot open the results store {redact(url)}: {err.strerror or err}") from None
        meta, runs, results = _tables()
        try:
            kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else \
                {"pool_pre_ping": True}
            engine = sa.create_engine(url, **kwargs)
            meta.create_all(engine)
        except Exception as err:  # a bad driver, a refused connection, a file that is not a database
            msg = " ".join(str(err).split())[:240]
            raise UsageError(f"cannot open the results store {redact(url)}: {type(err).__name__}: {msg}") from None
        return cls(engine, url, runs, results)

    def append(self, cells: list[dict[str, Any]], command: str) -> int:
        """One run and its measurements, in one transaction; sets each cell's run_id and result_id."""
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self.engine.begin() as conn:
            run_id = conn.execute(self.runs.insert().values(
                created_at=now, command=command, edgepipe_version=__version__, machine=socket.gethostname(),
            )).inserted_primary_key[0]
            ids = [conn.execute(self.results.insert().values(**row_of(cell, now, int(run_id)))).inserted_primary_key[0]
                   for cell in cells]
        for cell, result_id in zip(cells, ids, strict=True):  # only once committed
            cell.update(run_id=int(run_id), result_id=int(result_id))
        return int(run_id)

    def rows(self, device: str | None = None, artifact: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Stored measurements, oldest first (the last `limit`); `artifact` matches a file name or a hash prefix."""
        import sqlalchemy as sa

        r = self.results
        q = sa.select(r)
        if device is not None:
            q = q.where(r.c.device == device)
        if artifact is not None:
            q = q.where(sa.or_(r.c.artifact == artifact, r.c.artifact_sha256.startswith(artifact.lower())))
        q = q.order_by(r.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            found = [dict(m) for m in conn.execute(q).mappings()]
        return found[::-1]

    def get(self, result_id: int) -> dict[str, Any]:
        """One stored measurement with its cell (`cell`); a missing id is a UsageError."""
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            row = conn.execute(sa.select(self.results).where(self.results.c.id == result_id)).mappings().first()
        if row is None:
            raise UsageError(f"no stored measurement {result_id} in {redact(self.url)} (see `edgepipe bench history`)")
        out = dict(row)
        out["cell"] = json.loads(out["data"])
        return out


def row_of(cell: dict[str, Any], now: str, run_id: int) -> dict[str, Any]:
    """A cell as its bench_results row: the key columns, the numbers history plots, the cell itself as JSON."""
    row: dict[str, Any] = {
        "run_id": run_id, "created_at": now, "artifact": cell["artifact"], "artifact_sha256": cell["artifact_sha256"],
        "device": cell["device"], "cpu": cpu_key(cell.get("cpu")), "runtime": cell.get("runtime_name") or "",
        "runtime_version": cell.get("runtime_version") or "", "threads": int(cell["threads"]),
        "edgepipe_version": __version__, "measured_on": cell["measured_on"], "status": cell["status"],
        "error": cell.get("error"), "peak_memory_kb": cell.get("peak_memory_kb"), "accuracy": cell.get("accuracy"),
        "data": json.dumps({k: v for k, v in cell.items() if k not in ("run_id", "result_id")}),
    }
    for column, (part, key) in _NUMBERS.items():
        value = (cell.get(part) or {}).get(key)
        row[column] = None if value is None else float(value)
    if cell["status"] == "ok" and row["median_ms"] is None:
        raise ValueError(f"{cell['artifact']} on {cell['device']}: a measurement without a median latency")
    return row
