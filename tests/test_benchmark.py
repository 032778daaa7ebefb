"""scripts/benchmark.py and harness/protocols.py: the protocols' runs, the layout round trip through
the shell scripts and the parser, and the local runner (failures, a worker killed mid-run, restart)."""
import glob
import json
import os
import os.path as osp
import subprocess
import sys
from pathlib import Path

import pytest

from harness import protocols
from harness.protocols import B2N_DATASETS, DG_TARGETS, FEWSHOT_SHOTS, METHODS, XD_TARGETS
from harness.runner import Progress, StatusFile
from harness.tables import build_tables, collect_groups

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
BENCHMARK = osp.join(REPO, "scripts", "benchmark.py")
FAULT_HOOK = osp.join(REPO, "tests", "fault_hook")
TINY = ("MODEL.BACKBONE.NAME test-tiny MODEL.BACKBONE.WEIGHTS random DATALOADER.NUM_WORKERS 0 "
        "TRAINER.MMRL.PREC fp32 TRAINER.MMADAPTER.PREC fp32")


# ---------------------------------------------------------------------------------------------
# The planner
# ---------------------------------------------------------------------------------------------

def expected_runs(trainer, protocol, seeds=3):
    """Runs per protocol: trainings and their evaluations; zero-shot trainers evaluate once (one seed)."""
    if METHODS[trainer].eval_only:
        return {"base2new": 2 * len(B2N_DATASETS), "xd": 1 + len(XD_TARGETS + DG_TARGETS),
                "fewshot": len(B2N_DATASETS)}[protocol]
    return {"base2new": 2 * len(B2N_DATASETS) * seeds, "xd": (1 + len(XD_TARGETS + DG_TARGETS)) * seeds,
            "fewshot": len(B2N_DATASETS) * len(FEWSHOT_SHOTS) * seeds}[protocol]


@pytest.mark.parametrize("protocol", protocols.PROTOCOLS)
@pytest.mark.parametrize("trainer", list(METHODS))
def test_plan_counts_and_dependencies(trainer, protocol):
    jobs = protocols.plan(trainer, protocol)
    assert len(jobs) == expected_runs(trainer, protocol)
    assert len({job.id for job in jobs}) == len(jobs)
    position = {job.id: index for index, job in enumerate(jobs)}
    trainings = [job for job in jobs if job.kind == "train"]
    for job in jobs:
        assert job.kind == "test" or not job.deps  # trainings depend on nothing
        for dep in job.deps:
            model = jobs[position[dep]]
            assert model.kind == "train" and position[dep] < position[job.id] and model.seed == job.seed
            assert model.dataset == (job.dataset if protocol == "base2new" else "imagenet")
    if METHODS[trainer].eval_only:
        assert trainings == [] and {job.seed for job in jobs} == {1}
    elif protocol == "base2new":
        assert len(trainings) == 33 and all(len(job.deps) == 1 for job in jobs if job.kind == "test")
    elif protocol == "xd":
        assert [job.dataset for job in trainings] == ["imagenet"] * 3
        assert sum(job.deps == (trainings[0].id,) for job in jobs) == 14  # 10 datasets + 4 variants per model
    else:
        assert len(trainings) == 165 and sorted({job.shots for job in jobs}) == list(FEWSHOT_SHOTS)


