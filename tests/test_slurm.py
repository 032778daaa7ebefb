"""scripts/benchmark.py --slurm on a real single-node Slurm cluster (munge, slurmctld and slurmd started
here, in a temporary folder, and stopped at the end): job arrays with dependencies, a run preempted
(SIGUSR1 before the time limit) and requeued that resumes after its first epoch, and a second
submission that runs nothing again. Skipped, saying why, where the daemons cannot start."""
import glob
import json
import os
import os.path as osp
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.protocols import Job
from harness.slurm import QUEUE_GRACE_SECONDS, SlurmError, current_states, sbatch_options, site_options

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
BENCHMARK = osp.join(REPO, "scripts", "benchmark.py")
FAULT_HOOK = osp.join(REPO, "tests", "fault_hook")
TINY = ("MODEL.BACKBONE.NAME test-tiny MODEL.BACKBONE.WEIGHTS random DATALOADER.NUM_WORKERS 0 "
        "TRAINER.MMADAPTER.PREC fp32 OPTIM.MAX_EPOCH 2")
DAEMONS = ("mungekey", "munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo")
SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def slurm_conf(root, host):
    memory = next(int(line.split()[1]) // 1024 for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    return f"""ClusterName=bench{os.getpid()}
SlurmctldHost={host}
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge.sock
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
ReturnToService=2
MpiDefault=none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName={host} CPUs={os.cpu_count()} RealMemory={max(memory - 512, 256)} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """``{"SLURM_CONF": ...}`` of a running single-node cluster; stops its daemons afterwards."""
    missing = [name for name in DAEMONS if not shutil.which(name, path=SBIN)]
    if missing:
        pytest.skip(f"Slurm is not installed ({', '.join(missing)} missing): apt-get install slurm-wlm munge")
    if os.geteuid() != 0:
        pytest.skip("the single-node Slurm test runs its daemons with SlurmUser=root: run the tests as root")
    root = tmp_path_factory.mktemp("slurm")
    root.chmod(0o700)  # munged refuses key and socket folders others can write to
    (root / "state").mkdir()
    (root / "spool").mkdir()
    host = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip() or socket.gethostname()
    (root / "slurm.conf").write_text(slurm_conf(root, host))
    env = dict(os.environ, SLURM_CONF=str(root / "slurm.conf"), PATH=SBIN)
    subprocess.run(["mungekey", "-c", "-k", str(root / "munge.key")], check=True, capture_output=True)
    daemons = []
    try:
        daemons.append(subprocess.Popen(
            ["munged", "-F", "-f", f"--key-file={root}/munge.key", f"--socket={root}/munge.sock",
             f"--pid-file={root}/munged.pid", f"--log-file={root}/munged.log", f"--seed-file={root}/munged.seed"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        for command in (["slurmctld", "-D", "-c"], ["slurmd", "-D"]):
            daemons.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        deadline = time.time() + 60
        while time.time() < deadline:
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True).stdout
            if state.strip() == "idle":
                break
            if any(daemon.poll() is not None for daemon in daemons):
                break
            time.sleep(0.5)
        else:
            state = "timeout"
        if state.strip() != "idle":
            logs = " | ".join(f"{name}: {(root / name).read_text()[-300:]}" for name in ("slurmctld.log", "slurmd.log")
                              if (root / name).exists())
            pytest.skip(f"the Slurm daemons did not start (node state {state.strip() or 'unknown'}): {logs}")
        yield {"SLURM_CONF": str(root / "slurm.conf"), "PATH": SBIN}
    finally:
        subprocess.run(["scancel", "--full", "-u", "root"], env=env, capture_output=True)
        for daemon in reversed(daemons):
            daemon.terminate()
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()


def queue(env):
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T %r"], env=env, capture_output=True, text=True).stdout
    return {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}


def test_slurm_benchmark_with_a_preempted_and_requeued_run(slurm_cluster, tmp_path, mini_root):
    data = tmp_path / "data"
    data.mkdir()
    os.symlink(osp.join(mini_root, "eurosat"), data / "eurosat")
    output = tmp_path / "out"
    preempted = output / "base2new/train_base/eurosat/shots_1/MultiModalAdapter/vit_b16_ep5/seed1"
    marker = tmp_path / "preempted"
    env = dict(os.environ, **slurm_cluster, DATA=str(data), OUTPUT=str(output), OPTS=TINY,
               PYTHONPATH=os.pathsep.join([FAULT_HOOK, REPO]), FAULT_RUN_DIR=str(preempted),
               FAULT_ACTION="slurm-usr1", FAULT_MARKER=str(marker), OMP_NUM_THREADS="1")
    command = [sys.executable, BENCHMARK, "run", "--trainer", "MultiModalAdapter", "--protocol", "base2new",
               "--seeds", "1", "2", "--datasets", "eurosat", "--shots", "1", "--slurm", "--time", "10",
               "--poll", "1", "--progress-every", "2"]
    run = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    deadline = time.time() + 400
    released = False
    pending_since = None  # when the requeued job was first seen pending
    while run.poll() is None and time.time() < deadline:
        # Slurm holds a requeued job for ~2 minutes (BeginTime); release it sooner, but not within
        # seconds of the requeue: slurmd revokes the old run's credential with one-second resolution,
        # and a new start in that second is killed ("Job credential revoked") and leaves the queue.
        if marker.exists() and not released:
            submission = glob.glob(str(output / "benchmark/slurm/*/submission.json"))
            slurm_id = json.loads(Path(submission[0]).read_text())["runs"][str(preempted.relative_to(output))]
            if queue(slurm_cluster).get(slurm_id, [""])[0] != "PENDING":
                pending_since = None
            elif pending_since is None:
                pending_since = time.time()
            elif time.time() - pending_since >= 3:
                subprocess.run(["scontrol", "update", f"JobId={slurm_id}", "StartTime=now"], env=env, check=True)
                released = True
        time.sleep(0.5)
    if run.poll() is None:
        run.kill()
    stdout, stderr = run.communicate()
    assert run.returncode == 0, stderr[-3000:]
    assert released and "submitted 4 of 4 runs" in stderr
    assert "4/4 finished, 0 running, 0 failed, 0 pending" in stderr
    assert "Base-to-novel | MultiModalAdapter | vit_b16_ep5 | 1 shots" in stdout

    # The preempted training stopped in its second epoch, was requeued, and resumed after epoch 1.
    outputs = glob.glob(str(output / "benchmark/slurm/*/*_0.out"))
    slurm_out = "".join(Path(path).read_text() for path in outputs)
    assert "time limit near: requeued" in slurm_out and "restart 1" in slurm_out
    assert "continuing after epoch 1" in (preempted / "log.txt").read_text()
    assert glob.glob(str(preempted / "log.txt-unfinished-*"))
    runs = sorted(glob.glob(str(output / "base2new/*/eurosat/shots_1/MultiModalAdapter/vit_b16_ep5/seed*")))
    assert len(runs) == 4
    for folder in runs:
        assert (Path(folder) / "finished.json").exists()
        starts = json.loads((Path(folder) / "run.json").read_text())["starts"]
        assert len(starts) == (2 if folder == str(preempted) else 1), folder
        if "train_base" in folder:
            finished_logs = [log for log in glob.glob(osp.join(folder, "log.txt*"))
                             if "Finish training" in Path(log).read_text()]
            assert len(finished_logs) == 1

    # Submitting the same benchmark again runs nothing.
    again = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert again.returncode == 0 and "submitted 0 of 4 runs" in again.stderr, again.stderr
    assert len(glob.glob(str(output / "benchmark/slurm/*/submission.json"))) == 1


def test_site_defaults_file_and_command_line(tmp_path):
    site = tmp_path / "slurm.ini"
    site.write_text("[slurm]\npartition = gpu\ntime = 12:00:00\ngres = gpu:1\nmem = 32G\n"
                    "sbatch_args = --constraint=a100 --qos=normal\n"
                    "setup =\n  module load cuda\n  source env/bin/activate\n")
    options = site_options(str(site), {"time": "1:00:00", "mem": None})
    assert sbatch_options(options) == ["--partition=gpu", "--time=1:00:00", "--gres=gpu:1", "--mem=32G",
                                       "--constraint=a100", "--qos=normal"]
    assert options["setup"] == "module load cuda\nsource env/bin/activate"
    example = site_options(osp.join(REPO, "configs", "slurm.example.ini"))
    assert sbatch_options(example) == ["--partition=gpu", "--time=08:00:00", "--gres=gpu:1", "--mem=32G",
                                       "--cpus-per-task=8"]
    site.write_text("[slurm]\npartitions = gpu\n")
    with pytest.raises(SlurmError, match="unknown key partitions in \\[slurm\\]"):
        site_options(str(site))


def test_a_run_missing_from_the_queue_fails_only_after_the_grace(tmp_path):
    """A requeued task is briefly absent from squeue: while watching it stays pending (and so do the
    runs that depend on it) until it has been missing for QUEUE_GRACE_SECONDS."""
    train = Job("b2n/train/seed1", "base2new", "CoOp", "eurosat", 1, 1, "c", "train")
    test = Job("b2n/test/seed1", "base2new", "CoOp", "eurosat", 1, 1, "c", "test", model=train.id)
    submitted = {train.id: "7_0", test.id: "8_0"}
    missing = {}

    def states(queue, now):
        found = current_states([train, test], str(tmp_path), submitted, queue, missing, now=now)
        return [found[job.id]["state"] for job in (train, test)]

    assert states({"7_0": "RUNNING", "8_0": "PENDING"}, now=0.0) == ["running", "pending"]
    assert states({"8_0": "PENDING"}, now=1.0) == ["pending", "pending"]  # requeue in flight
    assert states({"7_0": "PENDING", "8_0": "PENDING"}, now=2.0) == ["pending", "pending"]  # back
    assert states({}, now=3.0) == ["pending", "pending"]
    assert states({}, now=3.0 + QUEUE_GRACE_SECONDS - 0.5) == ["pending", "pending"]
    assert states({}, now=3.0 + QUEUE_GRACE_SECONDS) == ["failed", "blocked"]
    # a one-off look (no memory of earlier polls): missing means failed
    once = current_states([train, test], str(tmp_path), submitted, {})
    assert once[train.id]["state"] == "failed" and "left the Slurm queue" in once[train.id]["error"]
