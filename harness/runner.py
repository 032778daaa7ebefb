"""Running a benchmark's jobs (harness/protocols.py) exactly once, and reporting where they stand.

- ``execute``: one job in this process (``train.run``), used by the local workers and by Slurm tasks.
  Whether a job is done is what ``harness.run.run_state`` says; the run folder's lock keeps two
  processes (other workers, another submission of the same benchmark, a shell script) from running
  it at once: a job locked by someone else is "running elsewhere", not failed.
- ``LocalRunner``: long-lived worker processes, one per GPU slot (``CUDA_VISIBLE_DEVICES`` set before
  torch is imported) or N on the CPU, each importing ``train`` once and running jobs in-process; the
  next ready job (its training finished) goes to the first free worker. A job that raises is
  reported with its log and the worker goes on; a worker that dies is replaced and its job retried
  once (it resumes from its last epoch).
- ``job_states``, ``Progress`` and ``StatusFile``: each run's state and log, the live progress line
  with an ETA from finished runs' durations, and ``OUTPUT/benchmark_status.json``.
"""
import datetime
import json
import os
import os.path as osp
import selectors
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import asdict

from harness.fileio import atomic_write
from harness.protocols import REPO, Job, StepError, job_argv
from harness.run import FINISHED_FILE, LOG_FILE, RECORD_FILE, RunError, lock_holder, run_state

STATUS_FILE = "benchmark_status.json"
DONE = ("finished", "legacy")
# States of a job in a benchmark; "failed" and "blocked" (a training it needs failed) end it.
STATES = ("finished", "running", "failed", "blocked", "pending")


class Preempted(BaseException):
    """Raised by a signal handler to stop a run; its resume state of the last epoch is kept."""


# ---------------------------------------------------------------------------------------------
# One job in this process
# ---------------------------------------------------------------------------------------------

def execute(job, output, data, user_opts):
    """Run ``job`` here; returns ``(outcome, message)`` with outcome ``finished``, ``failed``,
    ``blocked`` (its training is not finished) or ``busy`` (another process holds its folder)."""
    import train  # the caller paid for this import already (workers import it at start)

    directory = osp.join(output, job.id)
    try:
        if run_state(directory) in DONE:
            return "finished", "already finished"
        for dep in job.deps:
            if run_state(osp.join(output, dep)) not in DONE:
                return "blocked", f"training of {osp.join(output, dep)} is not finished"
        train.run(job_argv(job, output, data, user_opts))
    except RunError as error:
        if lock_holder(directory) is not None:
            return "busy", str(error)
        return "failed", str(error)
    except (Exception, SystemExit) as error:  # noqa: BLE001 - any failure of a run is reported, not fatal
        traceback.print_exc()
        sys.stdout.flush()
        if isinstance(error, StepError):
            return "failed", str(error)
        return "failed", f"{type(error).__name__}: {error}".splitlines()[0]
    if run_state(directory) in DONE:
        return "finished", ""
    return "failed", "the run returned without writing its finished marker"


def job_from_dict(fields):
    fields = dict(fields)
    fields["opts"] = tuple(fields.get("opts") or ())
    return Job(**fields)


# ---------------------------------------------------------------------------------------------
# States on disk
# ---------------------------------------------------------------------------------------------

def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _seconds_between(start, end):
    try:
        return (datetime.datetime.fromisoformat(end) - datetime.datetime.fromisoformat(start)).total_seconds()
    except (TypeError, ValueError):
        return None


def run_duration(directory):
    """Seconds the last attempt of a finished run took (from its record and finished marker), or None."""
    record, finished = _read_json(osp.join(directory, RECORD_FILE)), _read_json(osp.join(directory, FINISHED_FILE))
    if not record or not finished or not record.get("starts"):
        return None
    return _seconds_between(record["starts"][-1].get("time"), finished.get("finished"))


def disk_state(directory):
    """``(state, where)`` from the folder alone: finished, running (with the lock holder) or pending."""
    try:
        state = run_state(directory)
    except RunError:
        state = "foreign"
    if state in DONE:
        return "finished", ""
    holder = lock_holder(directory)
    if holder is not None:
        return "running", f"PID {holder.get('pid', '?')} on {holder.get('host', '?')}"
    return "pending", "resumes" if state == "unfinished" else ""


