"""The tables as text: aligned plain text, GitHub Markdown, or CSV (one line per number).

Numbers are rounded half up to two decimals (``metrics.round_half_up``); a missing number is ``--``,
an average over fewer datasets than the protocol's is ``Average*`` with a footnote.
"""
import csv
import io

from harness.tables.metrics import METRIC_LABELS, MISMATCH_MARK, MISSING, UNVERIFIED_MARK, metric_label, round_half_up


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
