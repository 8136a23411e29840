"""A recomputed training outcome judged by the committed seeds' spread, not by a float tolerance.

A short training run is chaotic: another CPU's summation order, another thread count or one ulp
in one initial weight moves its result as much as another seed does. So a committed table is a set
of samples, and a row recomputed live on any machine is one more sample. It is judged by an
interval derived from the data and written on the page:

    [min − margin, max + margin] of the committed seeds, margin = k · max(resolution, sd),  k = 3

- min, max, sd: the committed seeds' values of the same quantity in the same setting;
- resolution: the measurement's own noise, e.g. the binomial standard error √(p(1−p)/n) of an
  accuracy on n test examples (`binomial_se`); 0 where the quantity has none;
- sd: the committed seeds' standard deviation: a new sample shares their spread.

Then the lesson's claim is evaluated again on the live sample: that is what makes the
recomputation evidence, not the match.

    Spread(quantity, live, committed_values, resolution=..., same_seed=...)  one quantity judged
    column_spreads(live, rows, columns, seed=...)                          a recomputed row's columns
    binomial_se(p, n)                                                      an accuracy's resolution
    wilson_interval(p, n)                                                  a fraction's 95 % Wilson interval
    Recomputed()            the notebook's rows recomputed live: .add(row, spreads) shows the
                            judgement as a table, records `committed_rows_recomputed` and
                            `committed_rows_within_spread`, and returns whether the row is within
    spread_summary(values)  "mean ± sd (min–max, n seeds)" for a headline number read from a table
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

K = 3.0   # margins are k = 3 times the larger of the resolution and the seeds' sd


def binomial_se(p: float, n: int) -> float:
    """The standard error of an accuracy p measured on n examples, √(p(1−p)/n); p is kept at least
    half an example away from 0 and 1, so a perfect score still has a resolution."""
    p = min(max(float(p), 0.5 / n), 1 - 0.5 / n)
    return math.sqrt(p * (1 - p) / n)


def wilson_interval(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a fraction p measured on n examples (95 % for z = 1.96): where the
    fraction over all data of the same kind lies, given this one sample. Unlike p ± z·se it stays inside
    [0, 1] and does not collapse at p = 0 or 1."""
    if n < 1 or not 0 <= p <= 1:
        raise ValueError(f"need n >= 1 and 0 <= p <= 1, got p={p}, n={n}")
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Spread:
    """One recomputed quantity and the committed seeds' values it is judged by."""
    quantity: str
    live: float
    committed: tuple
    resolution: float = 0.0
    same_seed: float | None = None     # the committed value of the live run's own seed, shown, not judged
    k: float = K

    def __post_init__(self):
        values = tuple(float(v) for v in self.committed)
        if not values:
            raise ValueError(f"{self.quantity}: no committed values to judge the live one by")
        object.__setattr__(self, "committed", values)

    @property
    def sd(self) -> float:
        return float(np.std(self.committed, ddof=1)) if len(self.committed) > 1 else 0.0

    @property
    def margin(self) -> float:
        return self.k * max(self.resolution, self.sd)

    @property
    def interval(self) -> tuple[float, float]:
        return min(self.committed) - self.margin, max(self.committed) + self.margin

    @property
    def within(self) -> bool:
        lo, hi = self.interval
        return bool(lo <= float(self.live) <= hi)

    def describe(self) -> str:
        lo, hi = self.interval
        return (f"{self.quantity} {float(self.live):.4g} in [{lo:.4g}, {hi:.4g}]"
                if self.within else f"{self.quantity} {float(self.live):.4g} OUTSIDE [{lo:.4g}, {hi:.4g}]")

    def row(self) -> list:
        lo, hi = self.interval
        seeds = f"{min(self.committed):.4g} – {max(self.committed):.4g} (sd {self.sd:.2g}, {len(self.committed)} seeds)"
        return [self.quantity, float(self.live), "" if self.same_seed is None else float(self.same_seed), seeds,
                f"{self.k:g} × max({self.resolution:.2g}, {self.sd:.2g})", f"[{lo:.4g}, {hi:.4g}]",
                "yes" if self.within else "NO"]


def column_spreads(live: dict, rows: list[dict], columns, *, seed=None, resolution: dict | None = None) -> list[Spread]:
    """Each named column of a recomputed row judged by the same column of the committed rows (one per seed);
    the committed row of `seed`, if there is one, is shown beside it. resolution: {column: its noise}."""
    if not rows:
        raise ValueError("no committed rows to judge the recomputed one by")
    own = next((r for r in rows if seed is not None and r.get("seed") == seed), None)
    return [Spread(c, float(live[c]), [float(r[c]) for r in rows], resolution=(resolution or {}).get(c, 0.0),
                   same_seed=None if own is None else float(own[c])) for c in columns]


COLUMNS = ["quantity", "recomputed now", "committed, same seed", "committed seeds: min – max",
           "margin: k × max(resolution, sd)", "accepted interval", "within"]


class Recomputed:
    """The committed rows a notebook recomputes live, each judged by the committed seeds' spread.

    Every `add` records the running totals as findings: `committed_rows_recomputed` (rows so far)
    and `committed_rows_within_spread` (all of them within; None while none was recomputed)."""

    def __init__(self, record=None):
        if record is None:
            from .findings import record
        self._record = record
        self.rows: dict[str, list[Spread]] = {}
        self._write()

    def add(self, row: str, spreads: list[Spread], *, show: bool = True, title: str = "") -> bool:
        self.rows[row] = list(spreads)
        self._write()
        if show:
            from IPython.display import display

            from .tables import Table
            display(Table(COLUMNS, [s.row() for s in spreads], digits=4,
                          title=title or f"{row}: recomputed now, judged by the committed seeds' spread"))
        return self.row_within(row)

    def row_within(self, row: str) -> bool:
        return all(s.within for s in self.rows[row])

    @property
    def within(self) -> bool | None:
        return all(self.row_within(r) for r in self.rows) if self.rows else None

    def describe(self, row: str) -> str:
        return "; ".join(s.describe() for s in self.rows[row])

    def _write(self) -> None:
        self._record("committed_rows_recomputed", len(self.rows))
        self._record("committed_rows_within_spread", self.within)


def spread_summary(values, digits: int = 3) -> str:
    """A headline number read from a committed table: "mean ± sd (min–max, n seeds)"."""
    v = np.asarray([float(x) for x in values], dtype=float)
    if len(v) == 1:
        return f"{v[0]:.{digits}f} (1 seed)"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f} ({v.min():.{digits}f}–{v.max():.{digits}f}, {len(v)} seeds)"
