"""A benchmark on a Slurm cluster: job arrays submitted with ``sbatch``, one run per array task.

``submit`` puts the runs that are not finished into job arrays: one array of the runs that can
start now and, for each training submitted, one array of the evaluations that need it, held with
``--dependency=afterok:<the training's task> --kill-on-invalid-dep=yes`` (they leave the queue if the
training fails). Runs still queued by an earlier submission are not submitted again; evaluations of
them wait for them. A task (``task_main``) runs its run in-process; the run's lock and finished
marker make it exactly once: a finished run is skipped, and a task whose run (or its training) is
being run by another process waits for that process.

Preemption: tasks are submitted with ``--requeue --signal=B:USR1@<grace>``. On SIGUSR1 (the time
limit is near) a task asks Slurm to requeue it (``scontrol requeue``) and stops; on SIGTERM
(preemption, ``scancel``) it stops. The run keeps its last epoch's resume state (written atomically
after every epoch), so the requeued task resumes exactly. Slurm holds a requeued job for about two
minutes before it is eligible again.

Site defaults: an INI file with a ``[slurm]`` section (``--slurm-defaults FILE``, else
``$BENCHMARK_SLURM_DEFAULTS``, else ``configs/slurm.ini`` when it exists; see
``configs/slurm.example.ini``); command-line options override it. Keys: ``partition``, ``time``,
``gres``, ``mem``, ``cpus_per_task``, ``account``, ``qos`` (the sbatch options of those names),
``sbatch_args`` (more sbatch options, shell words), ``signal_grace`` (seconds before the time limit
for SIGUSR1, default 120), ``setup`` (shell lines run before the task, e.g. activating an
environment; several lines indented under the key) and ``python`` (the interpreter, default the
submitting one).
"""
import configparser
import getpass
import json
import os
import os.path as osp
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import asdict

from harness.protocols import REPO
from harness.run import LOG_FILE, lock_holder
from harness.runner import (
    Preempted, StatusFile, disk_state, execute, job_from_dict, job_states, now_iso, run_duration, status_entry,
)

SITE_KEYS = ("partition", "time", "gres", "mem", "cpus_per_task", "account", "qos", "sbatch_args",
             "signal_grace", "setup", "python")
DEFAULTS_ENV = "BENCHMARK_SLURM_DEFAULTS"
DEFAULTS_FILE = osp.join(REPO, "configs", "slurm.ini")
MAX_ARRAY = 1000  # Slurm's default MaxArraySize is 1001
WAIT_SECONDS = 15  # a task whose run is being run elsewhere checks again this often


class SlurmError(Exception):
    """Slurm refused or is not reachable; the message is one line."""


# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------

def site_options(path=None, overrides=None):
    """The ``[slurm]`` section of the defaults file, then the non-empty ``overrides``."""
    path = path or os.environ.get(DEFAULTS_ENV) or (DEFAULTS_FILE if osp.isfile(DEFAULTS_FILE) else None)
    options = {}
    if path:
        if not osp.isfile(path):
            raise SlurmError(f"Slurm defaults file not found: {path}")
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(path)
        except configparser.Error as error:
            raise SlurmError(f"{path}: {str(error).splitlines()[0]}") from None
        if not parser.has_section("slurm"):
            raise SlurmError(f"{path}: no [slurm] section (see configs/slurm.example.ini)")
        for key, value in parser.items("slurm"):
            if key not in SITE_KEYS:
                raise SlurmError(f"{path}: unknown key {key} in [slurm]; known: {', '.join(SITE_KEYS)}")
            options[key] = value.strip()
    options.update({key: value for key, value in (overrides or {}).items() if value not in (None, "", [])})
    return options


def sbatch_options(options):
    """sbatch arguments for the site options (not the per-array ones)."""
    args = [f"--{key.replace('_', '-')}={options[key]}" for key in
            ("partition", "time", "gres", "mem", "cpus_per_task", "account", "qos") if options.get(key)]
    extra = options.get("sbatch_args") or []
    return args + (shlex.split(extra) if isinstance(extra, str) else list(extra))


