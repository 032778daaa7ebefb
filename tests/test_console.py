"""What a run shows: a short console (header, warnings, progress, results) while log.txt keeps every
line upstream parsers read; progress lines off a terminal; the log tee's console filter."""
import io
import os.path as osp

import pytest

import parse_test_res
from dassl.utils.logger import Logger
from harness import console
from helpers import read, run_train

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


# ------------------------------------------------------------------ the log tee's console filter

def tee(tmp_path):
    screen = io.StringIO()
    return Logger(str(tmp_path / "log.txt"), console=screen), screen


def test_muted_lines_reach_the_log_only_except_warnings_notes_and_progress(tmp_path):
    logger, screen = tee(tmp_path)
    logger.write("shown\n")
    with logger.mute_console():
        for text in ("config dump", "WARNING: 3 classes are short", "Note: took over", "progress: eval 1/2"):
            logger.write(text)  # print() writes the text and the newline separately
            logger.write("\n")
        logger.write("two\nlines\n")
    logger.write("shown again\n")
    logger.close()
    assert screen.getvalue() == ("shown\nWARNING: 3 classes are short\nNote: took over\nprogress: eval 1/2\n"
                                 "shown again\n")
    assert read(tmp_path / "log.txt") == ("shown\nconfig dump\nWARNING: 3 classes are short\nNote: took over\n"
                                          "progress: eval 1/2\ntwo\nlines\nshown again\n")


def test_log_only_without_a_log_tee_prints_everything(capsys):
    with console.log_only():
        print("kept")
    console.to_log("not a log: dropped")
    assert capsys.readouterr().out == "kept\n"


# ------------------------------------------------------------------ progress reports

class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_progress_prints_at_most_every_interval_with_rate_and_eta(capsys):
    clock = Clock()
    progress = console.Progress(1000, "eval test", unit="images", bar=False, interval=30, clock=clock)
    for _ in range(5):  # 29 s: no line yet
        clock.now += 5.8
        progress.update(100)
    assert capsys.readouterr().out == ""
    clock.now += 1.0  # 30 s, 600 images: 20 images/s, 400 left
    progress.update(100, note="batch 6")
    clock.now += 10.0
    progress.update(100)  # 10 s after the last line: silent
    progress.close()
    assert capsys.readouterr().out.splitlines() == [
        "progress: eval test 600/1,000 images (60%), batch 6, 20.0 images/s, elapsed 0:00:30, eta 0:00:20"]


def test_progress_with_a_bar_writes_its_lines_to_the_log_only(tmp_path, monkeypatch):
    logger, screen = tee(tmp_path)
    monkeypatch.setattr("sys.stdout", logger)
    clock = Clock()
    progress = console.Progress(10, "train", unit="batches", bar=True, interval=30, clock=clock)
    clock.now += 60
    progress.update(5)
    progress.close()
    monkeypatch.undo()
    logger.close()
    assert screen.getvalue() == ""
    assert read(tmp_path / "log.txt").startswith("progress: train 5/10 batches (50%), 0.1 batches/s")


# ------------------------------------------------------------------ one training run

def mma_args(root, out):
    return ["--root", root, "--seed", "1", "--trainer", "MultiModalAdapter", "--output-dir", out,
            "--dataset-config-file", osp.join(REPO, "configs", "datasets", "eurosat.yaml"),
            "--config-file", osp.join(REPO, "configs", "trainers", "MultiModalAdapter", "vit_b16_ep5.yaml"),
            "MODEL.BACKBONE.NAME", "test-tiny", "MODEL.BACKBONE.WEIGHTS", "random", "DATALOADER.NUM_WORKERS", "0",
            "OPTIM.MAX_EPOCH", "2", "DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "base",
            "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "TRAINER.MMADAPTER.PREC", "fp32"]


@pytest.fixture(scope="module")
def training_run(mini_root, tmp_path_factory):
    """One MMA run with a progress line after every step (interval 0); its console and log."""
    out = str(tmp_path_factory.mktemp("console") / "run")
    capture = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(console, "PROGRESS_INTERVAL", 0.0)
        patch.setattr("sys.stdout", capture)
        run_train(mma_args(mini_root, out))
    return out, capture.getvalue().splitlines(), read(osp.join(out, "log.txt")).splitlines()


def test_console_is_a_short_header_progress_and_the_result(training_run):
    out, screen, log = training_run
    text = "\n".join(screen)
    assert screen[0] == "MultiModalAdapter | EuroSAT, base classes, 2 shots, seed 1 | train, then test"
    assert "backbone  test-tiny, RANDOM weights" in text and "precision fp32 | cpu" in text
    assert f"output    {out} (full log: log.txt)" in text
    assert "data      5 classes; images: 10 train, 10 val, 5 test" in text
    counted = next(line for line in log if line.startswith("Number of trainable parameters: "))
    assert f"model     {counted.split(': ')[1]} trainable parameters" in text  # the trainer's own count
    for gone in ("** Config **", "** System info **", "# train_x", "Parameters to be updated", "epoch [1/2] batch",
                 "Building transform_train", "Checkpoint saved to"):
        assert gone not in text
    shown = [line for line in screen if not line.startswith("progress: ")]
    assert shown[-9:-5] == ["Finish training", "Evaluate on the *test* set", "=> result", "* total: 5"]
    assert [line.split(":")[0] for line in shown[-5:]] == ["* correct", "* accuracy", "* error", "* macro_f1", "Elapsed"]
    assert len(shown) == 14  # 5 header lines, 9 closing lines


def test_progress_lines_reach_console_and_log_for_training_and_evaluation(training_run):
    _, screen, log = training_run
    train_lines = [line for line in screen if line.startswith("progress: train ")]
    assert len(train_lines) == 4  # 10 images in batches of 4 (the last dropped): 2 per epoch
    assert train_lines[0].startswith("progress: train 1/4 batches (25%), epoch 1/2 loss ")
    assert train_lines[-1].startswith("progress: train 4/4 batches (100%), epoch 2/2 loss ")
    assert any(line.startswith("progress: eval test 5/5 images (100%)") for line in screen)
    assert [line for line in log if line.startswith("progress: ")] == [
        line for line in screen if line.startswith("progress: ")]


def test_log_keeps_every_line_upstream_parsers_and_readers_use(training_run):
    out, _, log = training_run
    for expected in ("** Config **", "** System info **", "# train_x  10", "Finish training", "=> result"):
        assert expected in log
    assert any(line.startswith("Parameters to be updated: ['") for line in log)
    assert "epoch [2/2] batch [2/2]" in "\n".join(log)
    result = log.index("=> result")
    assert log[result + 1].startswith("* total: ") and log[result + 3].startswith("* accuracy: ")
    accuracy = float(log[result + 3][len("* accuracy: "):-1])
    assert parse_test_res.read_accuracy(osp.join(out, "log.txt")) == pytest.approx(accuracy)
