#!/usr/bin/env python
"""Summarise test accuracies from Dassl-style ``log.txt`` files.

Per-folder mode (output compatible with CoOp's parser)::

    python parse_test_res.py DIRECTORY [--ci95] [--test-log] [--multi-exp] [--keyword accuracy]

Every non-hidden sub-folder of DIRECTORY (usually ``seed1``, ``seed2``, ...) must hold a
``log.txt``; the last ``* accuracy: X%`` line at or after the end signal (``Finish training``,
or ``=> result`` with ``--test-log``) is that run's accuracy. The per-file lines and the
summary are printed and also written, with any warnings, to ``DIRECTORY/.parse.txt`` (hidden, so
that CoOp's own parser, which expects every visible entry to be a run folder, still works there).
Only exact result lines count (``* accuracy: 91.8%`` on a line of its own); values that are not
finite percentages in [0, 100] are rejected with a warning naming the file.

Table mode (a project addition)::

    python parse_test_res.py ROOT --table [--format text|markdown|csv] [--std]
                                          [--compare METHOD] [--plot FILE.png]

walks ROOT for the standard output layouts (harness/protocols.py) and prints, per trainer / config
/ shots: base-to-novel Base, New and HM per dataset with an Average row; cross-dataset transfer
(ImageNet source, 10 targets, target average); domain generalisation (source, 4 ImageNet
variants, target average); few-shot accuracy per shot count and dataset with the 11-dataset
average (``--plot`` draws it as a curve per dataset). A method's per-dataset configs (e.g. its
ImageNet config) are reported in the table of its main config. Only finished runs count
(``finished.json``, see harness/run.py; or, for folders written without a run record, a log with
its final result); unfinished, stale or missing runs are marked ``--`` and listed.
"""

import argparse
import csv
import io
import json
import os
import re
import sys
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np

from harness import protocols
from harness.run import RunError, read_record, run_state, stale_model

LOG_NAME = "log.txt"
PARSE_FILE_NAME = ".parse.txt"
TRAIN_END_SIGNALS = ("Finish training", "Finished training")  # Dassl < 0.6.1 printed the latter
TEST_END_SIGNALS = ("=> result",)
PUBLISHED_FILE = Path(__file__).resolve().parent / "results" / "published.json"

SOURCE_DATASET = protocols.SOURCE_DATASET
BASE2NEW_DATASETS = protocols.B2N_DATASETS
CROSS_DATASET_TARGETS = protocols.XD_TARGETS
DG_TARGETS = protocols.DG_TARGETS
FEW_SHOT_DATASETS = protocols.B2N_DATASETS
CANONICAL_ORDER = BASE2NEW_DATASETS + DG_TARGETS

SEED_FOLDER = re.compile(r"^seed(\d+)$")

MISSING = "--"
INCOMPLETE_MARK = "*"
UNVERIFIED_MARK = "?"
MISMATCH_MARK = "†"


class ParseError(Exception):
    """A problem that ends the command with a one-line message."""


class NothingFoundError(ParseError, AssertionError):
    """No accuracy was found in a folder (upstream raised a bare AssertionError)."""


WARNINGS = []  # this invocation's warnings, also written to the summary file


def warn(message):
    """Print a warning line on stderr (and keep it for the summary file)."""
    WARNINGS.append(f"warning: {message}")
    print(f"warning: {message}", file=sys.stderr)


# ---------------------------------------------------------------------------
# Reading one log
# ---------------------------------------------------------------------------

def accuracy_regex(keyword):
    """A whole evaluator line such as ``* accuracy: 91.8%`` (the value is checked separately)."""
    return re.compile(rf"^\* {re.escape(keyword)}: (\S+)%$")


PERCENTAGE = re.compile(r"^\d+(\.\d+)?$")


@dataclass
class LogScan:
    """What a log says: whether the end signal appeared, and the value after it."""

    signal_seen: bool
    value: float | None


def scan_log(log_path, end_signals, keyword="accuracy"):
    """Find the last valid ``* keyword: X%`` line at or after the first end-signal line.

    A result line whose value is not a plain percentage in [0, 100] is ignored with a warning.
    """
    pattern = accuracy_regex(keyword)
    signal_seen = False
    value = None
    with open(log_path, encoding="utf-8", errors="replace") as log_file:
        for raw_line in log_file:
            line = raw_line.strip()
            if line in end_signals:
                signal_seen = True
            if not signal_seen:
                continue
            match = pattern.match(line)
            if match:
                value = checked_percentage(match.group(1), log_path, line, value)
    return LogScan(signal_seen, value)


def checked_percentage(text, log_path, line, fallback):
    """The value of a result line, or ``fallback`` (with a warning) if it is not a percentage."""
    if PERCENTAGE.match(text) and 0.0 <= float(text) <= 100.0:
        return float(text)
    warn(f"ignoring '{line}' in {log_path}: not a percentage in [0, 100]")
    return fallback


def read_accuracy(log_path, end_signals=TRAIN_END_SIGNALS, keyword="accuracy"):
    """Return the accuracy a log reports after its end signal, or None."""
    return scan_log(log_path, end_signals, keyword).value


def log_problem(scan, end_signals, keyword):
    """Why a scanned log has no value (None when it has one)."""
    if not scan.signal_seen:
        return f"no '{end_signals[0]}' line"
    if scan.value is None:
        return f"no '* {keyword}:' line after '{end_signals[0]}'"
    return None


# ---------------------------------------------------------------------------
# Per-folder mode (CoOp-compatible)
# ---------------------------------------------------------------------------

