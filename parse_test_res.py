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

    python parse_test_res.py ROOT --table [--summary] [--format text|markdown|csv] [--std]
                                          [--compare METHOD] [--plot FILE.png]

walks ROOT for the output layout of harness/protocols.py and prints (harness/tables/), per trainer /
config / shots: base-to-novel Base, New and HM per dataset with an Average row; cross-dataset transfer
(ImageNet source, 10 targets, target average); domain generalisation (source, 4 ImageNet
variants, target average); few-shot accuracy per shot count and dataset with the 11-dataset
average. A method's per-dataset configs (e.g. its
ImageNet config) are reported in the table of its main config. Only finished runs count
(``finished.json``, see harness/run.py; or, for folders written without a run record, a log with
its final result); unfinished, stale or missing runs are marked ``--`` and listed.

``--summary`` puts the methods side by side instead: one table per protocol (few-shot: per shot
count), rows = datasets and the average, a column group per trainer / config. ``--plot FILE.png``
writes one comparison figure per protocol (bars with error bars over seeds, published numbers as
markers; few-shot: accuracy against shots), to FILE, or with several protocols to
``FILE_<protocol>.png``, and prints ``wrote <path>`` for each.
"""

import argparse
import os
import sys

import numpy as np

from harness import tables
from harness.tables.logs import (LOG_NAME, TEST_END_SIGNALS, TRAIN_END_SIGNALS, WARNINGS, NothingFoundError,
                                 ParseError, log_problem, read_accuracy, scan_log, warn)

__all__ = ["LOG_NAME", "TEST_END_SIGNALS", "TRAIN_END_SIGNALS", "NothingFoundError", "ParseError", "main",
           "read_accuracy", "upstream_report"]

PARSE_FILE_NAME = ".parse.txt"


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
# Table mode (harness/tables/)
# ---------------------------------------------------------------------------

def run_table_mode(args):
    sys.stdout.write(tables.table_report(args.directory, args.format, args.std, args.compare,
                                         args.keyword, args.published, args.plot, summary=args.summary))


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
    table.add_argument("--summary", action="store_true",
                       help="one table per protocol with the methods side by side (rows: datasets)")
    table.add_argument("--format", choices=("text", "markdown", "csv"), default="text")
    table.add_argument("--std", action="store_true", help="show ± population std over seeds")
    table.add_argument("--compare", metavar="METHOD", help="add published numbers and ours - published")
    table.add_argument("--plot", metavar="FILE.png",
                       help="one comparison figure per protocol (FILE_<protocol>.png when several; "
                            "needs matplotlib)")
    table.add_argument("--published", default=str(tables.PUBLISHED_FILE), help="published-numbers JSON file")
    return parser


def check_mode_options(parser, args):
    """Reject options that do not belong to the chosen mode."""
    if args.table:
        wrong = [name for name, used in (("--ci95", args.ci95), ("--test-log", args.test_log),
                                         ("--multi-exp", args.multi_exp)) if used]
        if wrong:
            parser.error(f"{', '.join(wrong)} cannot be used with --table")
        if args.summary and args.compare:
            parser.error("--compare cannot be used with --summary (use it on the per-trainer tables)")
    else:
        used = [name for name, value in (("--summary", args.summary), ("--format", args.format != "text"),
                                         ("--std", args.std),
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
