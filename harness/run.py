"""What a run is, who may write its folder, and whether it finished.

Files this module keeps in a run's output folder (JSON, written atomically):

- ``run.json``: the run's record: its kind (``train``, or ``test`` for an eval-only run), the
  resolved config with a hash of the keys that can change results, the code version, the identity
  of the data split (a hash of the few-shot sample and the val/test lists), the command line, and,
  for a test, the training run it evaluates.
- ``run.lock``: an advisory lock (``lockf``): one writer per folder. It holds the holder's PID,
  host and start time; the kernel releases it when the holder dies, and the next run notes that
  it took over.
- ``finished.json``: written once the final result is written, with the config hash and the result.

A run is finished when ``finished.json`` exists and its config hash is the record's. Resuming or
testing against a folder whose record differs is refused, naming the differing keys.

Only the standard library is imported here, so shell scripts can call ``python -m harness.run
state DIR`` cheaply.
"""
import datetime
import errno
import hashlib
import json
import os
import os.path as osp
import re
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import uuid

from .fileio import atomic_write, remove_temp_files

__all__ = [
    "RECORD_FILE", "FINISHED_FILE", "LOCK_FILE", "RunError", "Run", "FolderLock", "flatten_config",
    "config_identity", "config_hash", "split_identity", "code_version", "run_state", "read_record",
    "read_finished", "stale_model", "lock_holder",
]

RECORD_FILE = "run.json"
FINISHED_FILE = "finished.json"
LOCK_FILE = "run.lock"
LOG_FILE = "log.txt"
# Our engine's per-epoch resume state (dassl.engine.trainer.RESUME_STATE_FILE): a finished run does
# not need it, and it can be large (optimiser state), so finishing removes it.
ENGINE_RESUME_STATE_FILE = "resume_state.pth.tar"

# Keys that cannot change a run's numbers: where files go, what is printed, how often snapshots
# are kept, which device runs it, the evaluation cache (equal to the direct path, tested).
RESULT_NEUTRAL_KEYS = {
    "OUTPUT_DIR", "RESUME", "DATASET.ROOT", "VERBOSE", "USE_CUDA", "TRAIN.PRINT_FREQ",
    "TRAIN.CHECKPOINT_FREQ", "EVAL_CACHE.FEATURES", "EVAL_CACHE.IMAGES", "EVAL_CACHE.DIR", "EVAL_CACHE.MAX_GB",
}
# The trainers' speed switches, which give the same numbers on and off (each has an equivalence test).
SPEED_SWITCHES = re.compile(r"^TRAINER\.[^.]+\.(CACHE_\w+|TRUNCATE_TEXT|SHARE_LOWER_LAYERS)$")
# Keys of a trainer node that an evaluation may set differently from its training run: the precision;
# the regularisation weight λ, which only the training loss reads; MMRL++'s β, which the reference takes
# from the evaluated dataset's table entry (a cross-dataset target's, mmrl_pp.md §9 #4).
EVAL_MAY_DIFFER = re.compile(r"^TRAINER\.[^.]+\.(PREC|REG_WEIGHT)$|^TRAINER\.MMRLpp\.BETA$")


class RunError(Exception):
    """A run that must not start; the message is one line naming the folder or key and the fix."""


# ---------------------------------------------------------------------------------------------
# Identity: config, code, data
# ---------------------------------------------------------------------------------------------

def flatten_config(node, prefix=""):
    """``{"OPTIM.LR": 0.002, ...}`` for a (yacs) config tree; tuples become lists (JSON)."""
    flat = {}
    for key in sorted(node):
        value = node[key]
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_config(value, name + "."))
        else:
            flat[name] = list(value) if isinstance(value, tuple) else value
    return flat


def config_identity(cfg):
    """The config keys that can change results.

    ``DATALOADER.NUM_WORKERS`` only matters through where augmentation draws its random numbers:
    in the main process (0 workers) or per sample in the workers (any number of them), so it is
    recorded as ``"0"`` or ``">0"``.
    """
    flat = flatten_config(cfg)
    identity = {k: v for k, v in flat.items() if k not in RESULT_NEUTRAL_KEYS and not SPEED_SWITCHES.match(k)}
    if "DATALOADER.NUM_WORKERS" in identity:
        identity["DATALOADER.NUM_WORKERS"] = "0" if identity["DATALOADER.NUM_WORKERS"] == 0 else ">0"
    return identity