def job_states(jobs, output, failures=None, queued=None):
    """``{id: {"state", "where", "error"}}`` for the jobs: the folders' states, ``failures`` (id ->
    message, e.g. from the status file) for unfinished runs that nobody runs, ``queued`` (id -> Slurm
    job) for runs waiting in a queue; a pending job whose training failed is blocked."""
    failures, queued = failures or {}, queued or {}
    states = {}
    for job in jobs:  # trainings come before their evaluations
        state, where = disk_state(osp.join(output, job.id))
        entry = {"state": state, "where": where, "error": None}
        if state == "pending" and job.id in queued:
            entry.update(where=f"queued as Slurm job {queued[job.id]}")
        elif state == "pending" and job.id in failures:
            entry.update(state="failed", error=failures[job.id])
        elif state == "pending" and any(states.get(dep, {}).get("state") in ("failed", "blocked") for dep in job.deps):
            entry.update(state="blocked", error="its training did not finish")
        states[job.id] = entry
    return states


# ---------------------------------------------------------------------------------------------
# The status file and the progress line
# ---------------------------------------------------------------------------------------------

def now_iso():
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


class StatusFile:
    """``OUTPUT/benchmark_status.json``: every run any benchmark command here knows of, by id (its
    folder below OUTPUT), with its state, log, error and duration. Commands merge their runs into it
    under a lock (several submissions, Slurm tasks), so runs of other benchmarks stay listed."""

    def __init__(self, output):
        self.path = osp.join(output, STATUS_FILE)
        self.lock_path = osp.join(output, "." + STATUS_FILE + ".lock")

    def read(self):
        return (_read_json(self.path) or {}).get("runs", {})

    def failures(self):
        return {key: run.get("error") or "failed" for key, run in self.read().items() if run.get("state") == "failed"}

    def update(self, entries):
        """Merge ``{id: entry}`` into the file (atomically, under its lock)."""
        import fcntl

        os.makedirs(osp.dirname(self.path), exist_ok=True)
        with open(self.lock_path, "a") as lock:
            fcntl.lockf(lock, fcntl.LOCK_EX)
            try:
                runs = self.read()
                runs.update(entries)
                counts = {state: 0 for state in STATES}
                for run in runs.values():
                    counts[run.get("state")] = counts.get(run.get("state"), 0) + 1
                with atomic_write(self.path, "w") as f:
                    json.dump({"updated": now_iso(), "counts": counts, "runs": dict(sorted(runs.items()))}, f, indent=1)
                    f.write("\n")
            finally:
                fcntl.lockf(lock, fcntl.LOCK_UN)


def status_entry(job, output, state, where="", error=None, seconds=None):
    directory = osp.join(output, job.id)
    return {"state": state, "where": where, "error": error, "seconds": seconds, "trainer": job.trainer,
            "protocol": job.protocol, "dataset": job.dataset, "shots": job.shots, "seed": job.seed,
            "kind": job.kind, "dir": directory, "log": osp.join(directory, LOG_FILE),
            "depends_on": [osp.join(output, dep) for dep in job.deps], "updated": now_iso()}


