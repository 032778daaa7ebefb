#!/usr/bin/env python
"""A whole benchmark in one command: every run of a protocol, exactly once, then its table.

    python scripts/benchmark.py run    --trainer MMRL --protocol base2new [--seeds 1 2 3] [--datasets ...]
                                       [--gpus 0,1 | --gpus cpu --jobs N | --slurm [--partition P ...]]
    python scripts/benchmark.py status --trainer MMRL --protocol base2new [--seeds 1 2 3] [...]

Protocols (harness/protocols.py, which also holds each trainer's configs): ``base2new`` (11 datasets,
train on base classes then test on new ones), ``xd`` (train on ImageNet, evaluate on 10 datasets and 4
ImageNet variants), ``fewshot`` (1 2 4 8 16 shots on all classes of the 11 datasets). Several
``--trainer`` and ``--protocol`` values run together. Environment as the shell scripts: ``DATA`` (data
root), ``OUTPUT`` (output root; same layout), ``OPTS`` (extra ``KEY VALUE`` options for every run).

Finished runs are skipped, unfinished ones resume from their last epoch, and a run being run by
another process (another submission, a shell script) is waited for, never run twice. ``run`` ends
with the protocol's tables (``parse_test_res.py --table``, harness/tables/; with the method's published
numbers when there are some) and exits 1 if a run failed. ``status`` lists each run's state and log. Both keep
``OUTPUT/benchmark_status.json`` up to date.
"""
import argparse
import os
import os.path as osp
import shlex
import shutil
import subprocess
import sys

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from harness import protocols  # noqa: E402
from harness.runner import (  # noqa: E402
    LocalRunner, Progress, StatusFile, failure_list, job_states, local_slots, run_duration, status_entry, worker_main,
)


class UsageError(Exception):
    """Bad input, reported as one ``error: ...`` line before any work starts."""


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {name: sub.add_parser(name, help=text) for name, text in
                (("run", "run the benchmark (skips finished runs, resumes unfinished ones)"),
                 ("status", "list each run's state and log"))}
    for command in commands.values():
        command.add_argument("--trainer", nargs="+", required=True,
                             help=f"one or more of: {', '.join(protocols.METHODS)}")
        command.add_argument("--protocol", nargs="+", required=True, choices=protocols.PROTOCOLS)
        command.add_argument("--seeds", nargs="+", type=int, default=list(protocols.DEFAULT_SEEDS))
        command.add_argument("--datasets", nargs="+", help="a subset of the protocol's datasets (xd: of its targets)")
        command.add_argument("--shots", nargs="+", type=int,
                             help="base2new/xd: the shot count (default 16); "
                                  "fewshot: the shot counts (default 1 2 4 8 16)")
        command.add_argument("--output", default=os.environ.get("OUTPUT", "output"), help="output root (env OUTPUT)")
        command.add_argument("--data", default=os.environ.get("DATA", "data"), help="data root (env DATA)")
        command.add_argument("--opts", default=os.environ.get("OPTS", ""),
                             help='extra "KEY VALUE ..." options for every run (env OPTS)')
    commands["status"].add_argument("--state", choices=("finished", "running", "failed", "blocked", "pending"),
                                    help="list only the runs in this state")
    run = commands["run"]
    run.add_argument("--gpus", help='GPU indices "0,1,2,3" (one worker each) or "cpu" '
                                    "(default: CUDA_VISIBLE_DEVICES, else every GPU nvidia-smi lists, else cpu)")
    run.add_argument("--jobs", type=int, default=1, help="runs at a time per GPU, or on the CPU (default 1)")
    run.add_argument("--retries", type=int, default=1, help="times a run is resumed when its worker dies (default 1)")
    run.add_argument("--progress-every", type=float, default=10.0, metavar="S",
                     help="seconds between progress lines when not on a terminal (default 10)")
    run.add_argument("--no-table", action="store_true", help="do not print the tables at the end")
    slurm = run.add_argument_group("Slurm (harness/slurm.py; site defaults: configs/slurm.example.ini)")
    slurm.add_argument("--slurm", action="store_true", help="submit the runs as Slurm job arrays (sbatch)")
    slurm.add_argument("--slurm-defaults", metavar="FILE", help="site defaults (default: $BENCHMARK_SLURM_DEFAULTS, "
                                                                "else configs/slurm.ini if present)")
    for option, text in (("partition", "partition"), ("time", "time limit per run, e.g. 12:00:00"),
                         ("gres", "generic resources per run, e.g. gpu:1"), ("mem", "memory per run, e.g. 32G"),
                         ("cpus-per-task", "CPUs per run"), ("account", "account"), ("qos", "quality of service")):
        slurm.add_argument(f"--{option}", help=text)
    slurm.add_argument("--sbatch-arg", action="append", default=[], metavar="ARG", help="another sbatch option")
    slurm.add_argument("--no-wait", action="store_true", help="submit and return (see the progress with status)")
    slurm.add_argument("--poll", type=float, default=10.0, metavar="S",
                       help="seconds between queue checks (default 10)")
    return parser


