"""The tables as text: aligned plain text, GitHub Markdown, or CSV (one line per number).

Numbers are rounded half up to two decimals (``metrics.round_half_up``); a missing number is ``--``,
an average over fewer datasets than the protocol's is ``Average*`` with a footnote.
"""
import csv
import io

from harness.tables.metrics import (INCOMPLETE_MARK, METRIC_LABELS, MISMATCH_MARK, MISSING, UNVERIFIED_MARK, metric_label,
                                    round_half_up)
from harness.tables.summary import column_legend


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


def table_legend(table, show_std, comparison):
    """The footnote explaining a per-trainer table's columns."""
    parts = ["n: seeds averaged for the number on its left (k/N: only k of the N seeds found finished)"]
    if "hm" in table.metric_names:
        parts.append("HM = 2·Base·New / (Base + New)")
    if show_std:
        parts.append("±: population std over seeds")
    if comparison:
        parts.append(f"({comparison.method}): its published number; Δ: ours − published")
    return "; ".join(parts)


def table_footnotes(table, comparison, show_std=False):
    """Notes under a table: the column legend, the table's notes, the unverified-number legend when needed."""
    notes = [table_legend(table, show_std, comparison)] + list(table.notes)
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
        lines += table_footnotes(table, comparison if table.comparable else None, show_std)
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
        notes = table_footnotes(table, comparison if table.comparable else None, show_std)
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


def csv_text(columns, records):
    """CSV with a header line, one line per record (a dict of the columns)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def render_csv(tables, comparison=None):
    """One CSV line per (table, dataset, metric); numbers rounded to 2 decimals."""
    return csv_text(CSV_COLUMNS, (csv_record(table, row, metric, comparison if table.comparable else None)
                                  for table in tables for row in table.rows for metric in row.metrics))


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
        **metric_fields(metric),
        "published_method": comparison.method if comparison else "",
        "published": "" if metric.published is None else f"{metric.published:.2f}",
        "published_unverified": int(metric.published_unverified) if metric.published is not None else "",
        "published_setting_mismatch": int(metric.published_mismatch) if metric.published is not None else "",
        "diff": "" if difference is None else str(difference),
    }


def metric_fields(metric):
    """Mean, std, seed counts and completeness of a metric as CSV fields."""
    return {
        "mean": "" if metric.mean is None else format_number(metric.mean),
        "std": "" if metric.std is None or metric.mean is None else format_number(metric.std),
        "seeds": "" if metric.seeds is None else metric.seeds,
        "expected_seeds": "" if metric.expected is None else metric.expected,
        "complete": int(metric.complete),
    }


def render_tables(tables, fmt="text", show_std=False, comparison=None):
    """Render tables in the requested format."""
    if fmt == "csv":
        return render_csv(tables, comparison)
    if fmt == "markdown":
        return render_markdown(tables, show_std, comparison)
    return render_text(tables, show_std, comparison)


# ---------------------------------------------------------------------------
# --summary: the methods side by side (harness/tables/summary.py)
# ---------------------------------------------------------------------------

def summary_value(metric, average, show_std):
    """``77.31``, ``77.31 (2/3)`` when some seeds did not finish, ``77.31*`` for an incomplete average."""
    if metric is None or metric.mean is None:
        return MISSING
    text = format_value(metric, show_std)
    if metric.seeds is not None and metric.seeds != metric.expected:
        text += f" ({metric.seeds}/{metric.expected})"
    if average and metric.partial:
        text += INCOMPLETE_MARK
    return text


def summary_display_rows(summary, show_std):
    """Display strings: the row label, then each method's metrics in the header's order."""
    return [[summary.labels[dataset]] + [summary_value(method.metric(dataset, name), dataset == "average", show_std)
                                         for method in summary.methods for name in summary.metric_names]
            for dataset in summary.datasets]


def summary_footnotes(summary, show_std):
    return column_legend(summary, show_std) + summary.notes


def render_summary_text(summary, show_std):
    """Aligned text; base-to-novel has a second header line naming each method's column group."""
    rows = summary_display_rows(summary, show_std)
    several = len(summary.metric_names) > 1
    header = ["Dataset"] + ([metric_label(name) for _ in summary.methods for name in summary.metric_names]
                            if several else [method.label for method in summary.methods])
    widths = [max(len(line[column]) for line in [header] + rows) for column in range(len(header))]
    lines = [summary.title()]
    if several:
        size = len(summary.metric_names)
        for index, method in enumerate(summary.methods):
            first = 1 + index * size
            span = sum(widths[first:first + size]) + 2 * (size - 1)
            widths[first] += max(0, len(method.label) - span)  # a long method name widens its first column
        spans = [sum(widths[1 + i * size:1 + (i + 1) * size]) + 2 * (size - 1) for i in range(len(summary.methods))]
        lines.append("  ".join([" " * widths[0]] + [method.label.center(span)
                                                    for method, span in zip(summary.methods, spans)]).rstrip())
    lines += [align(header, widths), align(["-" * width for width in widths], widths)]
    lines += [align(cells, widths) for cells in rows]
    return "\n".join(lines + summary_footnotes(summary, show_std))


def render_summary_markdown(summary, show_std):
    """One Markdown table; base-to-novel headers read ``Base (method)``."""
    several = len(summary.metric_names) > 1
    header = ["Dataset"] + [f"{metric_label(name)} ({method.label})" if several else method.label
                            for method in summary.methods for name in summary.metric_names]
    lines = [f"### {summary.title()}", "", markdown_row(header),
             "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += [markdown_row(cells) for cells in summary_display_rows(summary, show_std)]
    lines += [""] + [markdown_note(note) for note in summary_footnotes(summary, show_std)]
    return "\n".join(lines)


SUMMARY_CSV_COLUMNS = ("protocol", "shots", "dataset", "method", "trainer", "config", "metric", "mean", "std",
                       "seeds", "expected_seeds", "complete")


def render_summary_csv(summaries):
    """Tidy long format: one line per (protocol, shots, dataset, method, metric)."""
    return csv_text(SUMMARY_CSV_COLUMNS, (
        {"protocol": summary.protocol, "shots": "" if summary.shots is None else summary.shots, "dataset": dataset,
         "method": method.label, "trainer": method.trainer, "config": method.config, "metric": name,
         **metric_fields(metric)}
        for summary in summaries for dataset in summary.datasets for method in summary.methods
        for name in summary.metric_names if (metric := method.metric(dataset, name)) is not None))


def render_summaries(summaries, fmt="text", show_std=False):
    """Render the summaries in the requested format."""
    if fmt == "csv":
        return render_summary_csv(summaries)
    render = render_summary_markdown if fmt == "markdown" else render_summary_text
    return "\n\n".join(render(summary, show_std) for summary in summaries) + "\n"
