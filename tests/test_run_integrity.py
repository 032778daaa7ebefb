"""Run integrity: exact resume after SIGKILL, run records, one writer per folder, finished markers,
logs and checkpoints that survive faults (harness/, dassl's resume state)."""
import errno
import json
import os
import os.path as osp
import signal

import pytest
import torch

import train
from dassl.engine import trainer as engine
from dassl.utils import torchtools
from harness import fileio
from harness.run import RunError, run_state
from helpers import read, run_train

TINY = ["MODEL.BACKBONE.NAME", "test-tiny", "MODEL.BACKBONE.WEIGHTS", "random"]


def b2n_args(root, out, trainer, config, *opts, workers=2, shots=2, epochs=2, subsample="base", flags=()):
    return ["--root", root, "--seed", "1", "--trainer", trainer, "--output-dir", out,
            "--dataset-config-file", "configs/datasets/eurosat.yaml",
            "--config-file", f"configs/trainers/{trainer}/{config}.yaml", *flags,
            *TINY, "DATALOADER.NUM_WORKERS", str(workers), "OPTIM.MAX_EPOCH", str(epochs),
            "DATASET.NUM_SHOTS", str(shots), "DATASET.SUBSAMPLE_CLASSES", subsample, *opts]


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def run_killed(argv, patch):
    """Run ``train.run(argv)`` in a forked child that ``patch`` (applied in the child) SIGKILLs."""
    pid = os.fork()
    if pid == 0:  # the child: never returns to pytest
        try:
            patch()
            train.run(argv)
        finally:
            os._exit(3)  # reached only if the patch did not kill the run
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, "the run was not killed"


def final_weights(out, name):
    """The state dict of the last epoch snapshot named by the checkpoint pointer."""
    pointer = read(osp.join(out, name, "checkpoint")).strip()
    return torch.load(osp.join(out, name, pointer), weights_only=True)["state_dict"], pointer


def result(out):
    with open(osp.join(out, "finished.json")) as f:
        return json.load(f)["result"]["accuracy"]


def assert_same_run(reference, out, name):
    ref_weights, ref_file = final_weights(reference, name)
    weights, file = final_weights(out, name)
    assert file == ref_file and weights.keys() == ref_weights.keys()
    for key in ref_weights:
        assert torch.equal(weights[key], ref_weights[key]), key
    assert result(out) == result(reference)
    assert run_state(out) == "finished" and not osp.exists(osp.join(out, engine.RESUME_STATE_FILE))
    leftovers = [f for _, _, files in os.walk(out) for f in files if fileio.TEMP_SUFFIX.search(f)]
    assert leftovers == []


# --- kill points (applied in the child) --------------------------------------------------------

def kill_at_step(trainer_cls, step):
    def patch():
        original, calls = trainer_cls.forward_backward, [0]

        def counting(self, batch):
            calls[0] += 1
            if calls[0] == step:
                die()
            return original(self, batch)
        trainer_cls.forward_backward = counting
    return patch


def kill_while_saving(filename_part):
    """SIGKILL after writing half of the file whose temporary name contains ``filename_part``."""
    def patch():
        original = torch.save

        def partial_save(obj, f, *args, **kwargs):
            if filename_part in getattr(f, "name", ""):
                f.write(b"\0" * 1000)
                f.flush()
                die()
            return original(obj, f, *args, **kwargs)
        torch.save = partial_save
    return patch


def kill_before_pointer():
    """SIGKILL after the epoch file is written but before the ``checkpoint`` pointer names it."""
    def patch():
        original = torchtools.atomic_write

        def guarded(path, mode="wb"):
            if osp.basename(path) == "checkpoint":
                die()
            return original(path, mode)
        torchtools.atomic_write = guarded
    return patch


def kill_in_final_test():
    def patch():
        original = engine.SimpleTrainer.test

        def test(self, split=None):
            if split != "val" and self.epoch + 1 == self.max_epoch:
                die()
            return original(self, split)
        engine.SimpleTrainer.test = test
    return patch


