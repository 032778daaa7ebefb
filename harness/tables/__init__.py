"""The results tables of ``parse_test_res.py --table`` (and of ``scripts/benchmark.py run``).

Modules, in the order the data flows: ``logs`` (the accuracy one ``log.txt`` reports), ``runs``
(the run folders below an output root, placed by ``harness/protocols.py``'s layout), ``metrics``
(means over seeds, HM, rounding), ``published`` (``results/published.json`` and ``--compare``),
``build`` (the base-to-novel, cross-dataset, domain-generalisation and few-shot tables),
``render`` (text, Markdown, CSV) and ``plot`` (``--plot``).
"""
from harness import protocols
from harness.tables.build import BASE2NEW_DATASETS, CROSS_DATASET_TARGETS, DG_TARGETS, build_tables
from harness.tables.logs import NothingFoundError, ParseError, warn
from harness.tables.metrics import harmonic_mean, round_half_up
from harness.tables.plot import plot_tables
from harness.tables.published import PUBLISHED_FILE, find_method, load_published, own_comparison
from harness.tables.render import CSV_COLUMNS, format_number, render_tables
from harness.tables.runs import GroupKey, collect_groups

__all__ = ["BASE2NEW_DATASETS", "CROSS_DATASET_TARGETS", "CSV_COLUMNS", "DG_TARGETS", "GroupKey", "NothingFoundError",
           "PUBLISHED_FILE", "ParseError", "build_tables", "collect_groups", "find_method", "format_number",
           "harmonic_mean", "load_published", "own_comparison", "render_tables", "round_half_up", "table_report"]


def table_report(root, fmt="text", show_std=False, compare=None, keyword="accuracy",
                 published_path=PUBLISHED_FILE, plot_path=None, trainers=None, layouts=None):
    """The tables of the runs under ROOT as a string (writes the plot if asked). ``compare``: a
    method of the published-numbers file; ``trainers`` and ``layouts``: only their tables (see
    ``collect_groups``)."""
    comparison = find_method(load_published(published_path), compare) if compare else None
    groups, ignored = collect_groups(root, keyword, trainers, layouts)
    for folder in ignored:
        warn(f"ignoring {folder}: not in a known output layout")
    if not groups:
        raise NothingFoundError(f"Nothing found in {root}: expected {protocols.layout_description()}")
    tables = build_tables(groups, comparison)
    if plot_path:
        plot_tables(tables, plot_path, comparison)
    return render_tables(tables, fmt, show_std, comparison)
