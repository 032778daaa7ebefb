"""``--plot``: base-to-novel bars (with the published numbers of ``--compare`` as markers) and
few-shot curves, one panel per table. matplotlib is optional and imported only here."""
import numpy as np

from harness.tables.logs import ParseError
from harness.tables.metrics import METRIC_LABELS, metric_label


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
