"""``--plot FILE.png``: one comparison figure per protocol, from the summaries (``summary.py``).

Base-to-novel (one panel each for Base, New and HM), cross-dataset and domain generalisation: per
dataset, a bar per method (mean over seeds, error bar: population std over seeds), the method's own
published number (results/published.json) as a black diamond where there is one (hollow: published
for another backbone or shot count); hatched bars miss seeds or datasets. Few-shot: a panel per
dataset, accuracy against the shot count, a line per method with the same error bars.

One figure is written to FILE; several to FILE with the protocol as a suffix (``out_base2new.png``,
``out_cross_dataset.png``, ``out_domain_generalization.png``, ``out_few_shot.png``). matplotlib is
optional and imported only here, only for --plot.
"""
import math
import sys
from pathlib import Path

import numpy as np

from harness.tables.logs import ParseError
from harness.tables.metrics import metric_label
from harness.tables.runs import sort_datasets

DPI = 100
BAR_GROUP_WIDTH = 0.8  # of the space of one dataset
PUBLISHED_LABEL = "published (paper)"
HATCH_LABEL = "hatched: not all seeds / datasets"
HOLLOW_LABEL = "hollow: not all seeds / datasets"


def import_pyplot():
    """matplotlib is optional: import it only for --plot."""
    try:
        import matplotlib
    except ImportError as error:
        raise ParseError("--plot needs matplotlib, which is not installed: pip install matplotlib") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot
    return pyplot


def check_plot_path(path):
    """Fail before any work on a path the figures cannot be written to."""
    pyplot = import_pyplot()
    path = Path(path)
    if not path.parent.is_dir():
        raise ParseError(f"--plot {path}: folder {path.parent} does not exist; create it or choose another path")
    formats = pyplot.figure().canvas.get_supported_filetypes()
    pyplot.close("all")
    if path.suffix[1:].lower() not in formats:
        raise ParseError(f"--plot {path}: unknown image type '{path.suffix}'; use one of "
                         + ", ".join(f".{name}" for name in sorted(formats)))


def comparison_figures(summaries):
    """``[(protocol suffix, matplotlib figure)]``: one bar figure per non-few-shot summary, one curve
    figure for all few-shot shot counts."""
    pyplot = import_pyplot()
    figures = [(summary.file_suffix(), bar_figure(pyplot, summary))
               for summary in summaries if summary.protocol != "few_shot"]
    fewshot = [summary for summary in summaries if summary.protocol == "few_shot"]
    if fewshot:
        figures.append(("few_shot", fewshot_figure(pyplot, fewshot)))
    return figures


def figure_paths(path, suffixes):
    """FILE for a single figure, else ``<stem>_<suffix><ext>`` per figure."""
    path = Path(path)
    if len(suffixes) == 1:
        return [path]
    return [path.with_name(f"{path.stem}_{suffix}{path.suffix}") for suffix in suffixes]


def plot_summaries(summaries, path, stream=None):
    """Write the comparison figures; print ``wrote <path>`` per file; return the paths."""
    if not summaries:
        raise ParseError("--plot: no results to plot")
    pyplot = import_pyplot()
    figures = comparison_figures(summaries)
    paths = figure_paths(path, [suffix for suffix, _ in figures])
    for (_, figure), out in zip(figures, paths):
        try:
            figure.savefig(out, dpi=DPI)
        except OSError as error:
            raise ParseError(f"--plot: cannot write {out}: {error}") from error
        finally:
            pyplot.close(figure)
        print(f"wrote {out}", file=stream or sys.stderr)
    return paths


def bar_figure(pyplot, summary):
    """A panel per metric (Base, New, HM; or accuracy); datasets along x, a bar per method."""
    names = summary.metric_names
    groups, methods = len(summary.datasets), len(summary.methods)
    width = min(18.0, max(7.0, 1.5 + groups * (0.22 * methods + 0.3)))
    figure, axes = pyplot.subplots(len(names), 1, figsize=(width, 1.4 + 2.6 * len(names)), sharex=True,
                                   squeeze=False)
    hatched = False
    for axis, name in zip(axes[:, 0], names):
        hatched |= draw_bars(axis, summary, name)
    bottom = axes[-1, 0]
    bottom.set_xticks(np.arange(groups))
    bottom.set_xticklabels([summary.labels[dataset] for dataset in summary.datasets], rotation=30, ha="right")
    figure.suptitle(f"{summary.title()}: mean ± std over seeds", y=1 - 0.1 / figure.get_figheight(),
                    verticalalignment="top")
    add_figure_legend(figure, axes.ravel(), hatched)
    return figure


