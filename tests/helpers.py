"""Running train.py in-process from tests, and reading what the protocol scripts would run."""
import os.path as osp
import shlex
import subprocess

import train

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def run_train(argv):
    """``train.main`` on ``argv``; returns the trainer. The log tee is closed and stdout restored."""
    return train.run(argv)


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
