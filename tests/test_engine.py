"""The Dassl-compatible engine: config merge order, schedules, checkpoints, resume, logs, errors."""
import math
import os
import os.path as osp
import random
import re

import pytest
import torch

import toy
import train
from dassl.config import get_cfg_default
from dassl.data.datasets import Datum, DatasetBase
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils import load_checkpoint, resume_from_checkpoint, set_random_seed, setup_logger
from harness.preflight import ConfigError
from helpers import read, run_train


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    return toy.make_toy_root(str(tmp_path_factory.mktemp("toy")))


def probe_args(root, out, *opts, epochs=3, flags=()):
    return ["--root", root, "--trainer", "ToyProbe", "--output-dir", out, "--seed", "1", *flags,
            "DATASET.NAME", "ToyColours", "DATALOADER.NUM_WORKERS", "0", "INPUT.SIZE", "(32, 32)",
            "INPUT.TRANSFORMS", "('random_flip', 'normalize')",
            "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "OPTIM.NAME", "sgd", "OPTIM.LR", "0.1",
            "OPTIM.MAX_EPOCH", str(epochs), "OPTIM.LR_SCHEDULER", "cosine", *opts]


# ---------------------------------------------------------------- config


def test_merge_order_defaults_yaml_flags_opts(tmp_path):
    ds_yaml = tmp_path / "ds.yaml"
    ds_yaml.write_text("DATASET:\n  NAME: ToyColours\nOPTIM:\n  LR: 0.1\n  MAX_EPOCH: 2\nSEED: 3\n")
    method_yaml = tmp_path / "m.yaml"
    method_yaml.write_text("OPTIM:\n  LR: 0.2\n  WEIGHT_DECAY: 0.01\nSEED: 4\n")
    parser = train.build_parser()
    args = parser.parse_args(["--dataset-config-file", str(ds_yaml), "--config-file", str(method_yaml),
                              "--trainer", "ZeroshotCLIP", "--seed", "5", "OPTIM.WEIGHT_DECAY", "0.5"])
    cfg = train.setup_cfg(args)
    assert cfg.OPTIM.MAX_EPOCH == 2  # dataset YAML over defaults
    assert cfg.OPTIM.LR == 0.2  # method YAML over dataset YAML
    assert cfg.SEED == 5  # flag over YAML
    assert cfg.OPTIM.WEIGHT_DECAY == 0.5  # opts over everything
    assert cfg.DATASET.SUBSAMPLE_CLASSES == "all" and cfg.MODEL.BACKBONE.WEIGHTS == ""  # extend_cfg
    args = parser.parse_args(["--dataset-config-file", str(ds_yaml), "--trainer", "ZeroshotCLIP",
                              "--seed", "5", "SEED", "9"])
    assert train.setup_cfg(args).SEED == 9  # opts over flag
    args = parser.parse_args(["--dataset-config-file", str(ds_yaml), "--trainer", "ZeroshotCLIP", "--seed", "0"])
    assert train.setup_cfg(args).SEED == 3  # --seed 0 is ignored, as upstream


def test_cfg_default_is_a_fresh_copy():
    a = get_cfg_default()
    a.OPTIM.LR = 123.0
    assert get_cfg_default().OPTIM.LR == 0.0003


