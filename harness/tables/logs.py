"""Reading one Dassl ``log.txt``: the accuracy a run reports after its end signal.

Shared by the CoOp-compatible per-folder mode (``parse_test_res.py``) and the tables. Only exact
result lines count (``* accuracy: 91.8%`` on a line of its own); values that are not finite
percentages in [0, 100] are rejected with a warning naming the file.
"""
import re
import sys
from dataclasses import dataclass

LOG_NAME = "log.txt"
TRAIN_END_SIGNALS = ("Finish training", "Finished training")  # Dassl < 0.6.1 printed the latter
TEST_END_SIGNALS = ("=> result",)


class ParseError(Exception):
    """A problem that ends the command with a one-line message."""


class NothingFoundError(ParseError, AssertionError):
    """No accuracy was found in a folder (upstream raised a bare AssertionError)."""


WARNINGS = []  # this invocation's warnings, also written to the per-folder summary file


def warn(message):
    """Print a warning line on stderr (and keep it for the summary file)."""
    WARNINGS.append(f"warning: {message}")
    print(f"warning: {message}", file=sys.stderr)


def accuracy_regex(keyword):
    """A whole evaluator line such as ``* accuracy: 91.8%`` (the value is checked separately)."""
    return re.compile(rf"^\* {re.escape(keyword)}: (\S+)%$")


PERCENTAGE = re.compile(r"^\d+(\.\d+)?$")


@dataclass
class LogScan:
    """What a log says: whether the end signal appeared, and the value after it."""

    signal_seen: bool
    value: float | None


def scan_log(log_path, end_signals, keyword="accuracy"):
    """Find the last valid ``* keyword: X%`` line at or after the first end-signal line.

    A result line whose value is not a plain percentage in [0, 100] is ignored with a warning.
    """
    pattern = accuracy_regex(keyword)
    signal_seen = False
    value = None
    with open(log_path, encoding="utf-8", errors="replace") as log_file:
        for raw_line in log_file:
            line = raw_line.strip()
            if line in end_signals:
                signal_seen = True
            if not signal_seen:
                continue
            match = pattern.match(line)
            if match:
                value = checked_percentage(match.group(1), log_path, line, value)
    return LogScan(signal_seen, value)


def checked_percentage(text, log_path, line, fallback):
    """The value of a result line, or ``fallback`` (with a warning) if it is not a percentage."""
    if PERCENTAGE.match(text) and 0.0 <= float(text) <= 100.0:
        return float(text)
    warn(f"ignoring '{line}' in {log_path}: not a percentage in [0, 100]")
    return fallback


def read_accuracy(log_path, end_signals=TRAIN_END_SIGNALS, keyword="accuracy"):
    """Return the accuracy a log reports after its end signal, or None."""
    return scan_log(log_path, end_signals, keyword).value


def log_problem(scan, end_signals, keyword):
    """Why a scanned log has no value (None when it has one)."""
    if not scan.signal_seen:
        return f"no '{end_signals[0]}' line"
    if scan.value is None:
        return f"no '* {keyword}:' line after '{end_signals[0]}'"
    return None