def kill_before_epoch(epoch_index):
    def patch():
        original = engine.TrainerBase.before_epoch

        def before_epoch(self):
            if self.epoch == epoch_index:
                die()
            return original(self)
        engine.TrainerBase.before_epoch = before_epoch
    return patch


# --- exact resume --------------------------------------------------------------------------------

# EuroSAT's 5 base classes x 2 shots = 10 training images: 2 batches of 4 per epoch.
MMA_OPTS = ["TRAINER.MMADAPTER.PREC", "fp32", "DATALOADER.TRAIN_X.BATCH_SIZE", "4"]


def test_mma_resumes_exactly_after_sigkill_with_workers(mini_root, tmp_path):
    from trainers.mma import MultiModalAdapter

    def args(out):
        return b2n_args(mini_root, str(out), "MultiModalAdapter", "vit_b16_ep5", *MMA_OPTS)

    reference = tmp_path / "reference"
    run_train(args(reference))
    kill_points = {
        "mid_epoch": kill_at_step(MultiModalAdapter, 3),  # epoch 2, batch 1
        "checkpoint_write": kill_while_saving("model.pth.tar-2"),
        "before_pointer": kill_before_pointer(),
        "final_test": kill_in_final_test(),
    }
    for name, patch in kill_points.items():
        out = tmp_path / name
        run_killed(args(out), patch)
        assert run_state(str(out)) == "unfinished", name
        run_train(args(out))
        assert_same_run(str(reference), str(out), "adapter_learner")
        kept = [f for f in os.listdir(out) if f.startswith("log.txt-unfinished-")]
        assert len(kept) == 1, name
        if name == "mid_epoch":  # the killed run's log keeps every line printed before the kill
            assert "epoch [1/2] batch" in read(osp.join(out, kept[0]))
            assert "Found a resume state" in read(osp.join(out, "log.txt"))