def test_plan_uses_each_methods_configs_and_options():
    b2n = {(job.dataset, job.kind): job for job in protocols.plan("MultiModalAdapter", "base2new", [1])}
    assert b2n["imagenet", "train"].cfg == "vit_b16_ep5_imnet" and b2n["dtd", "train"].cfg == "vit_b16_ep5"
    mmrl_xd = protocols.plan("MMRL", "xd", [1], ["eurosat"])
    assert [job.dataset for job in mmrl_xd] == ["imagenet", "eurosat"]
    assert mmrl_xd[0].opts == ("DATASET.NUM_SHOTS", "16", "TASK", "CD")  # λ 0.2, d_r 512: in the YAML
    assert mmrl_xd[1].opts == ("TASK", "CD")
    coop = {(job.dataset, job.shots): job.cfg for job in protocols.plan("CoOp", "fewshot", [1])}
    assert [coop["dtd", k] for k in FEWSHOT_SHOTS] == ["vit_b16_ep50", "vit_b16_ep100", "vit_b16_ep100",
                                                       "vit_b16", "vit_b16"]
    assert {coop["imagenet", k] for k in FEWSHOT_SHOTS} == {"vit_b16_ep50"}
    zs = protocols.plan("ZeroshotCLIP2", "fewshot", [2, 3], ["eurosat"])
    assert [(job.kind, job.shots, job.seed) for job in zs] == [("test", 0, 2)]
    argv = protocols.job_argv(zs[0], "/out", "/data")
    assert argv[argv.index("--config-file") + 1].endswith("configs/trainers/ZeroshotCLIP/vit_b16.yaml")
    assert "--eval-only" in argv and "--model-dir" not in argv
    with pytest.raises(ValueError, match="unknown trainer"):
        protocols.plan("NoSuchTrainer", "base2new")
    with pytest.raises(ValueError, match="not in this protocol"):
        protocols.plan("MMRL", "base2new", datasets=["imagenet_a"])


def test_config_files_exist_for_every_registered_trainer():
    """Entries for trainers not in this checkout yet (added on other branches) are checked once they are."""
    import trainers  # noqa: F401
    from dassl.engine import TRAINER_REGISTRY

    registered = [name for name in METHODS if name in TRAINER_REGISTRY]
    assert {"ZeroshotCLIP", "MultiModalAdapter", "MMRL", "CLIP_Adapter", "AttnMMAdapter"} <= set(registered)
    for name in registered:
        for protocol in protocols.PROTOCOLS:
            for cfg in METHODS[name].step(protocol).all_cfgs():
                assert osp.isfile(protocols.config_file(name, cfg)), (name, protocol, cfg)


# ---------------------------------------------------------------------------------------------
# The layout, round trip: planner = shell scripts' folders, and the parser reads them back
# ---------------------------------------------------------------------------------------------

def script_dir(job, output):
    """The folder the shell scripts' helper (scripts/common.sh) uses for the job's step."""
    step = {("base2new", "train"): "b2n_train", ("base2new", "test"): "b2n_test", ("xd", "train"): "xd_train",
            ("xd", "test"): "xd_test", ("fewshot", "train"): "fewshot_train"}[job.protocol, job.kind]
    args = protocols.build_parser().parse_args([
        "command", f"--step={step}", f"--trainer={job.trainer}", f"--dataset={job.dataset}", f"--seed={job.seed}",
        f"--shots={job.shots}", f"--output={output}"])
    return protocols.script_step(args)[1]


def write_finished_run(folder, kind, accuracy):
    """A finished run as train.py leaves it: record, finished marker, checkpoint pointer, a log with its result."""
    os.makedirs(osp.join(folder, "learner"), exist_ok=True)
    with open(osp.join(folder, "learner", "checkpoint"), "w") as f:
        f.write("model.pth.tar-1\n")
    with open(osp.join(folder, "run.json"), "w") as f:
        json.dump({"run_id": "r", "kind": kind, "config_hash": "h", "starts": [], "identity": {}}, f)
    with open(osp.join(folder, "finished.json"), "w") as f:
        json.dump({"run_id": "r", "config_hash": "h", "result": {"accuracy": accuracy}}, f)
    lines = ["epoch [1/1] batch [1/1]", "Finish training"] if kind == "train" else []
    with open(osp.join(folder, "log.txt"), "w") as f:
        f.write("\n".join(lines + ["=> result", f"* accuracy: {accuracy}%", ""]))


