"""The per-trainer tables: base-to-novel (Base / New / HM per dataset and the Average row),
cross-dataset and domain generalisation (source, targets, target average), few-shot (accuracy per
shot count). Averages cover only the datasets whose runs are complete, and say so when that is
not all of them; unfinished and missing runs are listed under the table."""
from harness import protocols
from harness.tables.logs import LOG_NAME
from harness.tables.metrics import (INCOMPLETE_MARK, PROTOCOL_TITLES, Metric, Row, Table, average_metric,
                                    harmonic_mean, plural, seed_metric)
from harness.tables.published import add_comparison
from harness.tables.runs import sort_datasets

SOURCE_DATASET = protocols.SOURCE_DATASET
BASE2NEW_DATASETS = protocols.B2N_DATASETS
CROSS_DATASET_TARGETS = protocols.XD_TARGETS
DG_TARGETS = protocols.DG_TARGETS
FEW_SHOT_DATASETS = protocols.B2N_DATASETS

SIDE_NAMES = {  # in the notes on missing runs
    "base": protocols.B2N_STEPS["train"],
    "new": protocols.B2N_STEPS["test"],
    "source": "source (ImageNet training)",
    "target": "evaluation",
}


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
                           f"(seeds {', '.join(map(str, expected_seeds))})")
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


def build_tables(groups, comparison=None):
    """All tables for the collected groups, base-to-novel first; ``comparison``: the published
    numbers of ``--compare``."""
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
