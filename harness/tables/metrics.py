"""What a table holds: metrics (mean and population std over seeds, published value), rows, tables;
the two rules every number follows (HM, rounding half up as the papers do)."""
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

import numpy as np

from harness.tables.runs import GroupKey

MISSING = "--"
INCOMPLETE_MARK = "*"
UNVERIFIED_MARK = "?"
MISMATCH_MARK = "†"

PROTOCOL_TITLES = {
    "base2new": "Base-to-novel",
    "cross_dataset": "Cross-dataset",
    "domain_generalization": "Domain generalisation",
    "few_shot": "Few-shot",
}
METRIC_LABELS = {"base": "Base", "new": "New", "hm": "HM", "acc": "Acc"}


def harmonic_mean(base, new):
    """HM = 2 B N / (B + N)."""
    if base is None or new is None or base + new == 0:
        return None
    return 2 * base * new / (base + new)


def round_half_up(value, places=2):
    """Round as paper tables do (66.605 -> 66.61), ignoring binary floating-point noise."""
    exact = Decimal(repr(round(float(value), 9)))  # float(): a numpy float64 repr is not a number
    return exact.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def metric_label(name):
    """Column header of a metric: ``Base``, ..., or ``4-shot`` for a few-shot column."""
    if name.startswith("shots_"):
        return f"{name[len('shots_'):]}-shot"
    return METRIC_LABELS[name]


def plural(count, noun):
    return f"{count} {noun}" + ("" if count == 1 else "s")


@dataclass
class Metric:
    """One number in a table row, with its seeds and the published value to compare with."""

    name: str  # "base", "new", "hm", "acc", or "shots_<K>" (few-shot)
    mean: float | None
    std: float | None = None
    seeds: int | None = None  # None: not a per-seed quantity (HM, averages)
    expected: int | None = None
    published: float | None = None
    published_unverified: bool = False
    published_mismatch: bool = False  # the published setting (backbone, shots) is not this run's
    partial: bool = False  # derived from incomplete inputs (HM of a partial cell, flagged average)
    shots: int | None = None  # few-shot: the shot count of this column

    @property
    def complete(self):
        if self.mean is None or self.partial:
            return False
        return self.seeds is None or self.seeds == self.expected

    def difference(self):
        """Ours (as displayed) minus published, or None."""
        if self.mean is None or self.published is None:
            return None
        return round_half_up(self.mean) - Decimal(str(self.published))


def seed_metric(name, cell, expected):
    """Mean and population std over the finished seeds of a cell."""
    values = cell.values() if cell else []
    mean = float(np.mean(values)) if values else None
    std = float(np.std(values)) if values else None
    return Metric(name, mean, std, len(values), expected)


def average_metric(name, means, partial=False):
    """Mean of per-dataset means (None when there are none)."""
    return Metric(name, float(np.mean(means)) if means else None, partial=partial)


@dataclass
class Row:
    """A table row: a dataset (or the average) and its metrics."""

    label: str
    dataset: str
    metrics: list[Metric]

    def metric(self, name):
        return next(metric for metric in self.metrics if metric.name == name)


@dataclass
class Table:
    """One printed table: one trainer / config / shots in one protocol."""

    protocol: str  # "base2new", "cross_dataset", "domain_generalization" or "few_shot"
    key: GroupKey
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    metric_names: tuple[str, ...] = ("acc",)
    config: str | None = None  # the title's config when it is not just the key's

    def title(self):
        return f"{PROTOCOL_TITLES[self.protocol]} | {self.key.title(self.config)}"

    @property
    def comparable(self):
        """Published numbers exist for these protocols (none per shot count)."""
        return self.protocol != "few_shot"