def test_mmrl_resumes_exactly_after_sigkill_with_workers(mini_root, tmp_path):
    from trainers.mmrl import MMRL

    def args(out):
        return b2n_args(mini_root, str(out), "MMRL", "vit_b16", "TRAINER.MMRL.PREC", "fp32",
                        "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "TASK", "B2N")

    reference = tmp_path / "reference"
    run_train(args(reference))
    for name, patch in {"mid_epoch": kill_at_step(MMRL, 3), "final_test": kill_in_final_test()}.items():
        out = tmp_path / name
        run_killed(args(out), patch)
        run_train(args(out))
        assert_same_run(str(reference), str(out), "MultiModalRepresentationLearner")


def test_best_val_and_early_stopping_survive_a_resume(mini_root, tmp_path):
    """AttnMMAdapter vit_b16_paper deploys the best-val model and stops early; killed after epoch 4,
    the resumed run keeps the best score, the best model and the early-stopping counter."""
    def args(out):
        return b2n_args(mini_root, str(out), "AttnMMAdapter", "vit_b16_paper", "TRAINER.ATTN_MM_ADAPTER.PATIENCE",
                        "3", "OPTIM.LR", "0.05", "DATALOADER.TRAIN_X.BATCH_SIZE", "16", epochs=12, workers=0)

    reference = tmp_path / "reference"
    run_train(args(reference))
    log = read(osp.join(reference, "log.txt"))
    assert "Early stopping after epoch" in log and "Deploy the model with the best val performance" in log
    out = tmp_path / "killed"
    run_killed(args(out), kill_before_epoch(4))
    run_train(args(out))
    assert_same_run(str(reference), str(out), "attn_mm_adapter")
    best = torch.load(osp.join(out, "attn_mm_adapter", "model-best.pth.tar"), weights_only=True)
    ref_best = torch.load(osp.join(reference, "attn_mm_adapter", "model-best.pth.tar"), weights_only=True)
    assert best["epoch"] == ref_best["epoch"] and best["val_result"] == ref_best["val_result"]
    stopped = [line for line in log.splitlines() if line.startswith("Early stopping")]
    assert stopped == [line for line in read(osp.join(out, "log.txt")).splitlines() if line.startswith("Early stopping")]


def test_shipped_config_resumes_instead_of_training_from_scratch(mini_root, tmp_path):
    """Every shipped config sets TRAIN.CHECKPOINT_FREQ 0: the resume state does not depend on it."""
    out = str(tmp_path / "run")
    argv = b2n_args(mini_root, out, "CLIP_Adapter", "vit_b16", "TRAINER.CLIP_ADAPTER.PREC", "fp32",
                    workers=0, epochs=3)
    run_killed(argv, kill_before_epoch(2))
    run_train(argv)
    log = read(osp.join(out, "log.txt"))
    assert "continuing after epoch 2" in log and "train from scratch" not in log
    assert "epoch [1/3]" not in log and "epoch [3/3]" in log


# --- a run knows what it is, one writer per folder ---------------------------------------------

def probe(mini_root, out, *opts, flags=()):
    return b2n_args(mini_root, out, "CLIP_Adapter", "vit_b16", "TRAINER.CLIP_ADAPTER.PREC", "fp32", *opts,
                    workers=0, epochs=1, flags=flags)


def test_a_config_change_into_a_used_folder_is_refused_naming_the_key(mini_root, tmp_path, capsys):
    out = str(tmp_path / "run")
    run_train(probe(mini_root, out))
    with pytest.raises(RunError, match=r"OPTIM\.LR 0\.002 -> 0\.001"):
        run_train(probe(mini_root, out, "OPTIM.LR", "0.001"))
    with pytest.raises(RunError, match="DATASET.SUBSAMPLE_CLASSES 'base' -> 'new'"):
        run_train(probe(mini_root, out, "DATASET.SUBSAMPLE_CLASSES", "new"))
    # the same config again: already finished, nothing runs; the worker count does not matter
    assert run_train(probe(mini_root, out, "DATALOADER.NUM_WORKERS", "0")) is None
    assert "already finished" in capsys.readouterr().out
    # explicitly discarding the old run moves it aside (hidden, so no parser counts it)
    run_train(probe(mini_root, out, "OPTIM.LR", "0.001", flags=["--discard-old-run"]))
    aside = [f for f in os.listdir(tmp_path) if f.startswith(".run.discarded-")]
    assert len(aside) == 1 and osp.exists(osp.join(tmp_path, aside[0], "finished.json"))
    with open(osp.join(out, "run.json")) as f:
        assert json.load(f)["identity"]["OPTIM.LR"] == 0.001


def test_a_second_run_into_a_busy_folder_is_refused_naming_the_holder(mini_root, tmp_path):
    out = str(tmp_path / "run")
    locked_read, locked_write = os.pipe()  # child -> parent: the lock is held
    pid = os.fork()
    if pid == 0:  # holds the folder's lock until it is killed
        try:
            from harness.run import FolderLock
            os.makedirs(out)
            FolderLock(out).acquire("holder")
            os.write(locked_write, b"locked")
            signal.pause()
        finally:
            os._exit(0)
    assert os.read(locked_read, 6) == b"locked"
    try:
        with pytest.raises(RunError, match=rf"in use by another run \(PID {pid} on "):
            run_train(probe(mini_root, out))
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    run_train(probe(mini_root, out))  # the holder is gone: its lock is taken over, with a note
    assert "took over" in read(osp.join(out, "log.txt"))


def test_the_test_step_refuses_an_unfinished_training_run(mini_root, tmp_path):
    trained = str(tmp_path / "train")
    run_killed(probe(mini_root, trained), kill_in_final_test())
    test_args = probe(mini_root, str(tmp_path / "test"), flags=["--eval-only", "--model-dir", trained, "--load-epoch", "1"])
    test_args[test_args.index("base")] = "new"
    with pytest.raises(RunError, match=f"training of {trained} is not finished: resume it with: .*train.py"):
        run_train(test_args)
    assert not osp.exists(tmp_path / "test")  # refused before anything was written
    run_train(probe(mini_root, trained))
    run_train(test_args)
    assert run_state(str(tmp_path / "test")) == "finished"


def test_the_test_step_refuses_a_model_trained_with_another_config(mini_root, tmp_path):
    trained = str(tmp_path / "train")
    run_train(probe(mini_root, trained))
    test_args = probe(mini_root, str(tmp_path / "test"), "TRAINER.CLIP_ADAPTER.RATIO", "0.5",
                      flags=["--eval-only", "--model-dir", trained, "--load-epoch", "1"])
    with pytest.raises(RunError, match=r"TRAINER\.CLIP_ADAPTER\.RATIO 0\.2 -> 0\.5"):
        run_train(test_args)


# --- files survive faults ----------------------------------------------------------------------

def test_a_full_disk_leaves_no_partial_file_and_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    save_dir = str(tmp_path / "model")
    good = {"state_dict": {"w": torch.ones(3)}, "epoch": 1}
    torchtools.save_checkpoint(dict(good), save_dir, model_name="model-best.pth.tar")
    original = torch.save

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"\0" * 4096)
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(fileio.WriteError, match="No space left on device.*previous version is intact"):
        torchtools.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 2}, save_dir,
                                   model_name="model-best.pth.tar")
    monkeypatch.setattr(torch, "save", original)
    assert os.listdir(save_dir) == ["model-best.pth.tar"]
    assert torch.equal(torch.load(osp.join(save_dir, "model-best.pth.tar"))["state_dict"]["w"], torch.ones(3))