def visible_subfolders(directory):
    """Sorted names of the non-hidden sub-folders of a folder."""
    names = sorted(os.listdir(directory))
    return [name for name in names
            if not name.startswith(".") and os.path.isdir(os.path.join(directory, name))]


def collect_folder(directory, end_signals, keyword):
    """Return ``[(log path, value)]`` for the runs of one folder (warnings for the rest)."""
    if not os.path.isdir(directory):
        raise ParseError(f"not a directory: {directory}")
    found = []
    for name in visible_subfolders(directory):
        log_path = os.path.join(directory, name, LOG_NAME)
        if not os.path.isfile(log_path):
            warn(f"skipping {os.path.join(directory, name)}: no {LOG_NAME} (unfinished run?)")
            continue
        scan = scan_log(log_path, end_signals, keyword)
        if scan.value is None:
            warn(f"skipping {log_path}: {log_problem(scan, end_signals, keyword)} (unfinished run?)")
            continue
        found.append((log_path, scan.value))
    if not found:
        raise NothingFoundError(f"Nothing found in {directory}")
    return found


def folder_report(directory, end_signals, keyword, ci95):
    """Lines printed for one folder, and the mean accuracy."""
    found = collect_folder(directory, end_signals, keyword)
    values = np.array([value for _, value in found])
    mean = np.mean(values)
    spread = 1.96 * np.std(values) / np.sqrt(len(values)) if ci95 else np.std(values)
    lines = [f"Parsing files in {directory}"]
    lines += [f"file: {path}. {keyword}: {value:.2f}%. " for path, value in found]
    lines += [
        "===",
        f"Summary of directory: {directory}",
        f"* {keyword}: {mean:.2f}% +- {spread:.2f}%",
        "===",
    ]
    return lines, mean


def multi_experiment_report(directory, end_signals, keyword, ci95):
    """Lines for ``--multi-exp``: one block per experiment folder, then their mean."""
    if not os.path.isdir(directory):
        raise ParseError(f"not a directory: {directory}")
    lines, means = [], []
    for name in visible_subfolders(directory):
        block, mean = folder_report(os.path.join(directory, name), end_signals, keyword, ci95)
        lines += block
        means.append(mean)
    if not means:
        raise NothingFoundError(f"Nothing found in {directory}")
    lines += ["Average performance", f"* {keyword}: {np.mean(means):.2f}%"]
    return lines


def upstream_report(directory, test_log=False, multi_exp=False, keyword="accuracy", ci95=False):
    """All output lines of the per-folder mode."""
    end_signals = TEST_END_SIGNALS if test_log else TRAIN_END_SIGNALS
    if multi_exp:
        return multi_experiment_report(directory, end_signals, keyword, ci95)
    lines, _ = folder_report(directory, end_signals, keyword, ci95)
    return lines


def save_parse_file(directory, lines):
    """Write the report and its warnings to ``DIRECTORY/.parse.txt`` (the only file this script writes)."""
    path = os.path.join(directory, PARSE_FILE_NAME)
    try:
        with open(path, "w", encoding="utf-8") as parse_file:
            parse_file.write("\n".join(WARNINGS + lines) + "\n")
    except OSError as error:
        warn(f"could not write {path}: {error}")


def run_upstream_mode(args):
    """Print the per-folder report and save it to .parse.txt."""
    lines = upstream_report(args.directory, args.test_log, args.multi_exp, args.keyword, args.ci95)
    print("\n".join(lines))
    if not args.no_parse_file:
        save_parse_file(args.directory, lines)


# ---------------------------------------------------------------------------
# Table mode: finding runs
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class GroupKey:
    """What one table is about: a trainer, its config (None if the layout has none), shots."""

    trainer: str
    config: str | None
    shots: int | None

    def sort_key(self):
        return (self.trainer, self.config or "", self.shots or 0)

    def title(self, config=None):
        config = config or self.config or "(no config level)"
        if self.shots is None:
            return f"{self.trainer} | {config}"
        return f"{self.trainer} | {config} | {self.shots} shots"


@dataclass(frozen=True)
class Place:
    """Where a run folder belongs: protocol, table, side of the protocol and dataset."""

    protocol: str  # "base2new", "transfer" or "few_shot"
    key: GroupKey
    side: object  # "base" / "new" for base2new, "source" / "target" for transfer, shots for few-shot
    dataset: str
    eval_only: bool = False  # the layout holds an eval-only run here (its log ends with "=> result")
    config: str | None = None  # the folder's own config (the key may name the protocol's main config)


@dataclass
class SeedRun:
    """One seed folder and what its log says."""

    seed: int
    folder: Path
    accuracy: float | None = None
    problem: str | None = None  # why there is no accuracy
    backbone: str | None = None  # MODEL.BACKBONE.NAME from the run record, when there is one


@dataclass
class Cell:
    """The seed runs of one dataset on one side of a protocol."""

    folder: Path
    runs: dict[int, SeedRun] = field(default_factory=dict)
    config: str | None = None  # the config the runs used

    def values(self):
        return [run.accuracy for _, run in sorted(self.runs.items()) if run.accuracy is not None]


