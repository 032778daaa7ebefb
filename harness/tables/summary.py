"""``--summary``: the methods side by side, one table per protocol (and shot count).

Built from the per-trainer tables (``build``): every trainer / config found is a method, every
dataset any of them ran is a row, and the Average row is each method's own average (marked when it
covers fewer datasets than the protocol's). Few-shot gets one summary per shot count.
"""
from dataclasses import dataclass, field

from harness import protocols
from harness.tables.build import average_notes
from harness.tables.metrics import INCOMPLETE_MARK, PROTOCOL_TITLES, plural
from harness.tables.runs import sort_datasets

# The datasets an average is over, per table protocol.
CANONICAL_DATASETS = {
    "base2new": protocols.B2N_DATASETS,
    "cross_dataset": protocols.XD_TARGETS,
    "domain_generalization": protocols.DG_TARGETS,
    "few_shot": protocols.B2N_DATASETS,
}


@dataclass
class MethodColumn:
    """One method of a summary: a per-trainer table and the name of its metrics there."""

    label: str  # the trainer, with its config when the trainer has several in this summary
    table: object  # metrics.Table
    source_names: tuple  # the table's metric names shown (``shots_K`` for few-shot K)

    @property
    def trainer(self):
        return self.table.key.trainer

    @property
    def config(self):
        return self.table.key.config or ""

    def seed_count(self):
        """Seeds of the method's runs (seen anywhere in its table)."""
        return max((metric.expected or 0 for row in self.table.rows for metric in row.metrics), default=0)

    def row(self, dataset):
        return next((row for row in self.table.rows if row.dataset == dataset), None)

    def metric(self, dataset, name):
        """The metric ``name`` (a summary metric name) of ``dataset``, or None when not run."""
        row = self.row(dataset)
        if row is None:
            return None
        return row.metric(self.source_names[self.metric_names.index(name)])

    @property
    def metric_names(self):
        return ("base", "new", "hm") if self.table.protocol == "base2new" else ("acc",)


@dataclass
class Summary:
    """One protocol (one shot count): rows = datasets and the average, a column group per method."""

    protocol: str
    shots: int | None
    methods: list[MethodColumn]
    datasets: list[str]  # row order; the last is "average"
    labels: dict[str, str] = field(default_factory=dict)  # row label per dataset
    notes: list[str] = field(default_factory=list)

    @property
    def metric_names(self):
        return ("base", "new", "hm") if self.protocol == "base2new" else ("acc",)

    def title(self):
        shots = "" if self.shots is None else f" | {plural(self.shots, 'shot')}"
        return f"{PROTOCOL_TITLES[self.protocol]} summary{shots}"

    def file_suffix(self):
        """``base2new``, ``cross_dataset``, ...; with the shot count for a base-to-novel or transfer
        protocol run at another shot count than the default."""
        if self.protocol == "few_shot" or self.shots in (None, protocols.DEFAULT_SHOTS):
            return self.protocol
        return f"{self.protocol}_{self.shots}shots"


def summary_groups(tables):
    """``{(protocol, shots): [(table, source metric names)]}`` in table order; few-shot tables are
    split per shot count."""
    groups = {}
    for table in tables:
        if table.protocol == "few_shot":
            for name in table.metric_names:
                shots = int(name[len("shots_"):])
                groups.setdefault((table.protocol, shots), []).append((table, (name,)))
        else:
            groups.setdefault((table.protocol, table.key.shots), []).append((table, table.metric_names))
    return groups


def method_labels(tables):
    """The trainer name, or ``trainer (config)`` when a trainer has several configs here."""
    configs = {}
    for table in tables:
        configs.setdefault(table.key.trainer, []).append(table.key.config or "")
    return [table.key.trainer if len(configs[table.key.trainer]) == 1
            else f"{table.key.trainer} ({table.key.config or 'no config level'})" for table in tables]


def build_summaries(tables):
    """One ``Summary`` per protocol and shot count, in the tables' protocol order."""
    summaries = []
    for (protocol, shots), members in summary_groups(tables).items():
        labels = method_labels([table for table, _ in members])
        methods = [MethodColumn(label, table, names) for label, (table, names) in zip(labels, members)]
        datasets, row_labels = summary_rows(methods)
        summary = Summary(protocol, shots, methods, datasets, row_labels)
        summary.notes = coverage_notes(summary)
        summaries.append(summary)
    order = list(PROTOCOL_TITLES)
    return sorted(summaries, key=lambda summary: (order.index(summary.protocol), summary.shots or 0))