@pytest.mark.parametrize("trainer", ["MultiModalAdapter", "MMRL", "ZeroshotCLIP", "CoOp"])
def test_layout_round_trip_scripts_runner_parser(tmp_path, trainer):
    output = str(tmp_path)
    jobs = []
    for protocol in protocols.PROTOCOLS:
        jobs += protocols.plan(trainer, protocol, [1, 2], ["imagenet", "eurosat"], [1, 4] if protocol == "fewshot"
                               else None)
    for job in jobs:
        if not METHODS[trainer].eval_only:  # zero-shot runs have no protocol scripts
            assert script_dir(job, output) == osp.join(output, job.id)
        place = protocols.place_of(Path(job.id).parts[:-1])
        assert (place.dataset, place.trainer, place.cfg) == (job.dataset, trainer, job.cfg)
        # (the ImageNet source folder may hold either kind: zero-shot evaluates there; its record says which)
        assert place.eval_only == (job.kind == "test") or place.side == "source"
        write_finished_run(osp.join(output, job.id), job.kind, 50.0 + job.seed)
    groups, ignored = collect_groups(output)
    assert ignored == []
    tables = {table.protocol: table for table in build_tables(groups)}
    assert set(tables) == {"base2new", "cross_dataset", "few_shot"}  # eurosat is no DG target
    seeds = 1 if METHODS[trainer].eval_only else 2
    b2n = tables["base2new"]
    assert [row.dataset for row in b2n.rows] == ["imagenet", "eurosat", "average"]
    assert b2n.rows[0].metric("new").mean == (51.5 if seeds == 2 else 51.0)
    assert b2n.rows[0].metric("base").seeds == seeds and b2n.key.config == METHODS[trainer].base2new.cfg
    assert [row.dataset for row in tables["cross_dataset"].rows] == ["imagenet", "eurosat", "average"]
    few = tables["few_shot"]
    assert few.metric_names == (("shots_0",) if METHODS[trainer].eval_only else ("shots_1", "shots_4"))
    assert [row.dataset for row in few.rows] == ["imagenet", "eurosat", "average"]


# ---------------------------------------------------------------------------------------------
# Progress and status file
# ---------------------------------------------------------------------------------------------

def test_eta_from_finished_durations_and_parallel_workers():
    progress = Progress(total=10, slots=2, stream=open(os.devnull, "w"))
    assert progress.eta([("train", 0.0)]) is None  # nothing finished yet
    for seconds in (10.0, 30.0):
        progress.add_duration("train", seconds)
    progress.add_duration("test", 4.0)
    # 3 trainings (one 5 s in) and 2 evaluations on 2 workers: (20 + 20 + 15 + 4 + 4) / 2
    assert progress.eta([("train", 0.0), ("train", 0.0), ("train", 5.0), ("test", 0.0), ("test", 0.0)]) == 31.5
    line = progress.line({"finished": 3, "running": 2, "failed": 1, "pending": 4}, [("test", 0.0)])
    assert line.startswith("[benchmark] 3/10 finished, 2 running, 1 failed, 4 pending | elapsed ")
    assert line.endswith("| ETA 0m02s")


def test_status_file_merges_entries_of_several_commands(tmp_path):
    status = StatusFile(str(tmp_path))
    status.update({"a": {"state": "failed", "error": "boom"}, "b": {"state": "finished"}})
    status.update({"b": {"state": "running"}, "c": {"state": "pending"}})
    content = json.loads(Path(status.path).read_text())
    assert content["runs"] == {"a": {"state": "failed", "error": "boom"}, "b": {"state": "running"},
                               "c": {"state": "pending"}}
    assert content["counts"] == {"finished": 0, "running": 1, "failed": 1, "blocked": 0, "pending": 1}
    assert status.failures() == {"a": "boom"}


# ---------------------------------------------------------------------------------------------
# The local runner
# ---------------------------------------------------------------------------------------------