@dataclass
class RunGroup:
    """All cells of one trainer / config / shots in one protocol."""

    protocol: str
    key: GroupKey
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)

    def cell(self, side, dataset):
        return self.cells.get((side, dataset))

    def datasets(self, side):
        return sort_datasets(dataset for cell_side, dataset in self.cells if cell_side == side)

    def sides(self):
        return sorted({side for side, _ in self.cells}, key=str)

    def title_config(self):
        """The key's config, or the method's protocol description when some cells used its
        per-dataset (or per-shot) configs."""
        if all(cell.config == self.key.config for cell in self.cells.values()):
            return None
        return protocols.protocol_description(self.key.trainer, self.protocol, self.key.config)

    def expected_seeds(self):
        """Seeds seen anywhere in the group: every cell should have all of them."""
        return sorted({seed for cell in self.cells.values() for seed in cell.runs})

    def backbones(self):
        """Backbones recorded by the group's runs (runs without a record say nothing)."""
        return sorted({run.backbone for cell in self.cells.values() for run in cell.runs.values() if run.backbone})


def sort_datasets(names):
    """Canonical dataset order, unknown names after it in alphabetical order."""
    def position(name):
        if name in CANONICAL_ORDER:
            return (0, CANONICAL_ORDER.index(name), name)
        return (1, 0, name)
    return sorted(set(names), key=position)


def find_run_folders(root):
    """Map every folder that directly contains ``seed<S>`` folders to ``{seed: path}``."""
    run_folders = {}
    for folder, subfolders, _ in os.walk(root):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        seeds = {int(match.group(1)): Path(folder, name)
                 for name in subfolders if (match := SEED_FOLDER.match(name))}
        if seeds:
            run_folders[Path(folder)] = seeds
            subfolders[:] = [name for name in subfolders if not SEED_FOLDER.match(name)]
    return run_folders


def classify_parts(parts):
    """Place for a run folder given its path parts below the output root, or None."""
    place = protocols.place_of(parts)
    if place is None:
        return None
    shots = None if place.protocol == "few_shot" else place.shots
    key = GroupKey(place.trainer, protocols.protocol_config(place), shots)
    return Place(place.protocol, key, place.side, place.dataset, place.eval_only, place.cfg)


def classify_folder(root, folder):
    """Place for a run folder; ROOT may be the output folder or one of its protocol folders."""
    parts = folder.relative_to(root).parts
    place = classify_parts(parts)
    if place is None:
        place = classify_parts((Path(root).resolve().name,) + parts)
    return place


def end_signals_for(eval_only, record=None):
    """Training logs end with ``Finish training``; eval-only logs with ``=> result``. The run record
    says which the run was; without one, the layout does."""
    kind = (record or {}).get("kind")
    if kind in ("train", "test"):
        eval_only = kind == "test"
    return TEST_END_SIGNALS if eval_only else TRAIN_END_SIGNALS


def read_seed_run(seed, folder, eval_only, keyword):
    """Read one seed folder: its run state (harness/run.py), then its ``log.txt``."""
    run = SeedRun(seed, folder)
    try:
        state = run_state(str(folder))
        stale = stale_model(str(folder))
        record = read_record(str(folder)) or {}
    except RunError as error:
        run.problem = str(error)
        return run
    end_signals = end_signals_for(eval_only, record)
    if state == "unfinished":
        run.problem = "unfinished (no finished.json): resume it"
        return run
    if stale:
        run.problem = f"stale: {stale}"
        return run
    log_path = folder / LOG_NAME
    if not log_path.is_file():
        run.problem = f"no {LOG_NAME}"
    else:
        scan = scan_log(log_path, end_signals, keyword)
        run.accuracy = scan.value
        run.problem = log_problem(scan, end_signals, keyword)
    if run.problem and sorted(folder.glob(LOG_NAME + "-*")):
        run.problem += f" (a re-run log {LOG_NAME}-<time> exists but is not read)"
    run.backbone = record.get("identity", {}).get("MODEL.BACKBONE.NAME")
    return run


def collect_groups(root, keyword="accuracy", trainers=None, layouts=None):
    """Read every run under ROOT (of ``trainers`` and ``layouts`` — ``base2new``, ``transfer``,
    ``few_shot`` — only, if given); returns the groups and the folders in no known layout."""
    root = Path(root)
    if not root.is_dir():
        raise ParseError(f"not a directory: {root}")
    groups, ignored = {}, []
    for folder, seeds in sorted(find_run_folders(root).items()):
        place = classify_folder(root, folder)
        if place is None:
            ignored.append(folder)
            continue
        if (trainers is not None and place.key.trainer not in trainers) or (
                layouts is not None and place.protocol not in layouts):
            continue
        group = groups.setdefault((place.protocol, place.key), RunGroup(place.protocol, place.key))
        cell = Cell(folder, config=place.config)
        for seed, seed_folder in sorted(seeds.items()):
            cell.runs[seed] = read_seed_run(seed, seed_folder, place.eval_only, keyword)
        previous = group.cells.get((place.side, place.dataset))
        if previous is not None:  # the protocol's own config for this dataset wins over another one
            kept, dropped = (previous, cell) if previous.config != place.key.config else (cell, previous)
            warn(f"ignoring {dropped.folder}: {kept.folder} holds the same runs with the method's "
                 f"protocol config ({kept.config})")
            cell = kept
        group.cells[(place.side, place.dataset)] = cell
    ordered = sorted(groups.values(), key=lambda group: (group.protocol, group.key.sort_key()))
    return ordered, ignored


# ---------------------------------------------------------------------------
# Table mode: numbers
# ---------------------------------------------------------------------------

def harmonic_mean(base, new):
    """HM = 2 B N / (B + N)."""
    if base is None or new is None or base + new == 0:
        return None
    return 2 * base * new / (base + new)


def round_half_up(value, places=2):
    """Round as paper tables do (66.605 -> 66.61), ignoring binary floating-point noise."""
    exact = Decimal(repr(round(value, 9)))
    return exact.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


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
    """One printed table."""

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