def config_hash(identity):
    """A short, stable hash of an identity mapping."""
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def differing_keys(old, new):
    """``[(key, old value, new value)]`` for keys whose values differ (missing = ``None``)."""
    keys = sorted(set(old) | set(new))
    return [(k, old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k)]


def describe_differences(diffs, limit=6):
    shown = [f"{key} {old!r} -> {new!r}" for key, old, new in diffs[:limit]]
    more = f" (and {len(diffs) - limit} more)" if len(diffs) > limit else ""
    return ", ".join(shown) + more


def code_version():
    """``git`` commit of the repository (``+dirty`` with uncommitted changes), or ``unknown``."""
    repo = osp.dirname(osp.dirname(osp.abspath(__file__)))
    try:
        commit = subprocess.run(["git", "-C", repo, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=10)
        if commit.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def split_identity(dataset, root):
    """Hash of the data a run uses: each split's (image path relative to ``root``, label) list, in order.

    The few-shot sample is part of ``train_x``, so a different sample (another seed, a rebuilt cache,
    changed split files) gives another hash; moving the data root does not.
    """
    root = osp.abspath(osp.expanduser(root)) if root else ""
    summary, combined = {}, hashlib.sha256()
    for split in ("train_x", "val", "test"):
        items = getattr(dataset, split, None) or []
        digest = hashlib.sha256()
        for item in items:
            path = osp.abspath(item.impath)
            rel = osp.relpath(path, root) if root and path.startswith(root + os.sep) else path
            digest.update(f"{rel}\t{item.label}\n".encode())
        summary[split] = len(items)
        combined.update(f"{split}:{digest.hexdigest()}\n".encode())
    summary["hash"] = combined.hexdigest()[:16]
    return summary


# ---------------------------------------------------------------------------------------------
# Reading a folder's state
# ---------------------------------------------------------------------------------------------

def _read_json(path):
    if not osp.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        raise RunError(f'cannot read "{path}" ({error}); it was not written by this project, or was '
                       "damaged: move the folder away or rerun with --discard-old-run") from None


def read_record(directory):
    return _read_json(osp.join(directory, RECORD_FILE))


def read_finished(directory):
    """The finished marker if it belongs to the folder's current record, else None."""
    record = read_record(directory)
    finished = _read_json(osp.join(directory, FINISHED_FILE))
    if record is None or finished is None or finished.get("config_hash") != record.get("config_hash"):
        return None
    return finished


_RESULT_LINE = re.compile(r"^\* accuracy: ([\d.]+)%$")


def _legacy_log_finished(directory):
    """A log written without a run record (older versions, other code) that holds its final result:
    after ``Finish training`` in a training log, after ``=> result`` in an eval-only log."""
    log = osp.join(directory, LOG_FILE)
    if not osp.isfile(log):
        return False
    training, after_training, after_result, finished = False, False, False, False
    with open(log, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if line.startswith("epoch ["):
                training = True
            elif line in ("Finish training", "Finished training"):
                training = after_training = True
            elif line == "=> result":
                after_result = True
            elif after_result and _RESULT_LINE.match(line):
                finished = finished or after_training or not training
    return finished


def _own_entries(directory):
    """Entries of a folder other than the lock file and temporary files."""
    if not osp.isdir(directory):
        return []
    return [n for n in os.listdir(directory) if n != LOCK_FILE and not re.search(r"\.tmp-\d+$", n)]


def stale_model(directory):
    """For a test run: why the training run it evaluated is no longer the one in its model folder, or None."""
    model = (read_record(directory) or {}).get("model") or {}
    if not model.get("run_id"):
        return None
    current = read_record(model["dir"])
    if current is None or current.get("run_id") != model["run_id"]:
        return f"it evaluated an earlier training run of {model['dir']}, which was trained again since"
    return None


def lock_holder(directory):
    """The holder of a run folder's lock (see ``FolderLock.holder``), or None when no run holds it."""
    return FolderLock(directory).holder()


def run_state(directory):
    """``finished``, ``unfinished``, ``legacy`` (a result log without a run record), ``foreign``
    (other content without a record) or ``new`` (nothing there)."""
    if read_record(directory) is not None:
        return "finished" if read_finished(directory) is not None else "unfinished"
    if not _own_entries(directory):
        return "new"
    return "legacy" if _legacy_log_finished(directory) else "foreign"


# ---------------------------------------------------------------------------------------------
# One writer per folder
# ---------------------------------------------------------------------------------------------

def _now():
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _describe_holder(info):
    if not info:
        return "holder unknown"
    return f"PID {info.get('pid')} on {info.get('host')}, started {info.get('started')}"


class FolderLock:
    """Exclusive advisory lock on ``directory/run.lock``.

    A POSIX record lock (``lockf``): it belongs to this process alone (data-loader workers forked
    from it do not inherit it, so a killed run's folder is free at once), the kernel releases it
    when the process dies, and it works on NFS. Within one process, ``_held`` refuses a second lock.
    """

    _held = set()

    def __init__(self, directory):
        self.directory = directory
        self.path = osp.join(directory, LOCK_FILE)
        self.fd = None

    @staticmethod
    def _read(fd):
        try:
            data = os.pread(fd, 4096, 0)
            return json.loads(data.decode()) if data.strip() else None
        except (OSError, ValueError):
            return None

    def _busy(self, holder):
        return RunError(f"{self.directory} is in use by another run ({_describe_holder(holder)}): wait for it "
                        "to finish, or use another --output-dir")

    def acquire(self, command=""):
        """Take the lock or raise ``RunError`` naming the holder; returns the info a dead holder left."""
        import fcntl

        key = osp.realpath(self.path)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if key in FolderLock._held:
            holder = self._read(fd)
            os.close(fd)
            raise self._busy(holder)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = self._read(fd)
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise self._busy(holder) from None
        previous = self._read(fd)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now(), "command": command}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self.fd, self._key = fd, key
        FolderLock._held.add(key)
        return previous

    def holder(self):
        """Who holds the lock now (``{"pid", "host", "started", ...}``, ``{}`` if it left no note),
        or None when it is free. Only looks (``F_GETLK``): taking the lock even for a moment could
        make a run starting at that instant fail as "in use"."""
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            query = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)  # struct flock, whole file
            lock_type = struct.unpack("hhqqi4x", fcntl.fcntl(fd, fcntl.F_GETLK, query))[0]
            return None if lock_type == fcntl.F_UNLCK else (self._read(fd) or {})
        finally:
            os.close(fd)

    def release(self):
        if self.fd is None:
            return
        import fcntl

        os.ftruncate(self.fd, 0)  # an empty lock file: the holder left cleanly
        fcntl.lockf(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        FolderLock._held.discard(self._key)
        self.fd = None


# ---------------------------------------------------------------------------------------------
# A run
# ---------------------------------------------------------------------------------------------

def _write_json(path, obj):
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=str)
        f.write("\n")


