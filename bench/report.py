"""What every bench section returns, and the one table (or JSON) they are printed as.

A :class:`Row` is one measure: the lab's value, the baseline measured in the same run (the book's or the
naive way), the ratio between them, a unit and a note. A :class:`Section` is a titled list of rows plus
every raw figure it measured (``details``, for ``--json``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class Row:
    """One measure, against its baseline when it has one.

    Attributes:
        name: what was measured, in words.
        lab: the lab's value (``None`` for a row that only carries a note, e.g. a skipped run).
        unit: the unit of ``lab`` and ``baseline`` (``"ms"``, ``"img/s"``, ``"MB"``; ``""`` for counts).
        baseline: the same measure the book's or the naive way, in this run, or ``None``.
        note: context (model, device, sizes) or why a row is empty.
        better: whether a ``"lower"`` value (times, memory) or a ``"higher"`` one (rates) is better.
        target: the lab's value must be at most (``better="lower"``) or at least this.
        min_ratio: the ratio must be at least this.
    """

    name: str
    lab: float | None
    unit: str = ""
    baseline: float | None = None
    note: str = ""
    better: Literal["lower", "higher"] = "lower"
    target: float | None = None
    min_ratio: float | None = None

    @property
    def ratio(self) -> float | None:
        """How many times better the lab's value is than the baseline's (above 1: the lab wins)."""
        if self.lab is None or self.baseline is None or not self.lab or not self.baseline:
            return None
        return self.baseline / self.lab if self.better == "lower" else self.lab / self.baseline

    @property
    def met(self) -> bool | None:
        """Whether every target of the row is met; ``None`` when it has none."""
        checks = []
        if self.target is not None and self.lab is not None:
            checks.append(self.lab <= self.target if self.better == "lower" else self.lab >= self.target)
        if self.min_ratio is not None and self.ratio is not None:
            checks.append(self.ratio >= self.min_ratio)
        return all(checks) if checks else None

    def target_text(self) -> str:
        """The targets in words (``"< 3 s"``, ``"≥ 50×"``), empty when there is none."""
        parts = []
        if self.target is not None:
            parts.append(f"{'<' if self.better == 'lower' else '≥'} {self.target:g} {self.unit}".strip())
        if self.min_ratio is not None and self.min_ratio < 1:  # "no slower than 1.15× the baseline"
            parts.append(f"≥ {self.min_ratio:.3g}× (lab ≤ {1 / self.min_ratio:.3g}× baseline)")
        elif self.min_ratio is not None:
            parts.append(f"≥ {self.min_ratio:g}×")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "lab": self.lab,
            "baseline": self.baseline,
            "ratio": self.ratio,
            "unit": self.unit,
            "note": self.note,
            "target": self.target_text() or None,
            "met": self.met,
        }


@dataclass
class Section:
    """A titled group of rows, and every figure the section measured (for ``--json``)."""

    title: str
    rows: list[Row]
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "rows": [row.to_dict() for row in self.rows], "details": self.details}


def number(value: float) -> str:
    """A measure with as many digits as it deserves: ``1234``, ``56.7``, ``8.90``, ``0.123``; counts whole."""
    if isinstance(value, int):
        return str(value)
    size = abs(value)
    if not math.isfinite(value) or size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _value(value: float | None, unit: str) -> str:
    return "" if value is None else f"{number(value)} {unit}".strip()


def _ratio(ratio: float | None) -> str:
    if ratio is None:
        return ""
    return f"{ratio:.0f}×" if ratio >= 10 else f"{ratio:.1f}×"


def _met(met: bool | None) -> str:
    return "" if met is None else (": yes" if met else ": NO")


def table(sections: dict[str, Section]) -> str:
    """Every section's rows as one Markdown table, a bold title row before each section."""
    lines = [
        "| measure | lab | baseline | ratio | target | note |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for section in sections.values():
        lines.append(f"| **{section.title}** | | | | | |")
        for row in section.rows:
            target = row.target_text()
            cells = [
                row.name,
                _value(row.lab, row.unit),
                _value(row.baseline, row.unit),
                _ratio(row.ratio),
                target + _met(row.met) if target else "",
                row.note,
            ]
            lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    return "\n".join(lines)