def benchmark(*args, env, timeout=600):
    return subprocess.run([sys.executable, BENCHMARK, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def completed_trainings(folder):
    """Logs (current and kept) of a training run that reached the end of training."""
    return [log for log in glob.glob(osp.join(folder, "log.txt*")) if "Finish training" in Path(log).read_text()]


def test_usage_errors_are_one_line_before_any_work(tmp_path):
    env = dict(os.environ, OUTPUT=str(tmp_path / "out"), DATA=str(tmp_path))
    for args, message in ((["--trainer", "Nope"], 'unknown trainer "Nope"'),
                          (["--trainer", "MMRL", "--datasets", "mars"], "mars not in this protocol"),
                          (["--trainer", "MMRL", "--gpus", "0,cpu"], "--gpus takes GPU indices"),
                          (["--trainer", "MMRL", "--opts", "OPTIM.LR"], "KEY VALUE pairs")):
        proc = benchmark("run", "--protocol", "xd", "--gpus", "cpu", *args, env=env)
        assert proc.returncode == 2 and proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr
    assert not osp.exists(tmp_path / "out")


def test_local_runner_survives_failures_and_a_killed_worker_then_restarts(tmp_path, mini_root):
    """Two trainers x two seeds, base-to-novel on eurosat (and dtd, whose data is missing: its
    trainings fail, its evaluations are blocked, the rest goes on). One worker is killed (SIGKILL)
    right after the first epoch of a training: a new worker resumes it. Restarting the command then
    runs nothing. Each run completed exactly once."""
    data = tmp_path / "data"
    data.mkdir()
    os.symlink(osp.join(mini_root, "eurosat"), data / "eurosat")
    output = tmp_path / "out"
    killed = output / "base2new/train_base/eurosat/shots_1/MMRL/vit_b16/seed1"
    env = dict(os.environ, DATA=str(data), OUTPUT=str(output), OPTS=TINY + " OPTIM.MAX_EPOCH 2",
               PYTHONPATH=os.pathsep.join([FAULT_HOOK, REPO]), FAULT_RUN_DIR=str(killed), FAULT_ACTION="kill",
               FAULT_MARKER=str(tmp_path / "killed"))
    args = ["--trainer", "MMRL", "MultiModalAdapter", "--protocol", "base2new", "--seeds", "1", "2", "--shots", "1",
            "--gpus", "cpu", "--jobs", "2"]
    first = benchmark("run", *args, "--datasets", "eurosat", "dtd", env=env)
    assert first.returncode == 1, first.stderr[-3000:]
    assert osp.exists(tmp_path / "killed")
    assert f"died (killed by signal SIGKILL) while running {killed.relative_to(output)}" in first.stderr
    assert "FAILED base2new/train_base/dtd/shots_1/MMRL/vit_b16/seed1: ConfigError: DescribableTextures" \
           in first.stderr
    assert f"log: {output}/base2new/train_base/dtd/shots_1/MMRL/vit_b16/seed1/log.txt" in first.stderr
    assert "8 run(s) did not finish" in first.stderr and "blocked: its training" in first.stderr
    status = json.loads((output / "benchmark_status.json").read_text())
    assert status["counts"] == {"finished": 8, "running": 0, "failed": 4, "blocked": 4, "pending": 0}
    assert "Base-to-novel | MMRL | vit_b16 | 1 shots" in first.stdout
    assert "Base-to-novel | MultiModalAdapter | vit_b16_ep5 | 1 shots" in first.stdout

    # The killed training resumed after its first epoch, in a second start; all the others ran once.
    assert glob.glob(str(killed / "log.txt-unfinished-*"))
    assert "continuing after epoch 1" in (killed / "log.txt").read_text()
    finished = sorted(glob.glob(str(output / "base2new/*/eurosat/shots_1/*/*/seed*/finished.json")))
    assert len(finished) == 8
    for marker in finished:
        folder = osp.dirname(marker)
        starts = json.loads(Path(folder, "run.json").read_text())["starts"]
        assert len(starts) == (2 if folder == str(killed) else 1), folder
        if "train_base" in folder:
            assert len(completed_trainings(folder)) == 1, folder

    env.pop("FAULT_RUN_DIR")
    again = benchmark("run", *args, "--datasets", "eurosat", env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "8/8 finished, 0 running, 0 failed, 0 pending" in again.stderr
    assert "eurosat" in again.stdout and "Base-to-novel | MMRL | vit_b16 | 1 shots" in again.stdout
    assert sorted(glob.glob(str(output / "base2new/*/eurosat/shots_1/*/*/seed*/finished.json"))) == finished
    for marker in finished:
        assert len(json.loads(Path(osp.dirname(marker), "run.json").read_text())["starts"]) <= 2

    listing = benchmark("status", *args[:-4], "--datasets", "eurosat", "dtd", env=env)
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["STATE", "RUN", "LOG"]
    assert sum(line.startswith("finished ") for line in lines) == 8
    assert any(line.startswith("failed ") and "train_base/dtd" in line and "ConfigError" in line
               for line in lines)
    assert sum(line.startswith("blocked ") for line in lines) == 4
