"""The results tables of ``parse_test_res.py --table`` (and of ``scripts/benchmark.py run``).

Modules, in the order the data flows: ``logs`` (the accuracy one ``log.txt`` reports), ``runs``
(the run folders below an output root, placed by ``harness/protocols.py``'s layout), ``metrics``
(means over seeds, HM, rounding), ``published`` (``results/published.json`` and ``--compare``),
``build`` (the base-to-novel, cross-dataset, domain-generalisation and few-shot tables),
``summary`` (``--summary``: the methods side by side per protocol), ``render`` (text, Markdown,
CSV) and ``plot`` (``--plot``: a comparison figure per protocol).
"""
from harness import protocols
from harness.tables.build import BASE2NEW_DATASETS, CROSS_DATASET_TARGETS, DG_TARGETS, build_tables
from harness.tables.logs import NothingFoundError, ParseError, warn
from harness.tables.metrics import harmonic_mean, round_half_up
from harness.tables.plot import check_plot_path, comparison_figures, plot_summaries
from harness.tables.published import PUBLISHED_FILE, find_method, load_published, own_comparison
from harness.tables.render import CSV_COLUMNS, SUMMARY_CSV_COLUMNS, format_number, render_summaries, render_tables
from harness.tables.runs import GroupKey, collect_groups
from harness.tables.summary import build_summaries

__all__ = ["BASE2NEW_DATASETS", "CROSS_DATASET_TARGETS", "CSV_COLUMNS", "DG_TARGETS", "GroupKey", "NothingFoundError",
           "PUBLISHED_FILE", "ParseError", "SUMMARY_CSV_COLUMNS", "build_summaries", "build_tables", "check_plot_path",
           "collect_groups", "comparison_figures", "find_method", "format_number", "harmonic_mean", "load_published",
           "own_comparison", "plot_summaries", "render_summaries", "render_tables", "round_half_up", "summary_report",
           "table_report"]


def table_report(root, fmt="text", show_std=False, compare=None, keyword="accuracy",
                 published_path=PUBLISHED_FILE, plot_path=None, trainers=None, layouts=None, summary=False):
    """The tables of the runs under ROOT as a string (writes the plot if asked). ``compare``: a
    method of the published-numbers file; ``trainers`` and ``layouts``: only their tables (see
    ``collect_groups``); ``summary``: the methods side by side instead of a table per trainer."""
    if summary and compare:
        raise ParseError("--compare adds one method's published numbers to the per-trainer tables; it cannot be "
                         "used with --summary (--plot marks each method's own published numbers)")
    published = load_published(published_path) if compare or plot_path else None
    comparison = find_method(published, compare) if compare else None
    if plot_path:
        check_plot_path(plot_path)
    groups, ignored = collect_groups(root, keyword, trainers, layouts)
    for folder in ignored:
        warn(f"ignoring {folder}: not in a known output layout")
    if not groups:
        raise NothingFoundError(f"Nothing found in {root}: expected {protocols.layout_description()}")
    if plot_path:
        plot_summaries(summary_report(groups, published), plot_path)
    if summary:
        return render_summaries(summary_report(groups), fmt, show_std)
    return render_tables(build_tables(groups, comparison), fmt, show_std, comparison)


def summary_report(groups, published=None):
    """The summaries of the collected groups; with ``published`` (``load_published``), each method's
    metrics carry its own published numbers (``own_comparison``)."""
    tables = []
    for group in groups:
        own = own_comparison(published, group.key.trainer) if published else None
        tables += build_tables([group], own)
    return build_summaries(tables)
