"""Running train.py in-process from tests."""
import train


def run_train(argv):
    """``train.main`` on ``argv``; returns the trainer. The log tee is closed and stdout restored."""
    return train.run(argv)


def read(path):
    with open(path) as f:
        return f.read()
