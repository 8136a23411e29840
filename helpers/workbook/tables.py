"""A small table type that renders as HTML in Jupyter and as Markdown in text
(no pandas needed). Used for findings, histories and comparison tables."""
from __future__ import annotations

import html
import math
from typing import Any, Sequence


def format_value(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.{max(digits - 1, 1)}e}"
        return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:.{digits}g}"
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return format_value(value.item(), digits)
    return str(value)


class Table:
    """Rows of equal-length sequences under named columns.

    `highlight` is a set of row indices drawn in bold (used by widgets).
    """

    def __init__(self, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                 title: str | None = None, highlight: Sequence[int] = (), digits: int = 4):
        self.columns = list(columns)
        self.rows = [list(r) for r in rows]
        for r in self.rows:
            if len(r) != len(self.columns):
                raise ValueError(f"row {r!r} has {len(r)} cells, expected {len(self.columns)}")
        self.title = title
        self.highlight = set(highlight)
        self.digits = digits

    @classmethod
    def from_records(cls, records: Sequence[dict], columns: Sequence[str] | None = None, **kw) -> "Table":
        if columns is None:
            columns = []
            for rec in records:
                columns += [k for k in rec if k not in columns]
        return cls(columns, [[rec.get(c, "") for c in columns] for rec in records], **kw)

    def column(self, name: str) -> list:
        i = self.columns.index(name)
        return [r[i] for r in self.rows]

    def records(self) -> list[dict]:
        return [dict(zip(self.columns, r)) for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def to_markdown(self) -> str:
        cells = [[format_value(v, self.digits).replace("|", "\\|") for v in r] for r in self.rows]
        lines = []
        if self.title:
            lines += [f"**{self.title}**", ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        for i, r in enumerate(cells):
            if i in self.highlight:
                r = [f"**{c}**" for c in r]
            lines.append("| " + " | ".join(r) + " |")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in self.columns)
        body = []
        for i, r in enumerate(self.rows):
            style = ' style="font-weight:bold;background:#fff3c4"' if i in self.highlight else ""
            tds = "".join(f"<td>{html.escape(format_value(v, self.digits))}</td>" for v in r)
            body.append(f"<tr{style}>{tds}</tr>")
        caption = f"<caption style='caption-side:top'>{html.escape(self.title)}</caption>" if self.title else ""
        return (f"<table class='workbook-table'>{caption}<thead><tr>{head}</tr></thead>"
                f"<tbody>{''.join(body)}</tbody></table>")

    def __str__(self) -> str:
        return self.to_markdown()

    __repr__ = __str__