PROTOCOL_TITLES = {
    "base2new": "Base-to-novel",
    "cross_dataset": "Cross-dataset",
    "domain_generalization": "Domain generalisation",
    "few_shot": "Few-shot",
}
METRIC_LABELS = {"base": "Base", "new": "New", "hm": "HM", "acc": "Acc"}


def metric_label(name):
    """Column header of a metric: ``Base``, ..., or ``4-shot`` for a few-shot column."""
    if name.startswith("shots_"):
        return f"{name[len('shots_'):]}-shot"
    return METRIC_LABELS[name]


def seed_metric(name, cell, expected):
    """Mean and population std over the finished seeds of a cell."""
    values = cell.values() if cell else []
    mean = float(np.mean(values)) if values else None
    std = float(np.std(values)) if values else None
    return Metric(name, mean, std, len(values), expected)


def average_metric(name, means, partial=False):
    """Mean of per-dataset means (None when there are none)."""
    return Metric(name, float(np.mean(means)) if means else None, partial=partial)


def attach_published(row, entry):
    """Copy published values for a row from a published-numbers entry."""
    if not entry:
        return
    unverified = bool(entry.get("unverified", False))
    for metric in row.metrics:
        if entry.get(metric.name) is not None:
            metric.published = entry[metric.name]
            metric.published_unverified = unverified


@dataclass
class Comparison:
    """The published numbers of one method (``--compare``) and the setting they were obtained in."""

    method: str
    numbers: dict
    setting: dict = field(default_factory=lambda: dict(DEFAULT_PUBLISHED_SETTING))

    def entry(self, protocol, dataset):
        return self.numbers.get(protocol, {}).get(dataset)

    def subset_average(self, protocol, datasets):
        """The published average over exactly ``datasets``: the mean per metric (HM of the mean Base
        and mean New for base-to-novel), or None when a dataset has no published entry."""
        entries = [self.entry(protocol, name) for name in datasets]
        if not entries or any(entry is None for entry in entries):
            return None
        names = ("base", "new") if protocol == "base2new" else ("acc",)
        if any(entry.get(name) is None for entry in entries for name in names):
            return None
        # Rounded as the papers round their averages (two decimals, then HM of the rounded means).
        average = {name: float(round_half_up(float(np.mean([entry[name] for entry in entries])))) for name in names}
        if protocol == "base2new":
            average["hm"] = float(round_half_up(harmonic_mean(average["base"], average["new"])))
        average["unverified"] = any(entry.get("unverified", False) for entry in entries)
        return average


# What the published numbers are, unless published.json says otherwise (its "setting").
DEFAULT_PUBLISHED_SETTING = {"backbone": "ViT-B/16", "shots": 16}


# ---------------------------------------------------------------------------
# Table mode: building tables
# ---------------------------------------------------------------------------

def base2new_table(group, comparison=None):
    """Base / New / HM per dataset plus the Average row (HM of the mean Base and mean New)."""
    expected = len(group.expected_seeds())
    rows, included = [], []
    for dataset in sort_datasets(group.datasets("base") + group.datasets("new")):
        base = seed_metric("base", group.cell("base", dataset), expected)
        new = seed_metric("new", group.cell("new", dataset), expected)
        both_complete = base.complete and new.complete
        hm = Metric("hm", harmonic_mean(base.mean, new.mean), partial=not both_complete)
        rows.append(Row(dataset, dataset, [base, new, hm]))
        if both_complete:
            included.append(rows[-1])
    label = average_label(included, rows, BASE2NEW_DATASETS)
    rows.append(Row(label, "average", base2new_average(included, partial=label != "Average")))
    table = Table("base2new", group.key, rows, metric_names=("base", "new", "hm"), config=group.title_config())
    add_comparison(table, comparison, "base2new", included, group)
    table.notes = (average_notes(table, included, BASE2NEW_DATASETS)
                   + run_notes(group, rows, ("base", "new")) + table.notes)
    return table


def base2new_average(included, partial):
    """Average row metrics over the datasets whose Base and New are complete."""
    base = average_metric("base", [row.metric("base").mean for row in included], partial)
    new = average_metric("new", [row.metric("new").mean for row in included], partial)
    return [base, new, Metric("hm", harmonic_mean(base.mean, new.mean), partial=partial)]


def transfer_tables(group, comparison=None):
    """Cross-dataset and/or domain-generalisation tables of one ImageNet-trained model."""
    targets = group.datasets("target")
    dg_targets = [name for name in targets if name in DG_TARGETS]
    cross_targets = [name for name in targets if name not in DG_TARGETS]
    tables = []
    if cross_targets or not dg_targets:
        tables.append(transfer_table(group, "cross_dataset", cross_targets, CROSS_DATASET_TARGETS, comparison))
    if dg_targets:
        tables.append(transfer_table(group, "domain_generalization", dg_targets, DG_TARGETS, comparison))
    return tables


def transfer_table(group, protocol, targets, canonical_targets, comparison):
    """Source row, one row per target, and the target average."""
    expected = len(group.expected_seeds())
    source = Row(f"{SOURCE_DATASET} (source)", SOURCE_DATASET,
                 [seed_metric("acc", group.cell("source", SOURCE_DATASET), expected)])
    target_rows = [Row(name, name, [seed_metric("acc", group.cell("target", name), expected)])
                   for name in targets]
    included = [row for row in target_rows if row.metric("acc").complete]
    label = average_label(included, target_rows, canonical_targets)
    means = [row.metric("acc").mean for row in included]
    average = Row(label, "average", [average_metric("acc", means, partial=label != "Average")])
    table = Table(protocol, group.key, [source] + target_rows + [average], config=group.title_config())
    add_comparison(table, comparison, protocol, included, group)
    cells = [("source", SOURCE_DATASET)] + [("target", name) for name in targets]
    table.notes = (average_notes(table, included, canonical_targets, target_rows)
                   + cell_problem_notes(group, cells) + table.notes)
    return table