def cli_error(capsys, argv):
    with pytest.raises(SystemExit) as e:
        train.cli(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_unknown_trainer_dataset_and_key_are_one_line_errors(capsys, tmp_path):
    err = cli_error(capsys, ["--trainer", "ZeroShotClip", "DATASET.NAME", "Caltech101"])
    assert 'Unknown trainer (--trainer) "ZeroShotClip"' in err and "ZeroshotCLIP" in err
    err = cli_error(capsys, ["--trainer", "ZeroshotCLIP", "DATASET.NAME", "Caltech"])
    assert 'Unknown dataset (DATASET.NAME) "Caltech"' in err and "Caltech101" in err
    err = cli_error(capsys, ["--trainer", "ZeroshotCLIP", "OPTIM.LRR", "0.1"])
    assert "Unknown config key OPTIM.LRR" in err and "LR_SCHEDULER" in err
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("OPTIM:\n  NAMEE: sgd\n")
    err = cli_error(capsys, ["--trainer", "ZeroshotCLIP", "--config-file", str(bad_yaml)])
    assert "OPTIM.NAMEE" in err and str(bad_yaml) in err
    err = cli_error(capsys, ["--trainer", "ZeroshotCLIP", "--config-file", str(tmp_path / "missing.yaml")])
    assert "missing.yaml" in err
    err = cli_error(capsys, ["--trainer", "ZeroshotCLIP", "OPTIM.LR", "1"])  # int for a float key
    assert "OPTIM.LR" in err and "Type mismatch" in err and "(0.0003 vs. 1)" in err


# ---------------------------------------------------------------- schedules


def lrs_per_epoch(epochs, **optim):
    cfg = get_cfg_default()
    for k, v in optim.items():
        setattr(cfg.OPTIM, k, v)
    cfg.OPTIM.MAX_EPOCH = epochs
    opt = build_optimizer(torch.nn.Linear(2, 2), cfg.OPTIM)
    sched = build_lr_scheduler(opt, cfg.OPTIM)
    lrs = []
    for _ in range(epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()  # once per epoch, after the last batch
    return lrs


@pytest.mark.parametrize("optim, epochs, expected", [
    (dict(NAME="sgd", LR=0.002, LR_SCHEDULER="cosine", WARMUP_EPOCH=1, WARMUP_TYPE="constant", WARMUP_CONS_LR=1e-5),
     10, [1e-5, 0.002, 0.0019511, 0.0018090, 0.0015878, 0.0013090, 0.001, 0.00069098, 0.00041221, 0.00019098]),
    (dict(NAME="sgd", LR=0.0015, LR_SCHEDULER="cosine", WARMUP_EPOCH=0),
     5, [0.0015, 0.0013568, 0.00098176, 0.00051824, 0.00014324]),
    (dict(NAME="sgd", LR=1e-3, LR_SCHEDULER="cosine", WARMUP_EPOCH=1, WARMUP_TYPE="constant", WARMUP_CONS_LR=1e-5),
     10, [1e-5, 1e-3, 9.755e-4, 9.045e-4, 7.939e-4, 6.545e-4, 5.0e-4, 3.455e-4, 2.061e-4, 9.55e-5]),
    (dict(NAME="sgd", LR=1e-3, LR_SCHEDULER="cosine", WARMUP_EPOCH=1, WARMUP_TYPE="constant", WARMUP_CONS_LR=1e-5),
     5, [1e-5, 1e-3, 9.045e-4, 6.545e-4, 3.455e-4]),
    (dict(NAME="adam", LR=0.002, LR_SCHEDULER="cosine", WARMUP_EPOCH=3, WARMUP_TYPE="linear", WARMUP_MIN_LR=1e-5),
     5, [1e-5, 6.667e-4, 1.333e-3, 0.002, 0.002 * 0.5 * (1 + math.cos(math.pi / 5))]),
    (dict(NAME="sgd", LR=0.1, LR_SCHEDULER="single_step", STEPSIZE=(2,), GAMMA=0.1), 4, [0.1, 0.1, 0.01, 0.01]),
    (dict(NAME="sgd", LR=0.1, LR_SCHEDULER="multi_step", STEPSIZE=(1, 3), GAMMA=0.5), 4, [0.1, 0.05, 0.05, 0.025]),
])
def test_lr_per_epoch_matches_spec(optim, epochs, expected):
    assert lrs_per_epoch(epochs, **optim) == pytest.approx(expected, rel=1e-3)


def test_warmup_scheduler_state_is_plain_data(tmp_path):
    cfg = get_cfg_default()
    cfg.OPTIM.update(dict(NAME="sgd", LR=0.002, LR_SCHEDULER="cosine", WARMUP_EPOCH=1, WARMUP_TYPE="constant"))
    opt = build_optimizer(torch.nn.Linear(2, 2), cfg.OPTIM)
    sched = build_lr_scheduler(opt, cfg.OPTIM)
    for _ in range(3):
        opt.step()
        sched.step()
    torch.save(sched.state_dict(), tmp_path / "s.pt")
    state = torch.load(tmp_path / "s.pt", weights_only=True)  # no pickled objects
    opt2 = build_optimizer(torch.nn.Linear(2, 2), cfg.OPTIM)
    sched2 = build_lr_scheduler(opt2, cfg.OPTIM)
    sched2.load_state_dict(state)
    opt2.load_state_dict(opt.state_dict())  # cosine is recursive on the optimizer's current lr
    opt.step(); sched.step(); opt2.step(); sched2.step()
    assert sched2.get_last_lr() == pytest.approx(sched.get_last_lr())


def test_unknown_optimizer_and_scheduler():
    cfg = get_cfg_default()
    cfg.OPTIM.NAME = "adagrad"
    with pytest.raises(ValueError, match="adagrad"):
        build_optimizer(torch.nn.Linear(2, 2), cfg.OPTIM)
    cfg.OPTIM.NAME, cfg.OPTIM.LR_SCHEDULER = "sgd", "poly"
    with pytest.raises(ValueError, match="poly"):
        build_lr_scheduler(build_optimizer(torch.nn.Linear(2, 2), cfg.OPTIM), cfg.OPTIM)


# ---------------------------------------------------------------- data


def test_fewshot_sampling_is_deterministic_per_seed(toy_root):
    root = osp.join(toy_root, "toy")
    items = [Datum(osp.join(root, c, f), label=i, classname=c)
             for i, c in enumerate(toy.TOY_CLASSES) for f in sorted(os.listdir(osp.join(root, c)))]
    base = DatasetBase(train_x=items, test=items)

    def sample(seed, k):
        set_random_seed(seed)
        return [d.impath for d in base.generate_fewshot_dataset(items, num_shots=k)]

    assert sample(1, 2) == sample(1, 2)
    assert sample(1, 2) != sample(2, 2)
    assert len(sample(1, 2)) == 2 * len(toy.TOY_CLASSES)
    assert len(sample(1, 100)) == len(items)  # fewer items than shots: all of them
    assert base.generate_fewshot_dataset(items, num_shots=-1) is items


def test_datum_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        Datum(str(tmp_path / "nope.jpg"), 0, classname="x")


def test_corrupt_image_error_and_skip(toy_root, tmp_path):
    import shutil
    root = str(tmp_path / "root")
    shutil.copytree(toy_root, root)
    bad = osp.join(root, "toy", "blue_sky", "1.png")  # a test image
    with open(bad, "wb") as f:
        f.write(b"not an image")
    def zs(out, *opts):
        return ["--root", root, "--trainer", "ZeroshotCLIP", "--eval-only", "--output-dir", out,
                "DATASET.NAME", "ToyColours", "DATALOADER.NUM_WORKERS", "0",
                "MODEL.BACKBONE.NAME", "test-tiny", "MODEL.BACKBONE.WEIGHTS", "random", *opts]
    with pytest.raises(RuntimeError, match="1.png.*SKIP_BAD_IMAGES"):
        run_train(zs(str(tmp_path / "a")))
    with pytest.warns(UserWarning, match="Skipping unreadable image"):
        run_train(zs(str(tmp_path / "b"), "DATASET.SKIP_BAD_IMAGES", "True"))
    assert "* total: 11" in read(tmp_path / "b" / "log.txt")


# ---------------------------------------------------------------- training, checkpoints, resume, logs


def test_training_log_checkpoint_and_format(toy_root, tmp_path):
    out = str(tmp_path / "run")
    run_train(probe_args(toy_root, out))
    log = read(osp.join(out, "log.txt"))
    lines = log.splitlines()
    for expected in ["Dataset    ToyColours", "# classes  4", "# train_x  12", "# test     12"]:
        assert expected in lines
    tail = lines[lines.index("Finish training"):]
    assert tail[1:4] == ["Deploy the last-epoch model", "Evaluate on the *test* set", "=> result"]
    assert tail[4] == "* total: 12"
    assert tail[5].startswith("* correct: ")
    acc = float(tail[6].removeprefix("* accuracy: ").removesuffix("%"))
    assert tail[6] == f"* accuracy: {acc:.1f}%" and tail[7] == f"* error: {100 - acc:.1f}%"
    assert tail[8].startswith("* macro_f1: ") and re.fullmatch(r"Elapsed: \d+:\d\d:\d\d", tail[9])
    assert "epoch [3/3] batch [3/3]" in log
    ckpt_dir = osp.join(out, "probe")
    assert sorted(os.listdir(ckpt_dir)) == ["checkpoint", "model.pth.tar-3"]  # no temp files left
    assert read(osp.join(ckpt_dir, "checkpoint")).strip() == "model.pth.tar-3"
    ckpt = torch.load(osp.join(ckpt_dir, "model.pth.tar-3"), weights_only=True)
    assert ckpt["epoch"] == 3 and set(ckpt) >= {"state_dict", "optimizer", "scheduler", "val_result"}
    assert set(ckpt["state_dict"]) == {"fc.weight", "fc.bias"}

    # eval-only from the checkpoint reproduces the final accuracy (in a folder of its own)
    evaluation = str(tmp_path / "eval")
    trainer = run_train(probe_args(toy_root, evaluation, flags=["--eval-only", "--model-dir", out, "--load-epoch", "3"]))
    assert torch.equal(trainer.model.fc.weight.cpu(), ckpt["state_dict"]["fc.weight"])
    assert f"* accuracy: {acc:.1f}%" in read(osp.join(evaluation, "log.txt"))
    assert read(osp.join(out, "log.txt")) == log
    # a missing epoch is refused before the evaluation's folder is created, naming the epochs there are
    with pytest.raises(ConfigError, match=r"has no model.pth.tar-7: use --load-epoch 3"):
        run_train(probe_args(toy_root, str(tmp_path / "x"), flags=["--eval-only", "--model-dir", out, "--load-epoch", "7"]))
    assert not osp.exists(tmp_path / "x")


class Interrupt(Exception):
    pass


def test_resume_reaches_the_same_weights(toy_root, tmp_path, monkeypatch):
    opts = ("TRAIN.CHECKPOINT_FREQ", "1", "OPTIM.WARMUP_EPOCH", "1", "OPTIM.WARMUP_TYPE", "constant",
            "INPUT.TRANSFORMS", "('random_resized_crop', 'random_flip', 'normalize')")
    straight = run_train(probe_args(toy_root, str(tmp_path / "a"), *opts, epochs=4))

    out = str(tmp_path / "b")
    original = toy.ToyProbe.after_epoch

    def crash_after_second_epoch(self):
        original(self)
        if self.epoch == 1:
            raise Interrupt()

    monkeypatch.setattr(toy.ToyProbe, "after_epoch", crash_after_second_epoch)
    with pytest.raises(Interrupt):
        run_train(probe_args(toy_root, out, *opts, epochs=4))
    monkeypatch.setattr(toy.ToyProbe, "after_epoch", original)
    random.seed(12345)  # disturb global RNGs: resume must restore them from the checkpoint
    torch.manual_seed(12345)
    resumed = run_train(probe_args(toy_root, out, *opts, epochs=4))
    assert "Found a resume state at" in read(osp.join(out, "log.txt"))
    assert torch.equal(straight.model.fc.weight, resumed.model.fc.weight)
    assert torch.equal(straight.model.fc.bias, resumed.model.fc.bias)
    assert resumed.get_current_lr() == straight.get_current_lr()


def test_logger_never_overwrites(tmp_path, capsys):
    import sys
    saved = sys.stdout
    try:
        first = setup_logger(str(tmp_path))
        print("first run")
        second = setup_logger(str(tmp_path))
        print("second run")
    finally:
        sys.stdout.close()
        sys.stdout = saved
    assert first == str(tmp_path / "log.txt") and second.startswith(first + "-20")
    assert read(first) == "first run\n" and read(second) == "second run\n"


def test_checkpoint_with_pickled_objects_loads_weights_without_running_code(tmp_path, monkeypatch):
    """Upstream Dassl pickles scheduler objects: without trust they become inert stand-ins (the
    weights load exactly), and resuming from such a file needs --trust-checkpoint."""
    from harness.safe_load import CheckpointError, find_inert

    weight = torch.arange(6.0).reshape(2, 3)
    folder = tmp_path / "model"
    folder.mkdir()
    path = str(folder / "model.pth.tar-1")
    torch.save({"state_dict": {"weight": weight}, "epoch": 1, "optimizer": None,
                "scheduler": {"successor": Interrupt()}}, path)
    (folder / "checkpoint").write_text("model.pth.tar-1\n")
    monkeypatch.delenv("DASSL_TRUST_CHECKPOINT", raising=False)
    untrusted = load_checkpoint(path)
    assert torch.equal(untrusted["state_dict"]["weight"], weight)
    assert find_inert(untrusted) == {"test_engine.Interrupt"}
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        resume_from_checkpoint(str(folder), torch.nn.Linear(3, 2))
    assert isinstance(load_checkpoint(path, trust=True)["scheduler"]["successor"], Interrupt)
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        load_checkpoint(str(tmp_path / "nothing.pth"))


def test_best_val_checkpoint_is_not_a_resume_point(toy_root, tmp_path, monkeypatch):
    """Interrupted after a model-best save but before any epoch file: the pointer must not name
    model-best (resuming from it would replay epochs), so the rerun starts from scratch."""
    out = str(tmp_path / "best")
    original = toy.ToyProbe.after_epoch

    def crash_after_first_epoch(self):
        original(self)
        raise Interrupt()

    monkeypatch.setattr(toy.ToyProbe, "after_epoch", crash_after_first_epoch)
    with pytest.raises(Interrupt):
        run_train(probe_args(toy_root, out, "TEST.FINAL_MODEL", "best_val", epochs=3))
    assert sorted(os.listdir(osp.join(out, "probe"))) == ["model-best.pth.tar"]  # no pointer
    monkeypatch.setattr(toy.ToyProbe, "after_epoch", original)
    run_train(probe_args(toy_root, out, "TEST.FINAL_MODEL", "best_val", epochs=3))
    assert sorted(os.listdir(osp.join(out, "probe"))) == ["checkpoint", "model-best.pth.tar", "model.pth.tar-3"]
    assert read(osp.join(out, "probe", "checkpoint")).strip() == "model.pth.tar-3"
    rerun_log = read(osp.join(out, "log.txt"))
    assert "No checkpoint found, train from scratch" in rerun_log
    assert "Deploy the model with the best val performance" in rerun_log
