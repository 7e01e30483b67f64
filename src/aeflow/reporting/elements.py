"""What a report is made of: figures, tables and formatted numbers.

The report (aeflow.reporting.report) lays them out; the figure modules make them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Figure:
    path: Path
    caption: str


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    numeric: bool = True  # right-align the columns after the first


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"
    return str(value)