def fewshot_table(group):
    """Accuracy per shot count (columns) and dataset (rows); the Average row averages, per shot
    count, the datasets whose runs are complete."""
    expected = len(group.expected_seeds())
    shot_counts = sorted(group.sides())
    names = tuple(f"shots_{shots}" for shots in shot_counts)
    rows = []
    for dataset in sort_datasets(dataset for _, dataset in group.cells):
        metrics = [seed_metric(name, group.cell(shots, dataset), expected) for shots, name in zip(shot_counts, names)]
        for metric, shots in zip(metrics, shot_counts):
            metric.shots = shots
        rows.append(Row(dataset, dataset, metrics))
    averages, coverage = [], {}
    for shots, name in zip(shot_counts, names):
        included = [row for row in rows if row.metric(name).complete]
        coverage[shots] = " ".join(average_notes(None, included, FEW_SHOT_DATASETS, rows))
        average = average_metric(name, [row.metric(name).mean for row in included], partial=bool(coverage[shots]))
        average.shots = shots
        averages.append(average)
    if len(set(coverage.values())) == 1:  # the same datasets are left out at every shot count
        notes = [note for note in coverage.values()][:1] if coverage[shot_counts[0]] else []
    else:
        notes = [f"{shots}-shot: {note}" for shots, note in coverage.items() if note]
    label = "Average" + (INCOMPLETE_MARK if notes else "")
    table = Table("few_shot", group.key, rows + [Row(label, "average", averages)], metric_names=names,
                  config=group.title_config())
    cells = [(shots, row.dataset) for shots in shot_counts for row in rows]
    table.notes = notes + cell_problem_notes(group, cells)
    return table


def average_label(included, rows, canonical):
    """``Average``, or ``Average*`` when it does not cover every expected dataset."""
    expected = set(canonical) | {row.dataset for row in rows}
    covered = {row.dataset for row in included}
    return "Average" if covered >= expected else "Average" + INCOMPLETE_MARK


def average_notes(table, included, canonical, candidate_rows=None):
    """Footnote explaining which datasets an incomplete average leaves out."""
    rows = candidate_rows if candidate_rows is not None else table.rows[:-1]
    expected = sort_datasets(set(canonical) | {row.dataset for row in rows})
    covered = {row.dataset for row in included}
    if covered >= set(expected):
        return []
    present = {row.dataset for row in rows}
    incomplete = [name for name in expected if name in present and name not in covered]
    absent = [name for name in expected if name not in present]
    parts = []
    if incomplete:
        parts.append("incomplete: " + ", ".join(incomplete))
    if absent:
        parts.append("not run: " + ", ".join(absent))
    return [f"{INCOMPLETE_MARK} Average over {len(covered)} of {len(expected)} datasets ({'; '.join(parts)})"]


def run_notes(group, rows, sides):
    """Footnotes listing unfinished and missing runs of the cells shown in a table."""
    cells = [(side, row.dataset) for row in rows if row.dataset != "average" for side in sides]
    return cell_problem_notes(group, cells)


def cell_problem_notes(group, cells):
    """``unfinished: N runs`` and ``missing: N runs`` footnotes with the paths."""
    unfinished, missing, missing_count = [], [], 0
    expected_seeds = group.expected_seeds()
    for side, dataset in cells:
        cell = group.cell(side, dataset)
        if cell is None:
            missing.append(f"{dataset}: no {SIDE_NAMES.get(side, f'{side}-shot')} runs "
                           f"(seeds {seed_list(expected_seeds)})")
            missing_count += len(expected_seeds)
            continue
        for seed in expected_seeds:
            run = cell.runs.get(seed)
            if run is None:
                missing.append(f"{cell.folder / f'seed{seed}'}: no such folder")
                missing_count += 1
            elif run.problem:
                unfinished.append(f"{run.folder / LOG_NAME}: {run.problem}")
    notes = []
    if unfinished:
        notes.append(f"unfinished: {plural(len(unfinished), 'run')}")
        notes += ["  " + line for line in unfinished]
    if missing:
        notes.append(f"missing: {plural(missing_count, 'run')}")
        notes += ["  " + line for line in missing]
    return notes


def seed_list(seeds):
    return ", ".join(str(seed) for seed in seeds)


SIDE_NAMES = {
    "base": "train_base",
    "new": "test_new",
    "source": "source (ImageNet training)",
    "target": "evaluation",
}


def plural(count, noun):
    return f"{count} {noun}" + ("" if count == 1 else "s")


def add_comparison(table, comparison, protocol, included=None, group=None):
    """Attach the published numbers of ``--compare`` and their notes.

    The Average row is compared with the published average over exactly the datasets it averages
    (``included``); published numbers from another setting (backbone, shots) are marked.
    """
    if comparison is None:
        return
    covered = [row.dataset for row in included] if included is not None else None
    canonical = BASE2NEW_DATASETS if protocol == "base2new" else (
        DG_TARGETS if protocol == "domain_generalization" else CROSS_DATASET_TARGETS)
    for row in table.rows:
        if row.dataset == "average" and covered is not None and set(covered) != set(canonical):
            attach_subset_average(table, row, comparison, protocol, covered)
        else:
            attach_published(row, comparison.entry(protocol, row.dataset))
    for row in table.rows:
        entry = comparison.entry(protocol, row.dataset) or {}
        if entry.get("note") and row.dataset != "average":
            table.notes.append(f"{comparison.method} published, {row.dataset}: {entry['note']}")
    mark_setting_mismatch(table, comparison, group)