def summary_rows(methods):
    """Datasets with at least one result (or, outside few-shot, a run folder), then the average."""
    labels = {}
    for method in methods:
        for row in method.table.rows:
            if row.dataset == "average":
                continue
            shown = [method.metric(row.dataset, name) for name in method.metric_names]
            if method.table.protocol != "few_shot" or any(metric.mean is not None for metric in shown):
                labels.setdefault(row.dataset, row.label)
    ordered = sort_datasets(labels)  # ImageNet, the transfer tables' source, comes first
    labels["average"] = "Average"
    return ordered + ["average"], labels


def averaged_rows(method):
    """The method's rows that its Average covers (the source row of a transfer table is not one)."""
    return [row for row in method.table.rows if row.dataset != "average"
            and not (method.table.protocol in ("cross_dataset", "domain_generalization")
                     and row.label.endswith("(source)"))]


def coverage_notes(summary):
    """Which datasets each method's incomplete Average leaves out; which methods have incomplete cells."""
    notes, incomplete, covered = [], [], {}
    for method in summary.methods:
        rows = averaged_rows(method)
        required = ("base", "new") if summary.protocol == "base2new" else ("acc",)
        included = [row for row in rows
                    if all(method.metric(row.dataset, name).complete for name in required)]
        if summary.protocol == "few_shot":  # only the datasets run at some shot count are rows
            rows = [row for row in rows if row.dataset in summary.datasets]
        covered[method.label] = {row.dataset for row in included}
        for note in average_notes(None, included, CANONICAL_DATASETS[summary.protocol], rows):
            notes.append(f"{INCOMPLETE_MARK} {method.label}: {note[len(INCOMPLETE_MARK) + 1:]}")
        cells = [method.metric(dataset, name) for dataset in summary.datasets[:-1]
                 for name in summary.metric_names if name != "hm"]
        missing = sum(1 for metric in cells if metric is None or not metric.complete)
        if missing:
            incomplete.append(f"{method.label} ({missing} of {plural(len(cells), 'cell')})")
    if len({frozenset(datasets) for datasets in covered.values()}) > 1:
        notes.append("the averages cover different datasets (" + ", ".join(
            f"{label}: {len(datasets)}" for label, datasets in covered.items()) + "): compare them with care")
    if incomplete:
        notes.append(f"incomplete or not run: {', '.join(incomplete)}; the per-trainer tables (without "
                     "--summary) list the unfinished and missing runs")
    return notes


def column_legend(summary, show_std):
    """Footnotes explaining the columns and marks of a summary."""
    if summary.protocol == "base2new":
        lines = [f"Base / New: accuracy (%) on the base / new classes ({summary.shots} shots of the base classes "
                 "for training), mean over seeds; HM: harmonic mean 2·Base·New / (Base + New) of those means"]
    elif summary.protocol == "few_shot":
        lines = [f"one column per method: accuracy (%) on all classes after training with "
                 f"{plural(summary.shots, 'image')} per class, mean over seeds"]
    else:
        lines = [f"one column per method: accuracy (%), mean over seeds; the model is trained on "
                 f"{protocols.SOURCE_DATASET} (source) and evaluated on each target's test set, all classes"]
    source = " of the targets" if summary.protocol in ("cross_dataset", "domain_generalization") else ""
    lines.append(f"Average: each method's mean of its per-dataset means{source}"
                 + (" (HM: of the average Base and New)" if summary.protocol == "base2new" else ""))
    lines.append("(k/n): only k of the method's n seeds finished for this cell; --: no finished run")
    if show_std:
        lines.append("±: population standard deviation over seeds")
    lines.append(f"{INCOMPLETE_MARK}: an average over fewer datasets than the protocol's (see below)")
    lines.append("methods: " + "; ".join(
        f"{method.label}: config {method.table.config or method.config or '(none)'}, n = {method.seed_count()}"
        for method in summary.methods))
    return lines
