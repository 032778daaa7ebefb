"""scripts/common.sh and run_queue.py: output layout, skip finished, resume unfinished, queued runs."""
import json
import os
import os.path as osp
import shlex
import subprocess
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY = "MODEL.BACKBONE.NAME test-tiny MODEL.BACKBONE.WEIGHTS random DATALOADER.NUM_WORKERS 0 " \
       "OPTIM.MAX_EPOCH 1 TRAINER.MMADAPTER.PREC fp32"


def script(name, *args, env):
    return subprocess.run(["bash", osp.join(REPO, "scripts", name), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def env(mini_root, tmp_path):
    return dict(os.environ, DATA=mini_root, OUTPUT=str(tmp_path / "out"), SHOTS="1", OPTS=TINY,
                RUN_QUEUE=str(tmp_path / "queue.txt"), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")


def queued(env):
    with open(env["RUN_QUEUE"]) as f:
        return [shlex.split(line) for line in f if line.strip()]


def train_dir(env, seed=1):
    return osp.join(env["OUTPUT"], "base2new", "train_base", "caltech101", "shots_1",
                    "MultiModalAdapter", "vit_b16_ep5", f"seed{seed}")


def test_queue_mode_writes_the_command_with_the_standard_layout(env):
    open(env["RUN_QUEUE"], "w").close()
    proc = script("mma/base2new_train.sh", "caltech101", 1, env=env)
    assert proc.returncode == 0, proc.stderr
    (argv,) = queued(env)
    assert argv[0] == osp.join(REPO, "train.py")
    assert argv[argv.index("--output-dir") + 1] == train_dir(env)
    assert argv[argv.index("--config-file") + 1].endswith("configs/trainers/MultiModalAdapter/vit_b16_ep5.yaml")
    opts = " ".join(argv)
    assert "DATASET.NUM_SHOTS 1 DATASET.SUBSAMPLE_CLASSES base" in opts and "--seed 1" in opts
    assert not osp.exists(train_dir(env))  # queued, not run


def write_record(folder, finished):
    """A run record as train.py writes it (harness.run), with or without its finished marker."""
    os.makedirs(folder, exist_ok=True)
    with open(osp.join(folder, "run.json"), "w") as f:
        json.dump({"run_id": "r1", "kind": "train", "config_hash": "abc", "command": "python train.py ..."}, f)
    if finished:
        with open(osp.join(folder, "finished.json"), "w") as f:
            json.dump({"run_id": "r1", "config_hash": "abc", "result": {"accuracy": 50.0}}, f)


def test_finished_runs_are_skipped_and_unfinished_ones_resume(env):
    finished, unfinished, legacy = train_dir(env, 1), train_dir(env, 2), train_dir(env, 3)
    write_record(finished, finished=True)
    write_record(unfinished, finished=False)
    os.makedirs(legacy)  # written by an older version: no run record, but a finished training log
    with open(osp.join(legacy, "log.txt"), "w") as f:
        f.write("epoch [5/5] batch [1/6] ...\nFinish training\nDeploy the last-epoch model\n=> result\n"
                "* accuracy: 50.0%\n")
    open(env["RUN_QUEUE"], "w").close()
    assert "finished, so skip" in script("mma/base2new_train.sh", "caltech101", 1, env=env).stdout
    assert "Resuming the unfinished run" in script("mma/base2new_train.sh", "caltech101", 2, env=env).stdout
    assert "finished, so skip" in script("mma/base2new_train.sh", "caltech101", 3, env=env).stdout
    assert [a[a.index("--output-dir") + 1] for a in queued(env)] == [unfinished]


def test_test_step_refuses_an_unfinished_training_run(env):
    write_record(train_dir(env), finished=False)
    open(env["RUN_QUEUE"], "w").close()
    proc = script("mma/base2new_test.sh", "caltech101", 1, env=env)
    assert proc.returncode != 0 and "training of" in proc.stderr and "is not finished" in proc.stderr
    assert queued(env) == []


def test_queued_train_then_test_run_in_one_process(env):
    for step in ("train", "test"):  # the test step needs the checkpoint: queued after training ran
        open(env["RUN_QUEUE"], "w").close()
        proc = script(f"mma/base2new_{step}.sh", "caltech101", 1, env=env)
        assert proc.returncode == 0, proc.stderr
        run = subprocess.run([sys.executable, osp.join(REPO, "scripts", "run_queue.py"), env["RUN_QUEUE"]],
                             env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        assert "[1/1]" in run.stderr
    test_dir = train_dir(env).replace("train_base", "test_new")
    with open(osp.join(test_dir, "log.txt")) as f:
        log = f.read()
    assert "--load-epoch 1" not in log and "load_epoch: 1" in log  # the newest checkpoint, epoch 1
    assert "SUBSAMPLE NEW CLASSES!" in log and "* accuracy:" in log
    with open(osp.join(train_dir(env), "log.txt")) as f:
        assert "Finish training" in f.read()


def test_test_step_loads_model_best_if_saved_else_the_newest_epoch(env):
    trained = train_dir(env)
    write_record(trained, finished=True)
    os.makedirs(osp.join(trained, "adapter_learner"))
    with open(osp.join(trained, "adapter_learner", "checkpoint"), "w") as f:
        f.write("model.pth.tar-3\n")
    open(env["RUN_QUEUE"], "w").close()
    assert script("mma/base2new_test.sh", "caltech101", 1, env=env).returncode == 0
    open(osp.join(trained, "adapter_learner", "model-best.pth.tar"), "w").close()  # a best-val run
    assert script("mma/base2new_test.sh", "caltech101", 1, env=env).returncode == 0
    latest, best = queued(env)
    assert latest[latest.index("--load-epoch") + 1] == "3"
    assert "--load-epoch" not in best and best[best.index("--model-dir") + 1] == trained
