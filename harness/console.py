"""What a run shows on the console, and progress reports.

``train.py`` tees stdout into ``log.txt`` (``dassl.utils.setup_logger``). The log keeps every
line; the console shows a short header, warnings, progress and results:

- ``log_only()``: inside it, printed lines go to the log only, except lines that begin with
  ``WARNING``, ``Note`` or ``progress`` (they reach the console too). Without a log tee (upstream
  Dassl, or no log set up yet) it changes nothing, so no line is ever lost.
- ``Progress``: a tqdm bar on an interactive terminal; otherwise, and in the log in any case, a
  line ``progress: DESC done/total UNIT (pct%), ..., rate, eta`` at most every 30 seconds. These
  lines begin with ``progress:``, so log parsers (which read ``epoch [``, ``Finish training``,
  ``=> result`` and ``* accuracy:``) never mistake them for results.
"""
import contextlib
import datetime
import sys
import time

__all__ = ["log_only", "to_log", "interactive", "Progress", "PROGRESS_INTERVAL"]

PROGRESS_INTERVAL = 30.0  # seconds between two progress lines


@contextlib.contextmanager
def log_only():
    """Send what is printed inside to the log file only (see the module docstring)."""
    mute = getattr(sys.stdout, "mute_console", None)
    if mute is None:
        yield
        return
    with mute():
        yield


def to_log(line):
    """Write one line to the log file only; nothing when stdout is not teed into a log."""
    write = getattr(sys.stdout, "write_file_only", None)
    if write is not None:
        write(line + "\n")


def interactive():
    """True when progress bars can be drawn: stderr (where tqdm draws) is a terminal."""
    return sys.stderr.isatty()


def _duration(seconds):
    return str(datetime.timedelta(seconds=int(round(seconds))))


class Progress:
    """Progress of a loop over ``total`` units (images, batches).

    ``update(n, note)`` after each step; ``note`` (e.g. the epoch and loss) is shown with the
    counts. ``close()`` at the end. ``bar``: draw a tqdm bar (default: on a terminal); ``clock``
    and ``interval`` exist for tests.
    """

    def __init__(self, total, desc, unit="it", bar=None, interval=None, clock=time.monotonic):
        self.total = total
        self.desc = desc
        self.unit = unit
        self.interval = PROGRESS_INTERVAL if interval is None else interval
        self.clock = clock
        self.start = self.last_line = clock()
        self.done = 0
        self.bar = None
        if interactive() if bar is None else bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=f" {unit}", leave=False, file=sys.stderr, dynamic_ncols=True)

    def update(self, n=1, note=""):
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            if note:
                self.bar.set_postfix_str(note, refresh=False)
        now = self.clock()
        if now - self.last_line >= self.interval:
            self.last_line = now
            line = self.line(now, note)
            if self.bar is not None:
                to_log(line)  # the console has the bar
            else:
                print(line, flush=True)

    def line(self, now, note=""):
        """``progress: eval test 1,200/50,000 images (2%), 410.3 images/s, eta 0:01:59``."""
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        eta = _duration((self.total - self.done) / rate) if rate > 0 and self.total else "?"
        note = f", {note}" if note else ""
        return (f"progress: {self.desc} {self.done:,}/{self.total:,} {self.unit}{pct}{note}, "
                f"{rate:.1f} {self.unit}/s, elapsed {_duration(elapsed)}, eta {eta}")

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
