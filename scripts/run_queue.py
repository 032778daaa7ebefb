"""Run queued train.py command lines in this one process (the imports are paid once).

    RUN_QUEUE=queue.txt bash scripts/mma/base2new_train.sh caltech101 1   # queues instead of running
    python scripts/run_queue.py queue.txt [--label TEXT] [--console FILE]

Each line is a shell-quoted ``train.py ARGS...`` command as scripts/common.sh writes it. Runs go in
order; each writes its own log.txt as usual. One progress line per run goes to stderr; the runs'
console output goes to ``--console`` (default: stdout). The first failing run stops the queue.
"""
import argparse
import os
import shlex
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import train  # noqa: E402


def read_queue(path):
    with open(path) as f:
        commands = [shlex.split(line) for line in f if line.strip()]
    for argv in commands:
        if not argv[0].endswith("train.py"):
            raise SystemExit(f"{path}: not a train.py command line: {shlex.join(argv)}")
    return [argv[1:] for argv in commands]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("queue")
    parser.add_argument("--label", default="", help="prefix of the progress lines")
    parser.add_argument("--console", default="", help="file for the runs' console output (appended)")
    args = parser.parse_args()
    runs = read_queue(args.queue)
    console = open(args.console, "a") if args.console else None
    for i, argv in enumerate(runs, 1):
        out = argv[argv.index("--output-dir") + 1] if "--output-dir" in argv else "?"
        shown = os.path.relpath(out) if not os.path.relpath(out).startswith("..") else out
        start = time.time()
        saved_out, saved_err = sys.stdout, sys.stderr
        if console is not None:  # the runs' prints and warnings; progress stays on the terminal
            sys.stdout = sys.stderr = console
        try:
            train.run(argv)
        except BaseException:
            if console is not None:
                traceback.print_exc()
            sys.stdout, sys.stderr = saved_out, saved_err
            print(f"{args.label}[{i}/{len(runs)}] FAILED: {shown} (see {args.console or 'above'})", file=sys.stderr)
            sys.exit(1)
        finally:
            sys.stdout, sys.stderr = saved_out, saved_err
        print(f"{args.label}[{i}/{len(runs)}] {shown} ({time.time() - start:.0f} s)", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
