"""One result row per figure, the printed table and the JSON file."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Row:
    """One figure: our value, the baseline's, their ratio, the target and the verdict.

    `status` is "pass", "fail", "info" (no target) or "n/a" (with `reason`).
    """

    key: str
    figure: str
    unit: str
    ours: float | None = None
    baseline: float | None = None
    baseline_name: str = ""
    ratio: float | None = None
    target: str = ""
    status: str = "n/a"
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def judge_ratio(self, minimum: float) -> "Row":
        """Set ratio = ours / baseline and pass when ratio >= minimum."""
        if self.ours is not None and self.baseline:
            self.ratio = self.ours / self.baseline
            self.status = "pass" if self.ratio >= minimum else "fail"
        return self


def fmt(value: float | None, unit: str) -> str:
    """Human form of a value in `unit` (rows/s, MB/s, s, MB, values/s)."""
    if value is None:
        return "-"
    if unit in ("rows/s", "values/s"):
        if value >= 1e6:
            return f"{value / 1e6:.2f}M {unit}"
        if value >= 1e3:
            return f"{value / 1e3:.1f}k {unit}"
        return f"{value:.0f} {unit}"
    if unit == "s":
        return f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"
    if unit in ("MB/s", "MB"):
        return f"{value:.1f} {unit}"
    return f"{value:.3g} {unit}"


def table(rows: list[Row]) -> str:
    """The printed table: figure | ours | baseline | ratio | target | result."""
    head = ("#", "figure", "ours", "baseline", "ratio", "target", "result")
    body = []
    for r in rows:
        result = r.status if r.status != "n/a" else f"n/a ({r.reason})"
        base = fmt(r.baseline, r.unit) + (f" [{r.baseline_name}]" if r.baseline_name and r.baseline is not None else "")
        body.append((r.key, r.figure, fmt(r.ours, r.unit), base,
                     f"{r.ratio:.2f}x" if r.ratio is not None else "-", r.target or "-", result))
    widths = [max(len(str(x[i])) for x in [head] + body) for i in range(len(head) - 1)]
    lines = []
    sep = "  "
    lines.append(sep.join(h.ljust(w) for h, w in zip(head, widths)) + sep + head[-1])
    lines.append(sep.join("-" * w for w in widths) + sep + "------")
    for b in body:
        lines.append(sep.join(str(c).ljust(w) for c, w in zip(b, widths)) + sep + b[-1])
    return "\n".join(lines)


def write_json(path: Path, meta: dict, rows: list[Row]) -> None:
    """Write {meta, rows} atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=2))
    os.replace(tmp, path)
