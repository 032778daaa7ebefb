"""Tee stdout into ``log.txt`` without ever overwriting an older log."""
import contextlib
import os
import os.path as osp
import sys
import time

from .tools import mkdir_if_missing

__all__ = ["Logger", "setup_logger"]


class Logger:
    """Writes everything to the console stream and to a file; ``flush`` also fsyncs.

    While ``mute_console()`` is active, lines reach the file only, except lines beginning with one
    of ``CONSOLE_PREFIXES`` (warnings, notes, progress), which reach both.
    """

    CONSOLE_PREFIXES = ("WARNING", "Note", "progress")

    def __init__(self, fpath=None, console=None):
        self.console = console if console is not None else sys.stdout
        self.file = None
        self.fpath = fpath
        self._muted = 0
        self._at_line_start = True
        self._line_to_console = True
        if fpath is not None:
            mkdir_if_missing(osp.dirname(osp.abspath(fpath)))
            self.file = open(fpath, "x")  # "x": refuse to clobber, see setup_logger

    def __del__(self):
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *args):
        self.close()

    def write(self, msg):
        for piece in msg.splitlines(keepends=True):
            if self._at_line_start:  # a line goes to the console or not as a whole
                self._line_to_console = not self._muted or piece.startswith(self.CONSOLE_PREFIXES)
            if self._line_to_console:
                self.console.write(piece)
            self._at_line_start = piece.endswith("\n")
        self.write_file_only(msg)

    def write_file_only(self, msg):
        if self.file is not None:
            self.file.write(msg)
            if "\n" in msg:  # every finished line reaches the OS: a killed run keeps its log
                self.file.flush()

    @contextlib.contextmanager
    def mute_console(self):
        """Inside: what is written goes to the file only (see the class docstring)."""
        self._muted += 1
        try:
            yield
        finally:
            self._muted -= 1

    def flush(self):
        self.console.flush()
        if self.file is not None:
            self.file.flush()
            os.fsync(self.file.fileno())

    def isatty(self):
        return False  # keeps progress bars (tqdm) off the teed stream

    def close(self):
        if getattr(self, "file", None) is not None:
            self.file.close()
            self.file = None


def _unused_log_path(fpath):
    """``fpath`` if free, else ``fpath-YYYY-MM-DD-HH-MM-SS`` (with a counter if that is taken too)."""
    if not osp.exists(fpath):
        return fpath
    stamped = fpath + time.strftime("-%Y-%m-%d-%H-%M-%S")
    candidate, n = stamped, 1
    while osp.exists(candidate):
        candidate = f"{stamped}-{n}"
        n += 1
    return candidate


def setup_logger(output=None):
    """Send stdout to the console and to ``output/log.txt`` (or ``output`` if it ends in .txt/.log)."""
    if output is None:
        return None
    if output.endswith(".txt") or output.endswith(".log"):
        fpath = output
    else:
        fpath = osp.join(output, "log.txt")
    fpath = _unused_log_path(fpath)
    console = sys.stdout.console if isinstance(sys.stdout, Logger) else sys.stdout
    if isinstance(sys.stdout, Logger):
        sys.stdout.close()
    sys.stdout = Logger(fpath, console=console)
    return fpath