def attach_subset_average(table, row, comparison, protocol, covered):
    """Published average over the datasets of the table's own average (with a note saying so)."""
    average = comparison.subset_average(protocol, covered) if covered else None
    full = comparison.entry(protocol, "average") or {}
    full_text = " / ".join(f"{full[name]:.2f}" for name in ("base", "new", "hm", "acc") if name in full)
    if average is None:
        table.notes.append(f"{comparison.method} published: no per-dataset numbers for all of "
                           f"{', '.join(covered) or 'these datasets'}, so no average to compare with"
                           + (f" (its {len(BASE2NEW_DATASETS) if protocol == 'base2new' else 'full'}-dataset "
                              f"average is {full_text})" if full_text else ""))
        return
    attach_published(row, average)
    table.notes.append(f"{comparison.method} published average over the {plural(len(covered), 'dataset')} run "
                       f"here ({', '.join(covered)}), from its per-dataset numbers"
                       + (f"; its average over all datasets is {full_text}" if full_text else ""))


def mark_setting_mismatch(table, comparison, group):
    """Mark the published numbers when these runs use another shot count or backbone."""
    if group is None:
        return
    differences = []
    shots = comparison.setting.get("shots")
    if shots is not None and group.key.shots is not None and group.key.shots != shots:
        differences.append(f"{group.key.shots} shots (published: {shots})")
    backbone = comparison.setting.get("backbone")
    others = [name for name in group.backbones() if name != backbone]
    if backbone and others:
        differences.append(f"backbone {', '.join(others)} (published: {backbone})")
    if not differences:
        return
    for row in table.rows:
        for metric in row.metrics:
            metric.published_mismatch = metric.published is not None
    table.notes.append(f"{MISMATCH_MARK} not comparable: these runs use {' and '.join(differences)}")


def build_tables(groups, comparison=None):
    """All tables for the collected groups, base-to-novel first."""
    tables = []
    for group in groups:
        if group.protocol == "base2new":
            tables.append(base2new_table(group, comparison))
        elif group.protocol == "few_shot":
            tables.append(fewshot_table(group))
        else:
            tables.extend(transfer_tables(group, comparison))
    order = list(PROTOCOL_TITLES)
    return sorted(tables, key=lambda table: (order.index(table.protocol), table.key.sort_key()))


# ---------------------------------------------------------------------------
# Published numbers
# ---------------------------------------------------------------------------

def load_published(path=PUBLISHED_FILE):
    """The ``methods`` mapping of the published-numbers file; each method's entry gets the file's
    ``setting`` (backbone, shots) unless it has its own."""
    try:
        with open(path, encoding="utf-8") as published_file:
            content = json.load(published_file)
        methods = content["methods"]
    except (OSError, ValueError, KeyError) as error:
        raise ParseError(f"cannot read published numbers from {path}: {error}") from error
    setting = content.get("setting", DEFAULT_PUBLISHED_SETTING)
    for numbers in methods.values():
        numbers.setdefault("setting", setting)
    return methods


def normalise_name(name):
    """Case- and punctuation-insensitive method name (``CLIP_Adapter`` == ``clip-adapter``)."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def find_method(published, name):
    """Look a method up by name or alias; unknown names list the available ones."""
    wanted = normalise_name(name)
    for method, numbers in published.items():
        names = [method] + list(numbers.get("aliases", []))
        if wanted in {normalise_name(candidate) for candidate in names}:
            return Comparison(method, numbers, dict(numbers.get("setting", DEFAULT_PUBLISHED_SETTING)))
    available = ", ".join(sorted(published, key=str.lower))
    raise ParseError(f"unknown method '{name}' for --compare; available: {available}")


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------

def format_number(value):
    return MISSING if value is None else str(round_half_up(value))


def format_value(metric, show_std):
    """``77.31``, ``77.31 ± 0.08`` with --std, or ``--``."""
    if metric.mean is None:
        return MISSING
    text = format_number(metric.mean)
    if show_std and metric.std is not None:
        text += f" ± {format_number(metric.std)}"
    return text


def format_seeds(metric):
    """Seed count: ``3``, or ``2/3`` when some expected seeds did not finish."""
    if metric.seeds is None:
        return ""
    if metric.seeds == metric.expected:
        return str(metric.seeds)
    return f"{metric.seeds}/{metric.expected}"


def format_published(metric):
    if metric.published is None:
        return MISSING
    return (f"{metric.published:.2f}" + (UNVERIFIED_MARK if metric.published_unverified else "")
            + (MISMATCH_MARK if metric.published_mismatch else ""))


def format_difference(metric):
    difference = metric.difference()
    if difference is None:
        return MISSING
    return "+0.00" if difference == 0 else f"{difference:+}"


def table_grid(table, show_std, comparison):
    """Header and rows of display strings."""
    header = ["Dataset"]
    for name in table.metric_names:
        header.append(metric_label(name))
        if name != "hm":
            header.append("n")
    comparison = comparison if table.comparable else None
    if comparison:
        header += [f"{METRIC_LABELS[name]} ({comparison.method})" for name in table.metric_names]
        header += [f"Δ{METRIC_LABELS[name]}" for name in table.metric_names]
    rows = [row_cells(row, table.metric_names, show_std, comparison) for row in table.rows]
    return header, rows


def row_cells(row, metric_names, show_std, comparison):
    """Display strings of one row, in the header's order."""
    cells = [row.label]
    for name in metric_names:
        metric = row.metric(name)
        cells.append(format_value(metric, show_std))
        if name != "hm":
            cells.append(format_seeds(metric))
    if comparison:
        cells += [format_published(row.metric(name)) for name in metric_names]
        cells += [format_difference(row.metric(name)) for name in metric_names]
    return cells