def format_seconds(seconds):
    if seconds is None:
        return "--"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class Progress:
    """The one-line summary: counts per state, elapsed time and an ETA.

    The ETA assumes each remaining run takes the mean duration of the finished runs of its kind
    (training or evaluation; this invocation's and earlier ones'), spread over ``slots`` parallel
    workers. On a terminal the line is redrawn in place; otherwise one line at most every
    ``interval`` seconds.
    """

    def __init__(self, total, slots=1, stream=None, interval=10.0):
        self.total, self.slots = total, max(1, slots)
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = 1.0 if self.tty else interval
        self.start = time.time()
        self.last = 0.0
        self.durations = {"train": [], "test": []}
        self.shown = ""
        self.last_counts = None

    def add_duration(self, kind, seconds):
        if seconds is not None and seconds >= 0:
            self.durations.setdefault(kind, []).append(seconds)

    def expected(self, kind):
        values = self.durations.get(kind) or [v for values in self.durations.values() for v in values]
        return sum(values) / len(values) if values else None

    def eta(self, remaining):
        """Seconds until the ``remaining`` (``[(kind, seconds already spent)]``) runs are done, or None."""
        total = 0.0
        for kind, spent in remaining:
            expected = self.expected(kind)
            if expected is None:
                return None
            total += max(expected - spent, 0.0)
        return total / self.slots

    def line(self, counts, remaining, elapsed=True):
        parts = [f"{counts.get('finished', 0)}/{self.total} finished", f"{counts.get('running', 0)} running",
                 f"{counts.get('failed', 0)} failed", f"{counts.get('pending', 0)} pending"]
        if counts.get("blocked"):
            parts.append(f"{counts['blocked']} blocked")
        eta = self.eta(remaining) if remaining else 0.0
        since = f" | elapsed {format_seconds(time.time() - self.start)}" if elapsed else ""
        return f"[benchmark] {', '.join(parts)}{since} | ETA {format_seconds(eta)}"

    def show(self, counts, remaining, force=False):
        """Redraw (terminal), or print a line when the counts changed, at most every ``interval``
        seconds (and every 6 intervals regardless, as a sign of life)."""
        now = time.time()
        changed = counts != self.last_counts
        quiet = now - self.last < (self.interval if changed or self.tty else 6 * self.interval)
        if not force and quiet:
            return
        self.last, self.last_counts = now, dict(counts)
        text = self.line(counts, remaining)
        if self.tty:
            self.stream.write("\r" + text.ljust(len(self.shown)))
            self.shown = text
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def message(self, text):
        """A line of its own (a failure, a replaced worker), above the progress line on a terminal."""
        if self.tty and self.shown:
            self.stream.write("\r" + " " * len(self.shown) + "\r")
            self.shown = ""
        self.stream.write(text + "\n")
        self.stream.flush()


# ---------------------------------------------------------------------------------------------
# Local workers
# ---------------------------------------------------------------------------------------------

