"""scripts/common.sh and the method scripts: output layout, skip finished, resume unfinished, test steps."""
import json
import os
import os.path as osp
import shlex
import subprocess

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY = "MODEL.BACKBONE.NAME test-tiny MODEL.BACKBONE.WEIGHTS random DATALOADER.NUM_WORKERS 0 " \
       "OPTIM.MAX_EPOCH 1 TRAINER.MMADAPTER.PREC fp32"


def script(name, *args, env):
    return subprocess.run(["bash", osp.join(REPO, "scripts", name), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def env(mini_root, tmp_path):
    return dict(os.environ, DATA=mini_root, OUTPUT=str(tmp_path / "out"), SHOTS="1", OPTS=TINY, DRY_RUN="1",
                OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")


def printed(proc):
    """The train.py argument lists a DRY_RUN printed."""
    assert proc.returncode == 0, proc.stderr
    commands = [shlex.split(line) for line in proc.stdout.splitlines() if "train.py" in line]
    return [argv[argv.index(osp.join(REPO, "train.py")) + 1:] for argv in commands]  # as helpers.script_runs


def train_dir(env, seed=1):
    return osp.join(env["OUTPUT"], "base2new", "train_base", "caltech101", "shots_1",
                    "MultiModalAdapter", "vit_b16_ep5", f"seed{seed}")


def test_dry_run_prints_the_command_with_the_standard_layout(env):
    (argv,) = printed(script("mma/base2new_train.sh", "caltech101", 1, env=env))
    assert argv[argv.index("--output-dir") + 1] == train_dir(env)
    assert argv[argv.index("--config-file") + 1].endswith("configs/trainers/MultiModalAdapter/vit_b16_ep5.yaml")
    opts = " ".join(argv)
    assert "DATASET.NUM_SHOTS 1 DATASET.SUBSAMPLE_CLASSES base " + TINY in opts and "--seed 1" in opts
    assert not osp.exists(train_dir(env))  # printed, not run
    (imagenet,) = printed(script("mma/base2new_train.sh", "imagenet", 2, env=env))
    assert imagenet[imagenet.index("--config-file") + 1].endswith("MultiModalAdapter/vit_b16_ep5_imnet.yaml")


def test_method_options_and_layouts_come_from_the_protocol_table(env):
    env["OPTS"] = TINY + " TRAINER.COOP.CTX_INIT 'a photo of a'"  # shell words: a quoted value stays one word
    (few,) = printed(script("mmrl/few_shot.sh", "eurosat", 2, 4, env=env))
    assert few[few.index("--output-dir") + 1] == osp.join(env["OUTPUT"], "few_shot", "eurosat", "shots_4", "MMRL",
                                                           "vit_b16_few_shot", "seed2")
    assert few[-len(TINY.split()) - 6:-len(TINY.split()) - 2] == ["DATASET.NUM_SHOTS", "4", "TASK", "FS"]
    assert few[-2:] == ["TRAINER.COOP.CTX_INIT", "a photo of a"]
    (xd,) = printed(script("mmrl/xd_train.sh", 3, env=env))
    assert xd[xd.index("--output-dir") + 1] == osp.join(env["OUTPUT"], "imagenet", "MMRL",
                                                         "vit_b16_cross_datasets_1shots", "seed3")
    assert "TASK CD" in " ".join(xd) and "REG_WEIGHT" not in " ".join(xd)  # λ 0.2: the YAML's table entry
    (zs,) = printed(script("zsclip/zeroshot.sh", "dtd", "vit_b16", "new", env=env))
    assert zs[zs.index("--output-dir") + 1] == osp.join(env["OUTPUT"], "zeroshot", "dtd", "ZeroshotCLIP",
                                                         "vit_b16_new")
    assert "--eval-only" in zs and "--seed" not in zs


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
    assert "finished, so skip" in script("mma/base2new_train.sh", "caltech101", 1, env=env).stdout
    resumed = script("mma/base2new_train.sh", "caltech101", 2, env=env)
    assert "Resuming the unfinished run" in resumed.stdout
    assert [argv[argv.index("--output-dir") + 1] for argv in printed(resumed)] == [unfinished]
    skipped = script("mma/base2new_train.sh", "caltech101", 3, env=env)
    assert "finished, so skip" in skipped.stdout and printed(skipped) == []


def test_test_step_refuses_an_unfinished_training_run(env):
    write_record(train_dir(env), finished=False)
    proc = script("mma/base2new_test.sh", "caltech101", 1, env=env)
    assert proc.returncode != 0 and proc.stdout == ""
    assert proc.stderr.startswith("error: training of") and "is not finished" in proc.stderr


def test_train_then_test_step_run(env):
    env.pop("DRY_RUN")
    for step in ("train", "test"):  # the test step loads the newest checkpoint of the finished training
        proc = script(f"mma/base2new_{step}.sh", "caltech101", 1, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
    test_dir = train_dir(env).replace("train_base", "test_new")
    with open(osp.join(test_dir, "log.txt")) as f:
        log = f.read()
    assert "load_epoch: 1" in log  # the newest checkpoint, epoch 1
    assert "SUBSAMPLE NEW CLASSES!" in log and "* accuracy:" in log
    with open(osp.join(train_dir(env), "log.txt")) as f:
        assert "Finish training" in f.read()
    assert "finished, so skip" in script("mma/base2new_test.sh", "caltech101", 1, env=env).stdout


def test_test_step_loads_model_best_if_saved_else_the_newest_epoch(env):
    trained = train_dir(env)
    write_record(trained, finished=True)
    os.makedirs(osp.join(trained, "adapter_learner"))
    with open(osp.join(trained, "adapter_learner", "checkpoint"), "w") as f:
        f.write("model.pth.tar-3\n")
    (latest,) = printed(script("mma/base2new_test.sh", "caltech101", 1, env=env))
    open(osp.join(trained, "adapter_learner", "model-best.pth.tar"), "w").close()  # a best-val run
    (best,) = printed(script("mma/base2new_test.sh", "caltech101", 1, env=env))
    assert latest[latest.index("--load-epoch") + 1] == "3"
    assert "--load-epoch" not in best and best[best.index("--model-dir") + 1] == trained
