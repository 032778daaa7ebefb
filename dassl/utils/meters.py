"""Running averages for the training log.

A meter takes floats or tensors. Tensors (e.g. a step's loss on the GPU) are kept as they are and
read only when a statistic is asked for, all pending ones with one host-device transfer, so a
training loop that prints every N steps waits for the device every N steps instead of at every
step. The statistics are exactly those of reading each value at its update (``.item()``).
"""
from collections import defaultdict

import torch

__all__ = ["AverageMeter", "MetricMeter"]


def _as_floats(values):
    """Python floats of ``values`` (floats, ints or one-element tensors), one transfer per device."""
    floats = list(values)
    by_device = defaultdict(list)
    for i, v in enumerate(floats):
        if isinstance(v, torch.Tensor):
            by_device[v.device].append(i)
    for rows in by_device.values():
        # float64 holds every fp32/bf16/fp16 value exactly, so tolist() equals .item() of each.
        stacked = torch.stack([floats[i].reshape(()).to(torch.float64) for i in rows])
        for i, f in zip(rows, stacked.tolist()):
            floats[i] = f
    return floats


def _settle(meters):
    """Fold the pending values of ``meters`` into their statistics, reading all of them at once."""
    pending = [(m, n) for m in meters for _, n in m._pending]
    floats = _as_floats(v for m in meters for v, _ in m._pending)
    for m in meters:
        m._pending = []
    for (m, n), val in zip(pending, floats):
        m._apply(val, n)


class AverageMeter:
    """Current value, sum, count and average (or exponential moving average with ``ema``).

    ``history`` lists the average after each update (read by the engine to write deferred scalars).
    """

    def __init__(self, ema=False):
        self.ema = ema
        self.reset()

    def reset(self):
        self._val = 0
        self._avg = 0
        self._sum = 0
        self._count = 0
        self._pending = []  # (value, n) not yet folded into the statistics
        self.history = []

    def update(self, val, n=1):
        self._pending.append((val.detach() if isinstance(val, torch.Tensor) else val, n))

    def _apply(self, val, n):
        self._val = val
        self._sum += val * n
        self._count += n
        if self.ema:
            self._avg = self._avg * 0.9 + self._val * 0.1
        else:
            self._avg = self._sum / self._count
        self.history.append(self._avg)

    def _settle(self):
        if self._pending:
            _settle([self])

    @property
    def val(self):
        self._settle()
        return self._val

    @property
    def avg(self):
        self._settle()
        return self._avg

    @property
    def sum(self):
        self._settle()
        return self._sum

    @property
    def count(self):
        return self._count + sum(n for _, n in self._pending)

    @property
    def updates(self):
        """Number of ``update`` calls since the last reset (known without reading any value)."""
        return len(self.history) + len(self._pending)


class MetricMeter:
    """A dict of AverageMeters, printed as ``name val (avg)`` per metric."""

    def __init__(self, delimiter=" "):
        self.meters = defaultdict(AverageMeter)
        self.delimiter = delimiter

    def update(self, input_dict):
        if input_dict is None:
            return
        if not isinstance(input_dict, dict):
            raise TypeError("Input to MetricMeter.update() must be a dictionary")
        for k, v in input_dict.items():
            self.meters[k].update(v)

    def settle(self):
        """Read every pending value of every meter (one transfer per device)."""
        _settle(list(self.meters.values()))

    def __str__(self):
        self.settle()
        return self.delimiter.join(f"{name} {m.val:.4f} ({m.avg:.4f})" for name, m in self.meters.items())
