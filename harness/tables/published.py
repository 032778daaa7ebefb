"""Published numbers (``results/published.json``) and how a table is compared with them."""
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness import protocols
from harness.tables.logs import ParseError
from harness.tables.metrics import MISMATCH_MARK, harmonic_mean, plural, round_half_up

PUBLISHED_FILE = Path(__file__).resolve().parents[2] / "results" / "published.json"

# What the published numbers are, unless published.json says otherwise (its "setting").
DEFAULT_PUBLISHED_SETTING = {"backbone": "ViT-B/16", "shots": 16}

# The datasets a published average is over, per table protocol.
CANONICAL_DATASETS = {
    "base2new": protocols.B2N_DATASETS,
    "cross_dataset": protocols.XD_TARGETS,
    "domain_generalization": protocols.DG_TARGETS,
}


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


def own_comparison(published, trainer):
    """A trainer's own published numbers: its ``published`` name in harness/protocols.py METHODS (zero-shot
    CLIP's are CLIP's), else its trainer name; None when the file has none."""
    entry = protocols.METHODS.get(trainer)
    try:
        return find_method(published, (entry.published if entry and entry.published else trainer))
    except ParseError:
        return None


def attach_published(row, entry):
    """Copy published values for a row from a published-numbers entry."""
    if not entry:
        return
    unverified = bool(entry.get("unverified", False))
    for metric in row.metrics:
        if entry.get(metric.name) is not None:
            metric.published = entry[metric.name]
            metric.published_unverified = unverified


def add_comparison(table, comparison, protocol, included=None, group=None):
    """Attach the published numbers of ``comparison`` and their notes.

    The Average row is compared with the published average over exactly the datasets it averages
    (``included``); published numbers from another setting (backbone, shots) are marked.
    """
    if comparison is None:
        return
    covered = [row.dataset for row in included] if included is not None else None
    for row in table.rows:
        if row.dataset == "average" and covered is not None and set(covered) != set(CANONICAL_DATASETS[protocol]):
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
                           + (f" (its {len(protocols.B2N_DATASETS) if protocol == 'base2new' else 'full'}-dataset "
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