# ---------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------

def plan_jobs(args):
    """Every run of the chosen trainers and protocols; one-line errors for bad input."""
    jobs = []
    try:
        for trainer in args.trainer:
            for protocol in args.protocol:
                jobs += protocols.plan(trainer, protocol, args.seeds, args.datasets, args.shots)
    except ValueError as error:
        raise UsageError(str(error)) from None
    missing = sorted({protocols.config_file(job.trainer, job.cfg) for job in jobs
                      if not osp.isfile(protocols.config_file(job.trainer, job.cfg))})
    if missing:
        more = f" (and {len(missing) - 1} more)" if missing[1:] else ""
        raise UsageError(f"config file not found: {missing[0]}{more}: add it, or fix the trainer's entry in "
                         "harness/protocols.py METHODS")
    return jobs


def parse_opts(text):
    try:
        opts = shlex.split(text or "")
    except ValueError as error:
        raise UsageError(f"OPTS: {error}") from None
    if len(opts) % 2:
        raise UsageError(f'OPTS must be KEY VALUE pairs; got an odd number of words: "{text}"')
    return opts


def gpu_list(text, jobs):
    if jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {jobs}")
    if text is None:
        text = os.environ.get("CUDA_VISIBLE_DEVICES")
        if text is None and shutil.which("nvidia-smi"):
            listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout
            text = ",".join(str(i) for i, line in enumerate(listing.splitlines()) if line.startswith("GPU "))
        text = text or "cpu"
    gpus = [item.strip() for item in text.split(",") if item.strip()]
    if not gpus or ("cpu" in gpus and gpus != ["cpu"]):
        raise UsageError(f'--gpus takes GPU indices like "0,1" or "cpu", got "{text}"')
    return gpus


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------

def print_tables(args, out=sys.stdout):
    """The protocol's tables per trainer, with its published numbers when there are some."""
    from harness import tables

    try:
        published = tables.load_published()
    except tables.ParseError:
        published = {}
    for trainer in args.trainer:
        comparison = tables.own_comparison(published, trainer)
        try:
            out.write(tables.table_report(args.output, compare=comparison.method if comparison else None,
                                          trainers={trainer}, layouts={protocols.PLACE_PROTOCOL[p] for p in args.protocol})
                      + "\n")
        except tables.ParseError as error:
            out.write(f"{trainer}: {error}\n")


def report_failures(failures, stream=sys.stderr):
    if not failures:
        return
    stream.write(f"{len(failures)} run(s) did not finish:\n")
    for key, error, log in failures:
        stream.write(f"  {key}: {error}\n    log: {log}\n")
    stream.write("Fix the cause and run the same command again: finished runs are skipped.\n")


