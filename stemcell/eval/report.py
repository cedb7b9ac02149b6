"""Results, tables and plots in one place, so every benchmark reports the same way.

Benchmarks print a table for the human, write JSON (the contract scripts read) and Parquet
(rows for later analysis with pyarrow/pandas) side by side, and save a PNG plot.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def _jsonable(value: Any) -> Any:
    """numpy scalars/arrays and Paths are common in results; JSON needs plain types."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_json(obj: Any, path: str | Path) -> Path:
    """Write `obj` as indented JSON, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")
    return path


def save_results(obj: Any, out_json: str | Path, rows: Sequence[Mapping[str, Any]] | None = None) -> Path:
    """Write `obj` to `out_json` and, when there are `rows`, the same rows as Parquet beside it.

    `rows` defaults to `obj` itself when `obj` is a list of dicts.
    """
    out_json = write_json(obj, out_json)
    if rows is None and isinstance(obj, list) and all(isinstance(r, Mapping) for r in obj):
        rows = obj
    if rows:
        table = pa.Table.from_pylist([_jsonable(dict(r)) for r in rows])
        pq.write_table(table, out_json.with_suffix(".parquet"))
    return out_json


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured markdown table of `rows` (columns default to the first row's keys)."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def print_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, title: str | None = None
) -> None:
    """Print `rows` as an aligned plain-text table (what a terminal user reads)."""
    if title:
        print(f"\n{title}")
    if not rows:
        print("(no rows)")
        return
    columns = list(columns or rows[0].keys())
    cells = [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def save_plot(fig: Any, path: str | Path) -> Path:
    """Save a matplotlib figure as PNG and close it (benchmarks run headless)."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