def table_footnotes(table, comparison):
    """Notes under a table, with the unverified-number legend when needed."""
    notes = list(table.notes)
    if comparison and any(metric.published_unverified for row in table.rows for metric in row.metrics):
        notes.append(f"{UNVERIFIED_MARK} published number not verified "
                     "(results.md confidence R, R-AC or U); check the paper before quoting")
    return notes


def render_text(tables, show_std=False, comparison=None):
    """Aligned plain-text tables."""
    blocks = []
    for table in tables:
        header, rows = table_grid(table, show_std, comparison)
        widths = [max(len(line[column]) for line in [header] + rows) for column in range(len(header))]
        lines = [table.title(), align(header, widths), align(["-" * width for width in widths], widths)]
        lines += [align(cells, widths) for cells in rows]
        lines += table_footnotes(table, comparison if table.comparable else None)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def align(cells, widths):
    """First column left-aligned, the others right-aligned."""
    parts = [cells[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:])]
    return "  ".join(parts).rstrip()


def render_markdown(tables, show_std=False, comparison=None):
    """GitHub-flavoured Markdown tables, one section per table."""
    blocks = []
    for table in tables:
        header, rows = table_grid(table, show_std, comparison)
        lines = [f"### {table.title()}", "", markdown_row(header)]
        lines.append("|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|")
        lines += [markdown_row(cells) for cells in rows]
        notes = table_footnotes(table, comparison if table.comparable else None)
        if notes:
            lines += [""] + [markdown_note(note) for note in notes]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def markdown_escape(text):
    """Keep ``*`` and ``|`` literal in Markdown."""
    return text.replace("|", "\\|").replace("*", "\\*")


def markdown_row(cells):
    return "| " + " | ".join(markdown_escape(cell) or " " for cell in cells) + " |"


def markdown_note(note):
    """Notes become list items; indented path lines become nested items."""
    if note.startswith("  "):
        return f"  - `{note.strip()}`"
    return f"- {markdown_escape(note)}"


CSV_COLUMNS = (
    "protocol", "trainer", "config", "shots", "dataset", "metric", "mean", "std", "seeds",
    "expected_seeds", "complete", "published_method", "published", "published_unverified",
    "published_setting_mismatch", "diff",
)


