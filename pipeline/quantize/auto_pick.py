"""precision = "auto"'s candidates and the rule that picks one: the fastest that meets the budget where latency
decides (ties within TIE: the smallest), else int8 first by metric and size (pipeline.measure.device_kind)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from pipeline.errors import TargetError
from pipeline.quantize.export import Exported
from pipeline.report.schema import TargetEntry

TIE = 0.02  # medians within 2% of the fastest passing one count as a tie: the smallest of them ships


class CandidateKind(str, Enum):
    INT8 = "int8"  # the ladder's first attempt: full int8 with the configured calibration
    INT8_RECOVERED = "int8-recovered"  # its best later attempt without float layers
    MIXED = "mixed"  # its best attempt with layers kept in float
    INT16X8 = "int16x8"
    FP16 = "fp16"
    FLOAT = "float"


@dataclass(frozen=True)
class Candidate:
    kind: CandidateKind
    detail: str  # how it was made, e.g. "SmoothQuant migration, percentile"
    exported: Exported | None = None
    entry: TargetEntry | None = None  # its measurement (target_entry), None when not built or not measured
    reason: str | None = None  # why it was not built or not measured

    @property
    def latency(self) -> float:
        lat = None if self.entry is None else self.entry.latency_ms
        return float(lat.median) if lat is not None else float("inf")

    @property
    def size(self) -> int:
        return int((self.entry.size_bytes if self.entry is not None else None) or 0)

    @property
    def drop(self) -> float:
        d = None if self.entry is None else self.entry.accuracy_drop
        return float("inf") if d is None else float(d)

    @property
    def passed(self) -> bool:
        return bool(self.entry is not None and self.entry.passed)


def _tied(passing: list[Candidate]) -> list[Candidate]:
    fastest = min(c.latency for c in passing)
    return [c for c in passing if c.latency <= fastest * (1 + TIE)]


KIND_RANK = {CandidateKind.INT8: 0, CandidateKind.INT8_RECOVERED: 0, CandidateKind.MIXED: 0,
             CandidateKind.INT16X8: 1, CandidateKind.FP16: 2, CandidateKind.FLOAT: 3}


def latency_decides(candidates: list[Candidate]) -> str | None:
    """None when the candidates' latency was measured on the target's kind of device; else why not."""
    for c in candidates:
        why = None if c.entry is None else c.entry.latency_informational
        if why:
            return str(why)
    return None


def pick(candidates: list[Candidate], target: str = "") -> tuple[Candidate, str, dict[CandidateKind, str]]:
    """The fastest candidate that meets the budget (within TIE of it: the smallest), else the most accurate
    (ties: the faster); the one-line why and each candidate's why. Where the latency was not measured on the
    target's kind of device it cannot decide: int8 ships where it meets the budget (then the next precision
    in int16x8, fp16, float), the smallest among equals, then the most accurate."""
    measured = [c for c in candidates if c.entry is not None]
    if not measured:
        raise TargetError("precision auto: no candidate could be built and measured ("
                          + "; ".join(f"{c.kind.value}: {c.reason}" for c in candidates) + ")")
    passing = [c for c in measured if c.passed]
    no_latency = latency_decides(measured)
    if passing and no_latency is not None:
        from pipeline.measure.device_kind import decides_on

        win = min(passing, key=lambda c: (KIND_RANK[c.kind], c.size, c.drop))
        why = (f"{win.kind.value}: meets the budget on the validation split (drop {win.drop:+.4f}, {win.size} bytes);"
               f" int8 first, then the next precision that meets it, the smallest among equals. Latency did not "
               f"decide: {no_latency}; it could decide on {decides_on(target)}" if target else "")
        return win, why, {c.kind: _row_why(c, win, passing, ranked=False) for c in candidates}
    if passing:
        tied, fastest = _tied(passing), min(passing, key=lambda c: c.latency)
        win = min(tied, key=lambda c: (c.size, c.latency))
        where = f"median {win.latency:.4f} ms on {None if win.entry is None else win.entry.device}, {win.size} bytes"
        if win is fastest:
            why = f"{win.kind.value}: the fastest of {len(passing)} candidate(s) that meet the budget ({where})"
        else:
            why = (f"{win.kind.value}: the smallest within {TIE:.0%} of the fastest of {len(passing)} candidate(s) "
                   f"that meet the budget ({fastest.kind.value}, {fastest.latency:.4f} ms); {where}")
    else:
        win = min(measured, key=lambda c: (c.drop, c.latency))
        why = (f"{win.kind.value}: no candidate meets the budget; the most accurate ships "
               f"(drop {win.drop:+.4f}, median {win.latency:.4f} ms)")
    return win, why, {c.kind: _row_why(c, win, passing) for c in candidates}


def _row_why(c: Candidate, win: Candidate, passing: list[Candidate], ranked: bool = True) -> str:
    if c.entry is None:
        return c.reason or "not measured"
    if c is win and not passing:
        return "chosen: the most accurate, but it misses the budget"
    if not ranked:  # latency could not decide
        if c is win:
            return "chosen: the first precision in int8, int16x8, fp16, float order that meets the budget"
        if not c.passed:
            return "misses the budget: " + "; ".join(c.entry.violations)
        return f"meets the budget; {win.kind.value} comes first (int8 first, then smaller)"
    if c is win:
        fastest = c.latency == min(p.latency for p in passing)
        return "chosen: " + ("the fastest that meets the budget" if fastest
                             else f"within {TIE:.0%} of the fastest that meets the budget, and the smallest")
    if not c.passed:
        return "misses the budget: " + "; ".join(c.entry.violations)
    if any(c is t for t in _tied(passing)):
        return f"meets the budget; ties with {win.kind.value} within {TIE:.0%}, larger ({c.size} vs {win.size} bytes)"
    return f"meets the budget; slower ({c.latency:.4f} vs {win.latency:.4f} ms)"