def test_a_failing_close_removes_the_temporary_file(tmp_path, monkeypatch):
    """The buffered tail is written at close: a full disk then must not leave the temporary file."""
    path = str(tmp_path / "file.bin")
    writer = fileio.atomic_write(path, "wb")
    f = writer.__enter__()
    f.write(b"data")
    real_close = f.close

    def failing_close():
        real_close()
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    monkeypatch.setattr(f, "close", failing_close)
    with pytest.raises(fileio.WriteError):
        writer.__exit__(None, None, None)
    assert os.listdir(tmp_path) == []


def test_temporary_files_of_a_killed_run_are_removed_on_its_next_start(mini_root, tmp_path):
    out = str(tmp_path / "run")
    argv = probe(mini_root, out)
    run_killed(argv, kill_while_saving("model.pth.tar-1"))
    assert any(fileio.TEMP_SUFFIX.search(f) for f in os.listdir(osp.join(out, "clip_adapter")))
    run_train(argv)
    assert "left by an interrupted write" in read(osp.join(out, "log.txt"))
    assert not any(fileio.TEMP_SUFFIX.search(f) for f in os.listdir(osp.join(out, "clip_adapter")))


def test_a_crafted_pickle_runs_no_code_without_trust(tmp_path, monkeypatch):
    """A checkpoint whose pickle has a non-UTF-8 string (so the safe load fails with a decode error,
    the path that used to fall through to full unpickling) and calls os.system."""
    import zipfile

    marker = tmp_path / "pwned"
    command = f"touch {marker}".encode()
    payload = (b"\x80\x02}q\x00(X\n\x00\x00\x00state_dictq\x01}q\x02U\x03\xff\xfe\xfdq\x03"
               + b"cposix\nsystem\nq\x04X" + len(command).to_bytes(4, "little") + command + b"q\x05\x85q\x06Rq\x07u.")
    torch.save({"a": 1}, tmp_path / "base.pth")
    path = tmp_path / "crafted.pth"
    with zipfile.ZipFile(tmp_path / "base.pth") as source, zipfile.ZipFile(path, "w") as crafted:
        for item in source.infolist():
            crafted.writestr(item, payload if item.filename.endswith("data.pkl") else source.read(item.filename))
    monkeypatch.delenv("DASSL_TRUST_CHECKPOINT", raising=False)
    loaded = torchtools.load_checkpoint(str(path))
    assert not marker.exists()
    assert loaded["state_dict"] == {} and "posix.system" in {getattr(v, "qualname", "") for v in loaded.values()}