def render_csv(tables, comparison=None):
    """One CSV line per (table, dataset, metric); numbers rounded to 2 decimals."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for table in tables:
        for row in table.rows:
            for metric in row.metrics:
                writer.writerow(csv_record(table, row, metric, comparison if table.comparable else None))
    return buffer.getvalue()


def csv_record(table, row, metric, comparison):
    """The CSV fields of one metric."""
    difference = metric.difference()
    return {
        "protocol": table.protocol,
        "trainer": table.key.trainer,
        "config": table.key.config or "",
        "shots": next((shots for shots in (metric.shots, table.key.shots) if shots is not None), ""),
        "dataset": row.dataset,
        "metric": "acc" if metric.shots is not None else metric.name,
        "mean": "" if metric.mean is None else format_number(metric.mean),
        "std": "" if metric.std is None or metric.mean is None else format_number(metric.std),
        "seeds": "" if metric.seeds is None else metric.seeds,
        "expected_seeds": "" if metric.expected is None else metric.expected,
        "complete": int(metric.complete),
        "published_method": comparison.method if comparison else "",
        "published": "" if metric.published is None else f"{metric.published:.2f}",
        "published_unverified": int(metric.published_unverified) if metric.published is not None else "",
        "published_setting_mismatch": int(metric.published_mismatch) if metric.published is not None else "",
        "diff": "" if difference is None else str(difference),
    }


def render_tables(tables, fmt="text", show_std=False, comparison=None):
    """Render tables in the requested format."""
    if fmt == "csv":
        return render_csv(tables, comparison)
    if fmt == "markdown":
        return render_markdown(tables, show_std, comparison)
    return render_text(tables, show_std, comparison)


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------

def import_pyplot():
    """matplotlib is optional: import it only for --plot."""
    try:
        import matplotlib
    except ImportError as error:
        raise ParseError("--plot needs matplotlib, which is not installed: pip install matplotlib") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot
    return pyplot


def plot_tables(tables, path, comparison=None):
    """One panel per base-to-novel table (bars) and per few-shot table (accuracy against shots)."""
    shown = [table for table in tables if table.protocol in ("base2new", "few_shot")]
    if not shown:
        raise ParseError("--plot: no base-to-novel or few-shot results to plot")
    pyplot = import_pyplot()
    width = max(8.0, 0.9 * max(len(table.rows) for table in shown))
    figure, axes = pyplot.subplots(len(shown), 1, figsize=(width, 4.5 * len(shown)), squeeze=False)
    for axis, table in zip(axes[:, 0], shown):
        if table.protocol == "base2new":
            draw_base2new_axis(axis, table, comparison)
        else:
            draw_fewshot_axis(axis, table)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)


def draw_base2new_axis(axis, table, comparison):
    """One subplot: bars for ours, black markers for the published numbers."""
    positions = np.arange(len(table.rows))
    bar_width = 0.27
    for index, name in enumerate(("base", "new", "hm")):
        offsets = positions + (index - 1) * bar_width
        ours = [nan_if_none(row.metric(name).mean) for row in table.rows]
        axis.bar(offsets, ours, bar_width, label=METRIC_LABELS[name])
        if comparison:
            published = [nan_if_none(row.metric(name).published) for row in table.rows]
            axis.scatter(offsets, published, marker="D", s=14, color="black", zorder=3,
                         label=f"{comparison.method} (published)" if index == 0 else None)
    axis.set_xticks(positions)
    axis.set_xticklabels([row.label for row in table.rows], rotation=30, ha="right")
    axis.set_ylabel("accuracy (%)")
    axis.set_ylim(0, 112)  # room for the legend above 100 %
    axis.set_title(table.title())
    axis.legend(fontsize="small", ncol=4, loc="upper center")


def draw_fewshot_axis(axis, table):
    """One subplot: accuracy against the shot count (evenly spaced: 1, 2, 4, 8, 16), a thin line
    per dataset and a thick one for the average."""
    positions = np.arange(len(table.metric_names))
    for row in table.rows:
        values = [nan_if_none(row.metric(name).mean) for name in table.metric_names]
        average = row.dataset == "average"
        axis.plot(positions, values, marker="o", linewidth=2.5 if average else 1, color="black" if average else None,
                  markersize=5 if average else 3, label=row.label, zorder=3 if average else 2)
    axis.set_xticks(positions)
    axis.set_xticklabels([metric_label(name) for name in table.metric_names])
    axis.set_xlabel("training images per class")
    axis.set_ylabel("accuracy (%)")
    axis.set_title(table.title())
    axis.legend(fontsize="x-small", ncol=2, loc="best")


def nan_if_none(value):
    return float("nan") if value is None else value


# ---------------------------------------------------------------------------
# Table mode entry point
# ---------------------------------------------------------------------------

def table_report(root, fmt="text", show_std=False, compare=None, keyword="accuracy",
                 published_path=PUBLISHED_FILE, plot_path=None, trainers=None, layouts=None):
    """The table-mode output for ROOT as a string (writes the plot if asked); ``trainers`` and
    ``layouts``: only their tables (see ``collect_groups``; scripts/benchmark.py)."""
    comparison = find_method(load_published(published_path), compare) if compare else None
    groups, ignored = collect_groups(root, keyword, trainers, layouts)
    for folder in ignored:
        warn(f"ignoring {folder}: not in a known output layout")
    if not groups:
        raise NothingFoundError(
            f"Nothing found in {root}: expected base2new/{{train_base,test_new}}/<dataset>/shots_<K>/<Trainer>"
            "[/<cfg>]/seed<S>, imagenet/<Trainer>/<cfg>_<K>shots/seed<S>, "
            "evaluation/<Trainer>/<cfg>_<K>shots/<dataset>/seed<S> or "
            "few_shot/<dataset>/shots_<K>/<Trainer>/<cfg>/seed<S>")
    tables = build_tables(groups, comparison)
    if plot_path:
        plot_tables(tables, plot_path, comparison)
    return render_tables(tables, fmt, show_std, comparison)


def run_table_mode(args):
    sys.stdout.write(table_report(args.directory, args.format, args.std, args.compare,
                                  args.keyword, args.published, args.plot))


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(
        description="Summarise accuracies from Dassl log.txt files (per folder, or as tables with --table).")
    parser.add_argument("directory", type=str, help="folder of seed folders (or output root with --table)")
    parser.add_argument("--ci95", action="store_true", help="report the 95%% confidence interval instead of std")
    parser.add_argument("--test-log", action="store_true", help="parse test-only logs (end signal '=> result')")
    parser.add_argument("--multi-exp", action="store_true", help="each sub-folder is an experiment of seed folders")
    parser.add_argument("--keyword", default="accuracy", type=str, help="which metric to parse")
    parser.add_argument("--no-parse-file", action="store_true", help=f"do not write DIRECTORY/{PARSE_FILE_NAME}")
    table = parser.add_argument_group("table mode")
    table.add_argument("--table", action="store_true", help="walk DIRECTORY for the standard layouts")
    table.add_argument("--format", choices=("text", "markdown", "csv"), default="text")
    table.add_argument("--std", action="store_true", help="show ± population std over seeds")
    table.add_argument("--compare", metavar="METHOD", help="add published numbers and ours - published")
    table.add_argument("--plot", metavar="FILE.png",
                       help="base-to-novel bars and few-shot curves (needs matplotlib)")
    table.add_argument("--published", default=str(PUBLISHED_FILE), help="published-numbers JSON file")
    return parser


def check_mode_options(parser, args):
    """Reject options that do not belong to the chosen mode."""
    if args.table:
        wrong = [name for name, used in (("--ci95", args.ci95), ("--test-log", args.test_log),
                                         ("--multi-exp", args.multi_exp)) if used]
        if wrong:
            parser.error(f"{', '.join(wrong)} cannot be used with --table")
    else:
        used = [name for name, value in (("--format", args.format != "text"), ("--std", args.std),
                                         ("--compare", args.compare), ("--plot", args.plot)) if value]
        if used:
            parser.error(f"{', '.join(used)} requires --table")


def main(argv=None):
    """Run the command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_mode_options(parser, args)
    try:
        if args.table:
            run_table_mode(args)
        else:
            run_upstream_mode(args)
    except ParseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
