"""Finding the runs below an output root (the layout is ``harness/protocols.py``'s) and reading them.

Every folder that holds ``seed<S>`` folders is placed with ``protocols.place_of``; the runs of one
trainer / config / shots in one protocol form a ``RunGroup``, one ``Cell`` per (side, dataset). Only
finished runs count (``finished.json``, see harness/run.py; or, for folders written without a run
record, a log with its final result).
"""
import os
from dataclasses import dataclass, field
from pathlib import Path

from harness import protocols
from harness.run import RunError, read_record, run_state, stale_model
from harness.tables.logs import (LOG_NAME, TEST_END_SIGNALS, TRAIN_END_SIGNALS, ParseError, log_problem, scan_log,
                                 warn)

CANONICAL_ORDER = protocols.B2N_DATASETS + protocols.DG_TARGETS


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


def group_key(place):
    """The table a placed run folder belongs to: few-shot tables hold every shot count."""
    shots = None if place.protocol == "few_shot" else place.shots
    return GroupKey(place.trainer, protocols.protocol_config(place), shots)


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

    protocol: str  # "base2new", "transfer" or "few_shot" (protocols.Place.protocol)
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
        seeds = {seed: Path(folder, name) for name in subfolders if (seed := protocols.seed_of(name)) is not None}
        if seeds:
            run_folders[Path(folder)] = seeds
            subfolders[:] = [name for name in subfolders if protocols.seed_of(name) is None]
    return run_folders


def place_folder(root, folder):
    """``protocols.Place`` of a run folder; ROOT may be the output folder or one of its protocol folders."""
    parts = folder.relative_to(root).parts
    place = protocols.place_of(parts)
    if place is None:
        place = protocols.place_of((Path(root).resolve().name,) + parts)
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
        place = place_folder(root, folder)
        if place is None:
            ignored.append(folder)
            continue
        key = group_key(place)
        if (trainers is not None and key.trainer not in trainers) or (
                layouts is not None and place.protocol not in layouts):
            continue
        group = groups.setdefault((place.protocol, key), RunGroup(place.protocol, key))
        cell = Cell(folder, config=place.cfg)
        for seed, seed_folder in sorted(seeds.items()):
            cell.runs[seed] = read_seed_run(seed, seed_folder, place.eval_only, keyword)
        previous = group.cells.get((place.side, place.dataset))
        if previous is not None:  # the protocol's own config for this dataset wins over another one
            kept, dropped = (previous, cell) if previous.config != key.config else (cell, previous)
            warn(f"ignoring {dropped.folder}: {kept.folder} holds the same runs with the method's "
                 f"protocol config ({kept.config})")
            cell = kept
        group.cells[(place.side, place.dataset)] = cell
    ordered = sorted(groups.values(), key=lambda group: (group.protocol, group.key.sort_key()))
    return ordered, ignored
