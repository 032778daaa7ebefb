"""Time one training step (or test batch) of two checkouts side by side, alternating, on a shared machine.

    git worktree add --detach /tmp/base $(git merge-base HEAD main)
    python bench/compare.py --before /tmp/base --trainer MMRL --rounds 6 --prec fp32

Each checkout gets a worker process that builds the trainer once (``bench_step.py``'s options:
ViT-B/16 with random weights, 50 classes, synthetic batches, the same seed, so both build the
same weights); the driver then asks them for one step at a time, alternating which goes first,
so that load from other programs falls on both alike. It prints one line per checkout (median
CPU and wall seconds per step) and the ratio before/after of the median CPU times (> 1: after
is faster). The workers run this file's ``bench_step.py`` against their checkout's code.
"""
import argparse
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def worker(repo, argv):
    """Build the trainer of checkout ``repo`` and serve ``step`` / ``peak`` / ``quit`` on stdin."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # everything the trainer prints goes to stderr
    os.chdir(repo)
    sys.path[:0] = [repo, HERE]
    import tempfile

    import benchlib
    import bench_step

    a = bench_step.parse_args(argv)
    trainer, step, batch_size = bench_step.setup(a, tempfile.mkdtemp(prefix="bench-"))
    for _ in range(a.warmup):
        step()
    protocol.write(f"READY {batch_size} {benchlib.device_name(trainer.device)}\n")
    for line in sys.stdin:
        command = line.strip()
        if command == "step":
            wall, cpu, _ = benchlib.timed(step, trainer.device)
            protocol.write(f"TIME {wall:.6f} {cpu:.6f}\n")
        elif command == "peak":
            protocol.write(f"PEAK {benchlib.peak_memory(trainer.device)}\n")
        else:
            break


class Worker:
    def __init__(self, name, repo, argv, log):
        self.name, self.repo = name, repo
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", repo, *argv], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1)
        self.times = []

    def ask(self, command, expect):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read(expect)

    def read(self, expect):
        line = self.proc.stdout.readline()
        if not line.startswith(expect):
            raise SystemExit(f"error: the {self.name} worker ({self.repo}) stopped; see its log above or in --log")
        return line.split()[1:]

    def close(self):
        self.proc.stdin.write("quit\n")
        self.proc.stdin.close()
        self.proc.wait()


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        worker(os.path.abspath(sys.argv[2]), sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="checkout of the reference version (e.g. a worktree of main)")
    parser.add_argument("--after", default=os.path.dirname(HERE), help="checkout of the new version (default: this one)")
    parser.add_argument("--rounds", type=int, default=5, help="timed steps per checkout")
    parser.add_argument("--log", default=os.devnull, help="file for the workers' own output")
    a, rest = parser.parse_known_args()
    with open(a.log, "w") as log:
        workers = [Worker("before", os.path.abspath(a.before), rest, log),
                   Worker("after", os.path.abspath(a.after), rest, log)]
        info = [w.read("READY") for w in workers]
        for r in range(a.rounds):
            for w in (workers if r % 2 == 0 else workers[::-1]):
                wall, cpu = map(float, w.ask("step", "TIME"))
                w.times.append((wall, cpu))
        peaks = [w.ask("peak", "PEAK")[0] for w in workers]
        for w in workers:
            w.close()
    import benchlib  # noqa: E402  (this checkout's, for the output format)

    medians = {}
    for w, (batch, device), peak in zip(workers, info, peaks):
        cpu = statistics.median(c for _, c in w.times)
        wall = statistics.median(t for t, _ in w.times)
        medians[w.name] = cpu
        print(benchlib.result_line(version=w.name, repo=w.repo, device=device, batch=batch, rounds=a.rounds,
                                   **{"cpu_s/iter": f"{cpu:.3f}", "s/iter": f"{wall:.3f}"}, peak=peak,
                                   args="[" + " ".join(rest) + "]"))
    paired = statistics.median(b[1] / f[1] for b, f in zip(workers[0].times, workers[1].times))
    print(benchlib.result_line(ratio_before_over_after=f"{medians['before'] / medians['after']:.3f}",
                               paired_median=f"{paired:.3f}"))


if __name__ == "__main__":
    sys.path[:0] = [os.path.dirname(HERE), HERE]  # a worker puts its checkout in front of these
    main()