def draw_bars(axis, summary, name):
    """One bar per (dataset, method); error bars where a std over seeds exists; published markers.
    Returns whether a bar is hatched."""
    hatched = False
    positions = np.arange(len(summary.datasets))
    bar_width = BAR_GROUP_WIDTH / len(summary.methods)
    for index, method in enumerate(summary.methods):
        metrics = [method.metric(dataset, name) for dataset in summary.datasets]
        offsets = positions + (index - (len(summary.methods) - 1) / 2) * bar_width
        bars = axis.bar(offsets, [value_of(metric, "mean") for metric in metrics], bar_width,
                        yerr=[value_of(metric, "std") for metric in metrics], capsize=2, color=f"C{index % 10}",
                        error_kw={"elinewidth": 0.8}, label=method.label)
        for bar, metric in zip(bars, metrics):
            if metric is not None and metric.mean is not None and not metric.complete:
                bar.set_hatch("///")
                hatched = True
        draw_published(axis, offsets, metrics)
    axis.set_ylabel(f"{metric_label(name)} (%)" if name != "acc" else "accuracy (%)")
    axis.set_ylim(0, 105)
    axis.grid(axis="y", linewidth=0.3)
    return hatched


def draw_published(axis, offsets, metrics):
    """Black diamonds at the published numbers; hollow where they are for another setting."""
    for mismatch in (False, True):
        chosen = [(offset, metric.published) for offset, metric in zip(offsets, metrics)
                  if metric is not None and metric.published is not None and metric.published_mismatch == mismatch]
        if chosen:
            xs, ys = zip(*chosen)
            axis.scatter(xs, ys, marker="D", s=18, zorder=3, edgecolors="black",
                         facecolors="none" if mismatch else "black",
                         label=PUBLISHED_LABEL + (" (other backbone / shots)" if mismatch else ""))


def fewshot_figure(pyplot, summaries):
    """A panel per dataset (and the average): accuracy against shots, a line per method."""
    datasets = sort_datasets(dataset for summary in summaries for dataset in summary.datasets[:-1]) + ["average"]
    labels = list(dict.fromkeys(method.label for summary in summaries for method in summary.methods))
    columns = min(4, len(datasets))
    rows = math.ceil(len(datasets) / columns)
    figure, axes = pyplot.subplots(rows, columns, figsize=(3.2 * columns, 0.8 + 2.6 * rows), squeeze=False)
    shots = [summary.shots for summary in summaries]
    for axis, dataset in zip(axes.ravel(), datasets):
        for index, label in enumerate(labels):
            points = [(summary.shots, metric) for summary in summaries for method in summary.methods
                      if method.label == label and (metric := method.metric(dataset, "acc")) is not None
                      and metric.mean is not None]
            if points:
                axis.errorbar([shot for shot, _ in points], [metric.mean for _, metric in points],
                              yerr=[value_of(metric, "std") for _, metric in points], marker="o", markersize=3,
                              capsize=2, linewidth=1, color=f"C{index % 10}", label=label)
                partial = [(shot, metric.mean) for shot, metric in points if not metric.complete]
                if partial:
                    axis.scatter(*zip(*partial), s=14, zorder=3, facecolors="white", edgecolors=f"C{index % 10}",
                                 label=HOLLOW_LABEL)
        axis.set_xscale("log", base=2)
        axis.set_xticks(shots)
        axis.set_xticklabels([str(count) for count in shots])
        axis.set_title(next(summary.labels[dataset] for summary in summaries if dataset in summary.labels),
                       fontsize="medium")
        axis.grid(linewidth=0.3)
    for axis in axes.ravel()[len(datasets):]:
        axis.set_visible(False)
    for axis in axes[:, 0]:
        axis.set_ylabel("accuracy (%)")
    figure.suptitle("Few-shot: accuracy against training images per class, mean ± std over seeds",
                    y=1 - 0.1 / figure.get_figheight(), verticalalignment="top")
    add_figure_legend(figure, axes.ravel())
    return figure


def add_figure_legend(figure, axes, hatched=False):
    """The title and one legend (each label once) in a band of fixed height above the panels."""
    entries = {}
    for axis in axes:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if hatched:
        from matplotlib.patches import Patch
        entries[HATCH_LABEL] = Patch(facecolor="white", edgecolor="black", hatch="///")
    height = figure.get_figheight()
    figure.legend(list(entries.values()), list(entries), loc="upper center", ncol=min(5, len(entries)),
                  fontsize="small", bbox_to_anchor=(0.5, 1 - 0.4 / height), frameon=False)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.45 / height))  # tight_layout also leaves room for the title


def value_of(metric, attribute):
    """``metric.mean`` / ``metric.std`` as a float, NaN when absent (matplotlib draws nothing)."""
    if metric is None or metric.mean is None:
        return float("nan")
    value = getattr(metric, attribute)
    return float("nan") if value is None else value