def worker_main(result_fd):
    """A worker process: import ``train`` once, then run the jobs read from stdin (one JSON line
    each), writing one JSON line per result to ``result_fd``. Its own output goes to its console file."""
    results = os.fdopen(result_fd, "w", buffering=1)
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    import train  # noqa: F401  (paid once per worker)

    results.write(json.dumps({"event": "ready", "pid": os.getpid()}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        job = job_from_dict(request["job"])
        print(f"==== {now_iso()} {job.id}", flush=True)
        start = time.time()
        outcome, message = execute(job, request["output"], request["data"], request["opts"])
        results.write(json.dumps({"event": "done", "id": job.id, "outcome": outcome, "message": message,
                                  "seconds": time.time() - start}) + "\n")
    sys.stdout.flush()
    os._exit(0)  # no more jobs: skip the interpreter's (torch's) slow teardown


class Worker:
    """A worker process on one slot (a GPU, or a CPU share) and the job it is running."""

    def __init__(self, slot, env, console_dir):
        read_fd, write_fd = os.pipe()
        os.makedirs(console_dir, exist_ok=True)
        self.slot = slot
        self.console = osp.join(console_dir, f"{slot}.txt")
        with open(self.console, "a") as console:
            self.process = subprocess.Popen(
                [sys.executable, osp.join(REPO, "scripts", "benchmark.py"), "_worker", str(write_fd)],
                stdin=subprocess.PIPE, stdout=console, stderr=subprocess.STDOUT, env=env, pass_fds=(write_fd,),
                text=True, cwd=REPO)
        os.close(write_fd)
        self.results = read_fd
        self.buffer = b""
        self.job = None
        self.started = None

    def send(self, job, output, data, opts):
        """Hand a job to the worker (a dead worker's job is dealt with when its results pipe closes)."""
        self.job, self.started = job, time.time()
        try:
            self.process.stdin.write(json.dumps({"job": asdict(job), "output": output, "data": data,
                                                 "opts": opts}) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass

    def messages(self):
        """The complete messages that arrived (a read of what is there), or None once the worker is gone."""
        data = os.read(self.results, 65536)
        if not data:
            return None
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]

    def close(self):
        try:
            self.process.stdin.close()
        except OSError:
            pass
        self.process.wait()
        os.close(self.results)

    def exit_description(self):
        code = self.process.wait()
        if code < 0:
            return f"killed by signal {signal.Signals(-code).name}"
        return f"exit code {code}"


def local_slots(gpus, jobs):
    """``[(slot name, environment overrides)]``: ``jobs`` workers per GPU, or ``jobs`` CPU workers."""
    if gpus == ["cpu"]:
        threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // jobs))
        return [(f"cpu{i}", {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": threads}) for i in range(jobs)]
    return [(f"gpu{gpu}" + (f"-{i}" if jobs > 1 else ""), {"CUDA_VISIBLE_DEVICES": gpu})
            for gpu in gpus for i in range(jobs)]


class LocalRunner:
    """Runs jobs on local worker processes until each is finished, failed or blocked."""

    def __init__(self, jobs, output, data, opts, slots, status, progress, retries=1, poll=5.0):
        self.jobs = {job.id: job for job in jobs}
        self.order = [job.id for job in jobs]
        self.output, self.data, self.opts = output, data, list(opts)
        self.slots, self.status, self.progress = slots, status, progress
        self.retries, self.poll = retries, poll
        self.console_dir = osp.join(output, "benchmark", "console")
        self.state, self.where, self.error, self.seconds = {}, {}, {}, {}
        self.attempts = {key: 0 for key in self.order}
        self.workers = {}  # slot -> Worker
        self.selector = selectors.DefaultSelector()
        self.last_poll = 0.0

    # --- bookkeeping ---

    def set(self, key, state, where="", error=None):
        self.state[key], self.where[key], self.error[key] = state, where, error

    def counts(self):
        counts = {state: 0 for state in STATES}
        for state in self.state.values():
            counts[state] += 1
        return counts

    def remaining(self):
        out = []
        for key in self.order:
            if self.state[key] == "pending":
                out.append((self.jobs[key].kind, 0.0))
        for worker in self.workers.values():
            if worker.job is not None:
                out.append((worker.job.kind, time.time() - worker.started))
        return out

    def write_status(self):
        self.status.update({key: status_entry(self.jobs[key], self.output, self.state[key], self.where[key],
                                              self.error[key], self.seconds.get(key)) for key in self.order})

    def refresh(self, force=False):
        self.progress.show(self.counts(), self.remaining(), force)

    # --- scheduling ---

    def initial_states(self):
        for key, entry in job_states(self.jobs.values(), self.output).items():
            self.set(key, entry["state"], entry["where"])
            if entry["state"] == "finished":
                self.progress.add_duration(self.jobs[key].kind, run_duration(osp.join(self.output, key)))

    def ready(self):
        """Pending jobs whose trainings finished (and none running on a worker), in plan order;
        pending jobs whose training failed become blocked."""
        running = {worker.job.id for worker in self.workers.values() if worker.job is not None}
        out = []
        for key in self.order:
            if self.state[key] != "pending" or key in running:
                continue
            deps = [self.state[dep] for dep in self.jobs[key].deps if dep in self.state]
            if any(state in ("failed", "blocked") for state in deps):
                self.set(key, "blocked", error="its training did not finish")
            elif all(state == "finished" for state in deps):
                out.append(key)
        return sorted(out, key=lambda key: self.jobs[key].kind != "train")  # trainings first (stable)

    def start_worker(self, slot, env):
        worker = Worker(slot, dict(os.environ, **env), self.console_dir)
        self.workers[slot] = worker
        self.selector.register(worker.results, selectors.EVENT_READ, worker)

    def stop_worker(self, worker):
        self.selector.unregister(worker.results)
        worker.close()
        del self.workers[worker.slot]

    def dispatch(self):
        ready = self.ready()
        pending = sum(1 for key in self.order if self.state[key] == "pending")
        busy = sum(1 for worker in self.workers.values() if worker.job is not None)
        for slot, env in self.slots:  # start workers while there is work for them
            if slot not in self.workers and len(self.workers) < pending + busy:
                self.start_worker(slot, env)
        for worker in self.workers.values():
            if worker.job is None and ready:
                key = ready.pop(0)
                self.attempts[key] += 1
                self.set(key, "running", f"worker {worker.slot}")
                worker.send(self.jobs[key], self.output, self.data, self.opts)
        if pending == 0:  # nothing left to start: idle workers may go
            for worker in [w for w in self.workers.values() if w.job is None]:
                self.stop_worker(worker)

    def handle(self, worker):
        messages = worker.messages()
        if messages is None:  # the worker died
            self.worker_died(worker)
            return
        for message in messages:
            if message.get("event") == "done":
                self.job_done(worker, message)

    def job_done(self, worker, message):
        job, worker.job = worker.job, None
        outcome, seconds = message["outcome"], message["seconds"]
        if outcome == "finished":
            self.set(job.id, "finished")
            self.seconds[job.id] = seconds
            self.progress.add_duration(job.kind, seconds)
        elif outcome == "busy":
            self.set(job.id, "running", "elsewhere (its folder is locked by another process)")
        elif outcome == "blocked":
            self.set(job.id, "blocked", error=message["message"])
        else:
            self.set(job.id, "failed", error=message["message"])
            self.progress.message(f"FAILED {job.id}: {message['message']}\n  log: "
                                  f"{osp.join(self.output, job.id, LOG_FILE)}\n  console: {worker.console}")
        self.write_status()

    def worker_died(self, worker):
        job, how = worker.job, worker.exit_description()
        self.stop_worker(worker)
        if job is None:
            self.progress.message(f"worker {worker.slot} stopped ({how}; console: {worker.console})")
            return
        if self.attempts[job.id] <= self.retries:
            self.set(job.id, "pending", "resumes")
            self.progress.message(f"worker {worker.slot} died ({how}) while running {job.id}: a new worker "
                                  f"resumes it (console: {worker.console})")
        else:
            self.set(job.id, "failed", error=f"its worker died ({how}), {self.attempts[job.id]} times")
            self.progress.message(f"FAILED {job.id}: its worker died ({how})\n  log: "
                                  f"{osp.join(self.output, job.id, LOG_FILE)}\n  console: {worker.console}")
        self.write_status()

    def poll_elsewhere(self):
        """Runs locked by other processes: once their lock is free, finished or ours to resume."""
        if time.time() - self.last_poll < self.poll:
            return
        self.last_poll = time.time()
        mine = {worker.job.id for worker in self.workers.values() if worker.job is not None}
        for key in self.order:
            if self.state[key] == "running" and key not in mine:
                state, where = disk_state(osp.join(self.output, key))
                self.set(key, state, where if state == "running" else "")

    def active(self):
        return any(state in ("pending", "running") for state in self.state.values())

    def run(self):
        """Run until every job is finished, failed or blocked; returns the counts."""
        self.initial_states()
        self.write_status()
        self.refresh(force=True)
        last_status = time.time()
        try:
            self.dispatch()
            while self.active():
                for event, _ in self.selector.select(timeout=1.0):
                    self.handle(event.data)
                self.poll_elsewhere()
                self.dispatch()
                if time.time() - last_status > 10:
                    self.write_status()
                    last_status = time.time()
                self.refresh()
        except KeyboardInterrupt:
            self.interrupt()
            raise
        finally:
            for worker in list(self.workers.values()):
                self.stop_worker(worker)
        self.write_status()
        self.refresh(force=True)
        if self.progress.tty:
            self.progress.stream.write("\n")
        return self.counts()

    def interrupt(self):
        """Ctrl-C: the workers got it too (same process group); their runs keep their last epoch."""
        for worker in list(self.workers.values()):
            if worker.job is not None:
                self.set(worker.job.id, "pending", "interrupted: resumes")
            worker.process.send_signal(signal.SIGINT)
        for worker in list(self.workers.values()):
            try:
                worker.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.process.kill()
        self.write_status()

    def failures(self):
        """``[(id, error, log)]`` of the failed jobs, then the blocked ones with their training's log."""
        return failure_list(self.jobs.values(), self.output, {key: {"state": self.state[key], "error": self.error[key]}
                                                              for key in self.order})


def failure_list(jobs, output, states):
    """``[(id, error, log)]``: failed runs with their logs, then the runs blocked by them."""
    failed = [(job.id, states[job.id]["error"] or "failed", osp.join(output, job.id, LOG_FILE))
              for job in jobs if states[job.id]["state"] == "failed"]
    blocked = [(job.id, f"blocked: its training {job.deps[0]} did not finish",
                osp.join(output, job.deps[0], LOG_FILE)) for job in jobs
               if states[job.id]["state"] == "blocked" and job.deps]
    return failed + blocked