def cmd_run(args):
    jobs = plan_jobs(args)
    opts = parse_opts(args.opts)
    if not osp.isdir(args.data):
        raise UsageError(f"data root not found: {args.data} (set DATA or --data)")
    slots = None if args.slurm else local_slots(gpu_list(args.gpus, args.jobs), args.jobs)
    output = osp.abspath(args.output)
    os.makedirs(output, exist_ok=True)
    if args.slurm:
        return run_slurm(args, jobs, output, opts)
    print(f"[benchmark] {len(jobs)} runs ({', '.join(args.protocol)} for {', '.join(args.trainer)}) on "
          f"{len(slots)} worker(s): {', '.join(name for name, _ in slots)}; output {output}", file=sys.stderr)
    runner = LocalRunner(jobs, output, osp.abspath(args.data), opts, slots, StatusFile(output),
                         Progress(len(jobs), len(slots), interval=args.progress_every), retries=args.retries)
    try:
        counts = runner.run()
    except KeyboardInterrupt:
        print("\n[benchmark] interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    if not args.no_table:
        print_tables(args)
    report_failures(runner.failures())
    return 0 if counts["finished"] == len(jobs) else 1


def run_slurm(args, jobs, output, opts):
    from harness import slurm

    overrides = {"partition": args.partition, "time": args.time, "gres": args.gres, "mem": args.mem,
                 "cpus_per_task": args.cpus_per_task, "account": args.account, "qos": args.qos}
    try:
        options = slurm.site_options(args.slurm_defaults, overrides)
        if args.sbatch_arg:
            options["sbatch_args"] = shlex.split(options.get("sbatch_args") or "") + args.sbatch_arg
        name = f"bench-{'-'.join(args.trainer)}-{'-'.join(args.protocol)}"[:64]
        submitted, folder = slurm.submit(jobs, output, osp.abspath(args.data), opts, options, name)
        print(f"[benchmark] submitted {len(submitted)} of {len(jobs)} runs" +
              (f" (Slurm output in {folder})" if folder else " (the others are finished or queued)"), file=sys.stderr)
        if args.no_wait:
            return 0
        states = slurm.watch(jobs, output, Progress(len(jobs), 1, interval=args.progress_every), args.poll)
    except slurm.SlurmError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not args.no_table:
        print_tables(args)
    report_failures(failure_list(jobs, output, states))
    return 0 if all(states[job.id]["state"] == "finished" for job in jobs) else 1


def cmd_status(args):
    jobs = plan_jobs(args)
    output = osp.abspath(args.output)
    status = StatusFile(output)
    queued = {}
    if shutil.which("squeue"):
        from harness import slurm

        try:
            queued = slurm.queued_runs(output)
        except slurm.SlurmError:
            queued = {}
    states = job_states(jobs, output, status.failures(), queued)
    progress = Progress(len(jobs), stream=sys.stdout)
    counts = {}
    rows = []
    for job in jobs:
        entry = states[job.id]
        counts[entry["state"]] = counts.get(entry["state"], 0) + 1
        if entry["state"] == "finished":
            progress.add_duration(job.kind, run_duration(osp.join(output, job.id)))
        if args.state in (None, entry["state"]):
            detail = "; ".join(text for text in (entry["where"], entry["error"]) if text)
            rows.append((entry["state"], job.id, osp.join(output, job.id, "log.txt"), detail))
    if rows:
        width = max(len(row[1]) for row in rows)
        print(f"{'STATE':<9} {'RUN':<{width}}  LOG")
        for state, key, log, detail in rows:
            print(f"{state:<9} {key:<{width}}  {log}" + (f"  ({detail})" if detail else ""))
    status.update({job.id: status_entry(job, output, states[job.id]["state"], states[job.id]["where"],
                                        states[job.id]["error"]) for job in jobs})
    remaining = [(job.kind, 0.0) for job in jobs if states[job.id]["state"] in ("pending", "running")]
    print(progress.line(counts, remaining, elapsed=False) + " (one run at a time)")
    print(f"status file: {status.path}")
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_worker"]:  # a local worker process (harness/runner.py)
        worker_main(int(argv[1]))
        return 0
    if argv[:1] == ["_slurm-task"]:  # a Slurm array task (harness/slurm.py)
        from harness.slurm import task_main

        code = task_main(argv[1], argv[2])
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # the run is over: leave the allocation without the interpreter's slow teardown
    args = build_parser().parse_args(argv)
    try:
        return cmd_run(args) if args.command == "run" else cmd_status(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
