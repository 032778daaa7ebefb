"""Running train.py in-process from tests, with stdout restored afterwards."""
import sys

import train


def run_train(argv):
    """``train.main`` on ``argv``; returns the trainer. The log tee is closed and stdout restored."""
    saved = sys.stdout
    try:
        return train.main(train.build_parser().parse_args(argv))
    finally:
        if sys.stdout is not saved:
            sys.stdout.close()
            sys.stdout = saved


def read(path):
    with open(path) as f:
        return f.read()