def _timestamp():
    return datetime.datetime.now().strftime("%Y-%m-%d-%H-%M-%S")


class Run:
    """The run-level bookkeeping of one ``train.py`` invocation, as a context manager::

        with Run(cfg, "train", command) as run:
            if run.already_finished: return
            ... build the trainer ...
            run.record_split(trainer.dm.dataset)
            ... train and test ...
            run.finish(accuracy)

    ``kind``: ``train`` (a training run, with its final test), ``test`` (an eval-only run, of the
    model in ``model_dir`` if given) or ``build`` (``--no-train``: only the lock, nothing recorded).
    Messages for the log are collected in ``notes`` (the logger starts after the lock is taken).
    """

    def __init__(self, cfg, kind, command, model_dir="", load_epoch=None, discard_old=False):
        self.directory = osp.abspath(cfg.OUTPUT_DIR)
        self.cfg = cfg
        self.kind = kind
        self.command = command
        self.model_dir = model_dir
        self.load_epoch = load_epoch
        self.discard_old = discard_old
        self.identity = config_identity(cfg)
        self.identity["_kind"] = kind
        self.record = None
        self.notes = []
        self.already_finished = None  # the finished marker, when the folder's run is already complete
        self.resumed = False
        self.fresh = False  # the folder held no run before this one (abandon() may remove it)
        self.created_dirs = []  # folders this run created, deepest first
        self.lock = FolderLock(self.directory)

    # --- opening ---

    def __enter__(self):
        model = self._check_model_dir() if self.kind == "test" else None
        if model:
            self.identity["_model"] = {"run_id": model["run_id"], "load_epoch": self.load_epoch}
        missing = self.directory
        while not osp.exists(missing):
            self.created_dirs.append(missing)
            missing = osp.dirname(missing)
        os.makedirs(self.directory, exist_ok=True)
        self.fresh = not _own_entries(self.directory)
        previous = self.lock.acquire(self.command)
        try:
            if previous:
                self.notes.append(f"Note: took over {self.directory} from a run that is gone "
                                  f"({_describe_holder(previous)})")
            for path in remove_temp_files(self.directory):
                self.notes.append(f"Removed {path}, left by an interrupted write")
            if self.kind != "build":
                self._open_record(model)
        except BaseException:
            self.lock.release()
            raise
        return self

    def __exit__(self, *exc):
        self.lock.release()
        return False

    # Entries a run writes before it has any result (the log, the record, TensorBoard's first events).
    _BOOKKEEPING = {RECORD_FILE, LOCK_FILE, LOG_FILE, "tensorboard"}

    def abandon(self):
        """After a failure before any result: release the folder, and remove what this run wrote if
        the folder held no run before (and the folders it created). Returns True if removed."""
        self.lock.release()
        entries = _own_entries(self.directory) if osp.isdir(self.directory) else []
        if not self.fresh or self.resumed or not set(entries) <= self._BOOKKEEPING:
            return False
        for name in os.listdir(self.directory):
            path = osp.join(self.directory, name)
            if osp.isdir(path) and not osp.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
        for folder in self.created_dirs:  # deepest first; a folder another run now uses is kept
            try:
                os.rmdir(folder)
            except OSError:
                break
        return True

    def _check_model_dir(self):
        """For a test: the training run in ``model_dir`` must be finished and define the same model."""
        if not self.model_dir:
            return None
        model_dir = osp.abspath(self.model_dir)
        record = read_record(model_dir)
        if record is None:
            self.notes.append(f"Note: {model_dir} has no {RECORD_FILE} (written by other code or an older "
                              "version): cannot check that its training finished")
            return None
        if read_finished(model_dir) is None:
            raise RunError(f"training of {model_dir} is not finished: resume it with: {record.get('command')}")
        trained = record.get("identity", {})
        diffs = [(k, old, new) for k, old, new in differing_keys(trained, self.identity)
                 if (k.startswith("TRAINER.") or k == "MODEL.BACKBONE.NAME") and not EVAL_MAY_DIFFER.match(k)]
        if diffs:
            raise RunError(f"the model in {model_dir} was trained with another config than this evaluation "
                           f"({describe_differences(diffs)}): evaluate with the training run's values")
        return {"run_id": record.get("run_id")}

    def _open_record(self, model):
        record = read_record(self.directory)
        if self.discard_old and (record is not None or _own_entries(self.directory)):
            record = self._discard_old_run()
        ident_hash = config_hash(self.identity)
        if record is None:
            foreign = _own_entries(self.directory)
            if foreign:
                raise RunError(f"{self.directory} already holds files of a run without a {RECORD_FILE} "
                               f"({', '.join(sorted(foreign)[:4])}): use another --output-dir, or rerun with "
                               "--discard-old-run to move them aside")
            self.record = {
                "format": 1, "run_id": uuid.uuid4().hex, "kind": self.kind, "config_hash": ident_hash,
                "command": self.command, "created": _now(), "code_version": code_version(),
                "model": {"dir": osp.abspath(self.model_dir), **(model or {})} if self.model_dir else None,
                "split": None, "starts": [], "identity": self.identity,
                "config": flatten_config(self.cfg),
            }
        else:
            self._check_same_run(record, ident_hash)
            finished = read_finished(self.directory)
            if finished is not None:
                self.already_finished = finished
                return
            self.record = record
            self.resumed = True
            self._keep_unfinished_log()
        version = code_version()
        if self.resumed and version != self.record.get("code_version"):
            self.notes.append(f"Note: the code changed since this run started ({self.record.get('code_version')} "
                              f"-> {version})")
        self.record["starts"].append({"time": _now(), "host": socket.gethostname(), "pid": os.getpid(),
                                      "code_version": version})
        _write_json(osp.join(self.directory, RECORD_FILE), self.record)

    def _check_same_run(self, record, ident_hash):
        if record.get("kind") != self.kind:
            raise RunError(f"{self.directory} holds a {record.get('kind')} run, not a {self.kind} run: use "
                           "another --output-dir")
        if record.get("config_hash") == ident_hash:
            return
        diffs = differing_keys(record.get("identity", {}), self.identity)
        if [key for key, _, _ in diffs] == ["_model"]:
            raise RunError(f"{self.directory} holds the test of an earlier training run of {self.model_dir}, "
                           "which was trained again since: rerun with --discard-old-run to test the new model")
        what = describe_differences(diffs) if diffs else "recorded with another code version"
        raise RunError(f"{self.directory} holds a run with another config ({what}): use another "
                       "--output-dir, or rerun with --discard-old-run to move the old run aside")

    def _discard_old_run(self):
        """Move the folder's content to a hidden sibling ``.<name>.discarded-<time>``; returns None."""
        parent, name = osp.split(self.directory)
        aside = osp.join(parent, f".{name}.discarded-{_timestamp()}")
        os.makedirs(aside)
        for entry in _own_entries(self.directory):
            os.replace(osp.join(self.directory, entry), osp.join(aside, entry))
        self.notes.append(f"Moved the old run in {self.directory} to {aside} (--discard-old-run)")
        self.fresh = True
        return None

    def _keep_unfinished_log(self):
        log = osp.join(self.directory, LOG_FILE)
        if osp.exists(log):
            kept = f"{log}-unfinished-{_timestamp()}"
            os.replace(log, kept)
            self.notes.append(f"Resuming the unfinished run in {self.directory} (its log so far: {kept})")
        else:
            self.notes.append(f"Resuming the unfinished run in {self.directory}")

    # --- during and after the run ---

    def record_split(self, dataset):
        """Record the data split on the first start; on a resume it must be the recorded one."""
        if self.record is None:
            return
        split = split_identity(dataset, self.cfg.DATASET.ROOT)
        recorded = self.record.get("split")
        if recorded and recorded.get("hash") != split["hash"]:
            raise RunError(f"the data of {self.directory} changed since the run started (split hash "
                           f"{recorded.get('hash')} -> {split['hash']}: the data root, its split files or the "
                           "few-shot cache differ): use another --output-dir, or --discard-old-run")
        if not recorded:
            self.record["split"] = split
            _write_json(osp.join(self.directory, RECORD_FILE), self.record)

    def finish(self, result=None):
        """Mark the run finished (atomically), with its final accuracy when there is one."""
        if self.record is None:
            return
        marker = {
            "run_id": self.record["run_id"], "config_hash": self.record["config_hash"],
            "split_hash": (self.record.get("split") or {}).get("hash"),
            "result": None if result is None else {"accuracy": float(result)},
            "finished": _now(), "code_version": code_version(),
        }
        _write_json(osp.join(self.directory, FINISHED_FILE), marker)
        resume_state = osp.join(self.directory, ENGINE_RESUME_STATE_FILE)
        if osp.exists(resume_state):
            os.remove(resume_state)


def command_line(argv):
    """The ``python train.py ...`` line that reproduces a run (for messages and the record)."""
    return shlex.join([osp.basename(sys.executable) or "python", "train.py", *argv])


def main(argv=None):
    """``python -m harness.run state DIR``: print the run state of an output folder (for scripts)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "state":
        print("usage: python -m harness.run state DIR", file=sys.stderr)
        return 2
    try:
        print(run_state(args[1]))
    except RunError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