# ---------------------------------------------------------------------------------------------
# The queue
# ---------------------------------------------------------------------------------------------

def _slurm(command):
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise SlurmError(f"{command[0]} not found: is this a Slurm submission host?") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{command[0]} did not answer within 120 s") from None
    if proc.returncode != 0:
        raise SlurmError(f"{shlex.join(command[:2])}... failed: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def queue_states():
    """``{"<array>_<task>" or "<job>": state}`` of this user's jobs in the queue."""
    out = _slurm(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i %T"])
    return dict(line.split()[:2] for line in out.splitlines() if line.strip())


def submissions_dir(output):
    return osp.join(output, "benchmark", "slurm")


def submitted_jobs(output):
    """``{run id: Slurm id}`` of every earlier submission into ``output`` (the latest wins)."""
    found = {}
    folder = submissions_dir(output)
    for name in sorted(os.listdir(folder)) if osp.isdir(folder) else []:
        record = osp.join(folder, name, "submission.json")
        if osp.isfile(record):
            with open(record) as f:
                found.update(json.load(f)["runs"])
    return found


def queued_runs(output, queue=None):
    """``{run id: Slurm id}`` of runs submitted earlier that are still in the queue."""
    submitted = submitted_jobs(output)
    if not submitted:
        return {}
    queue = queue_states() if queue is None else queue
    return {key: slurm_id for key, slurm_id in submitted.items() if slurm_id in queue}


# ---------------------------------------------------------------------------------------------
# Submitting
# ---------------------------------------------------------------------------------------------

def _script(spec_path, options):
    python = options.get("python") or sys.executable
    setup = options.get("setup") or ""
    return "\n".join([
        "#!/bin/bash",
        "# A task of a benchmark array (scripts/benchmark.py): runs entry $SLURM_ARRAY_TASK_ID of",
        f"# {spec_path}. exec, so that Slurm's signals reach the run.",
        setup,
        f"cd {shlex.quote(REPO)}",
        f'exec {shlex.quote(python)} {shlex.quote(osp.join(REPO, "scripts", "benchmark.py"))} _slurm-task '
        f'{shlex.quote(spec_path)} "$SLURM_ARRAY_TASK_ID"',
        "",
    ])


def submit(jobs, output, data, opts, options, name="benchmark"):
    """Submit the jobs that are not finished nor queued; returns ``({run id: Slurm id}, submission folder)``."""
    queued = queued_runs(output)
    states = job_states(jobs, output)
    todo = [job for job in jobs if states[job.id]["state"] != "finished" and job.id not in queued]
    if not todo:
        return {}, None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = osp.join(submissions_dir(output), stamp)
    suffix = 1
    while osp.exists(folder):
        suffix += 1
        folder = osp.join(submissions_dir(output), f"{stamp}-{suffix}")
    os.makedirs(folder)
    slurm_id = dict(queued)
    waiting = {job.id for job in todo} | set(queued)
    groups = [(None, [job for job in todo if not any(dep in waiting for dep in job.deps)])]
    for job in todo:  # the evaluations of each training that is not finished, after it
        if job.deps and job.deps[0] in waiting:
            if groups[-1][0] != job.deps[0]:
                groups.append((job.deps[0], []))
            groups[-1][1].append(job)
    grace = int(options.get("signal_grace") or 120)
    common = ["--requeue", f"--signal=B:USR1@{grace}", "--open-mode=append",
              f"--output={osp.join(folder, '%A_%a.out')}", f"--job-name={name}"] + sbatch_options(options)
    count = 0
    for dep, group in groups:
        for start in range(0, len(group), MAX_ARRAY):
            chunk = group[start:start + MAX_ARRAY]
            count += 1
            spec = osp.join(folder, f"array{count}.json")
            with open(spec, "w") as f:
                json.dump({"output": output, "data": data, "opts": list(opts),
                           "jobs": [asdict(job) for job in chunk]}, f, indent=1)
            script = osp.join(folder, f"array{count}.sh")
            with open(script, "w") as f:
                f.write(_script(spec, options))
            dependency = [f"--dependency=afterok:{slurm_id[dep]}", "--kill-on-invalid-dep=yes"] if dep else []
            array_id = _slurm(["sbatch", "--parsable", f"--array=0-{len(chunk) - 1}", *common, *dependency,
                               script]).strip().split(";")[0]
            for index, job in enumerate(chunk):
                slurm_id[job.id] = f"{array_id}_{index}"
    mine = {job.id: slurm_id[job.id] for job in todo}
    with open(osp.join(folder, "submission.json"), "w") as f:
        json.dump({"submitted": now_iso(), "runs": mine}, f, indent=1)
    StatusFile(output).update({job.id: status_entry(job, output, "pending", f"queued as Slurm job {mine[job.id]}")
                               for job in todo})
    return mine, folder


# ---------------------------------------------------------------------------------------------
# Waiting for a submission
# ---------------------------------------------------------------------------------------------

def slurm_log(output, slurm_id):
    """The task's Slurm output file (``%A_%a.out`` in its submission folder), if found."""
    array, _, task = slurm_id.partition("_")
    folder = submissions_dir(output)
    for name in sorted(os.listdir(folder)) if osp.isdir(folder) else []:
        path = osp.join(folder, name, f"{array}_{task}.out")
        if osp.isfile(path):
            return path
    return None


LEFT_QUEUE = "left the Slurm queue without finishing"
# A requeued task leaves ``squeue`` for a moment before it is pending again: while watching, a run
# missing from the queue counts as failed only once it has been missing this long.
QUEUE_GRACE_SECONDS = 30.0


def current_states(jobs, output, submitted, queue, missing_since=None, now=None):
    """``{id: {"state", "where", "error"}}`` of the jobs of a submission, from the folders, the queue
    and the status file; a run that left the queue without finishing failed (or was blocked).

    ``missing_since`` (run id -> when first seen missing, kept by the caller across polls): a run
    missing from the queue for less than ``QUEUE_GRACE_SECONDS`` is still pending (without it, a
    missing run has failed).
    """
    failures = StatusFile(output).failures()
    now = time.monotonic() if now is None else now
    states = {}
    for job in jobs:
        state, where = disk_state(osp.join(output, job.id))
        entry = {"state": state, "where": where, "error": None}
        slurm_id = submitted.get(job.id)
        if state == "pending" and slurm_id in queue:
            if missing_since is not None:
                missing_since.pop(job.id, None)
            entry.update(state="running" if queue[slurm_id] in ("RUNNING", "COMPLETING") else "pending",
                         where=f"Slurm job {slurm_id} {queue[slurm_id].lower()}")
        elif (state == "pending" and slurm_id and job.id not in failures and missing_since is not None
              and now - missing_since.setdefault(job.id, now) < QUEUE_GRACE_SECONDS):
            entry.update(where=f"Slurm job {slurm_id} not in the queue (requeued?)")
        elif state == "pending" and any(states[dep]["state"] in ("failed", "blocked") for dep in job.deps):
            entry.update(state="blocked", error="its training did not finish")
        elif state == "pending" and (slurm_id or job.id in failures):
            log = slurm_log(output, slurm_id) if slurm_id else None
            entry.update(state="failed", error=failures.get(job.id) or LEFT_QUEUE
                         + (f" (see {log})" if log else ""))
        states[job.id] = entry
    return states



def watch(jobs, output, progress, poll=10.0):
    """Show progress until no run is pending or running in the queue; returns the states."""
    seen = set()
    missing_since = {}
    while True:
        states = current_states(jobs, output, submitted_jobs(output), queue_states(), missing_since)
        counts = {}
        for job in jobs:
            state = states[job.id]["state"]
            counts[state] = counts.get(state, 0) + 1
            if state == "finished" and job.id not in seen:
                seen.add(job.id)
                progress.add_duration(job.kind, run_duration(osp.join(output, job.id)))
        progress.slots = max(progress.slots, counts.get("running", 0))
        remaining = [(job.kind, 0.0) for job in jobs if states[job.id]["state"] in ("pending", "running")]
        progress.show(counts, remaining, force=not remaining)
        if not remaining:
            if progress.tty:
                progress.stream.write("\n")
            return states
        time.sleep(poll)


# ---------------------------------------------------------------------------------------------
# A task
# ---------------------------------------------------------------------------------------------

def install_preemption_handlers():
    """SIGUSR1: requeue this task, then stop; SIGTERM: stop. Later signals are ignored while stopping."""

    def stop(signum, frame):
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if signum == signal.SIGUSR1 and os.environ.get("SLURM_JOB_ID"):
            requeue = subprocess.run(["scontrol", "requeue", os.environ["SLURM_JOB_ID"]], capture_output=True,
                                     text=True)
            raise Preempted("time limit near: requeued" if requeue.returncode == 0 else
                            f"time limit near; requeue failed: {requeue.stderr.strip()}")
        raise Preempted(f"stopped by {signal.Signals(signum).name} (preempted or cancelled)")

    signal.signal(signal.SIGUSR1, stop)
    signal.signal(signal.SIGTERM, stop)


def wait_for_others(job, output):
    """Wait while another process holds the run's folder or its training's."""
    told = False
    while True:
        holders = [(folder, lock_holder(folder)) for folder in
                   [osp.join(output, job.id)] + [osp.join(output, dep) for dep in job.deps]]
        busy = [(folder, holder) for folder, holder in holders if holder is not None]
        if not busy:
            return
        if not told:
            folder, holder = busy[0]
            print(f"{folder} is being run by another process (PID {holder.get('pid', '?')} on "
                  f"{holder.get('host', '?')}): waiting for it", flush=True)
            told = True
        time.sleep(WAIT_SECONDS)


def task_main(spec_path, index):
    """One array task: its run, exactly once; exit status 0 when it is finished."""
    install_preemption_handlers()
    with open(spec_path) as f:
        spec = json.load(f)
    job = job_from_dict(spec["jobs"][int(index)])
    output = spec["output"]
    status = StatusFile(output)
    where = f"Slurm job {os.environ.get('SLURM_ARRAY_JOB_ID', '?')}_{os.environ.get('SLURM_ARRAY_TASK_ID', index)}"
    restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    print(f"==== {now_iso()} {job.id} ({where}{f', restart {restarts}' if restarts else ''})", flush=True)
    try:
        if REPO not in sys.path:
            sys.path.insert(0, REPO)
        import train  # noqa: F401  (after the handlers: a signal during the imports stops the task too)

        while True:
            wait_for_others(job, output)
            status.update({job.id: status_entry(job, output, "running", where)})
            start = time.time()
            outcome, message = execute(job, output, spec["data"], spec["opts"])
            if outcome != "busy":
                break
    except Preempted as stop:
        print(f"{job.id}: {stop}; the run keeps its last epoch's resume state", flush=True)
        status.update({job.id: status_entry(job, output, "pending", f"{where}: {stop}")})
        return 1
    if outcome == "finished":
        status.update({job.id: status_entry(job, output, "finished", where, seconds=time.time() - start)})
        return 0
    status.update({job.id: status_entry(job, output, "failed" if outcome == "failed" else "blocked", where, message)})
    print(f"{outcome.upper()} {job.id}: {message}\n  log: {osp.join(output, job.id, LOG_FILE)}", flush=True)
    return 1
