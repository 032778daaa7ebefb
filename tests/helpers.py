"""Running train.py in-process from tests, building toy trainers, and reading what the protocol
scripts would run."""
import contextlib
import io
import os.path as osp
import shlex
import subprocess

import train
from dassl.engine import build_trainer
from dassl.utils import set_random_seed

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def run_train(argv):
    """``train.main`` on ``argv``; returns the trainer. The log tee is closed and stdout restored."""
    return train.run(argv)


def build_toy_trainer(argv, seed=1, quiet=True):
    """The trainer of the ``train.py`` arguments ``argv``, configured and seeded as a run is, not
    trained. Returns (trainer, what building it printed); ``quiet=False`` lets the output through."""
    cfg = train.setup_cfg(train.build_parser().parse_args([str(a) for a in argv]))
    set_random_seed(seed)
    out = io.StringIO()
    with contextlib.redirect_stdout(out) if quiet else contextlib.nullcontext():
        trainer = build_trainer(cfg)
    return trainer, out.getvalue()


def read(path):
    with open(path) as f:
        return f.read()


def script_runs(script, *args, env, timeout=120):
    """The ``train.py`` argument lists ``scripts/<script> ARGS`` would run, in order (``DRY_RUN=1``)."""
    proc = subprocess.run(["bash", osp.join(REPO, "scripts", script), *map(str, args)],
                          env=dict(env, DRY_RUN="1"), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    commands = [shlex.split(line) for line in proc.stdout.splitlines() if "train.py" in line]
    return [argv[argv.index(osp.join(REPO, "train.py")) + 1:] for argv in commands]
