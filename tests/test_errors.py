"""Bad input: one line ``error: ...`` naming the file, key or value, exit status 2, no traceback, and no
output folder left behind. Each case is checked through ``train.cli`` in this process."""
import os
import os.path as osp
import shutil

import pytest
import torch

import train
from datasets.mini import build
from harness.preflight import ConfigError

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SPLIT = "split_zhou_Caltech101.json"


@pytest.fixture(scope="module")
def caltech(tmp_path_factory):
    """A miniature Caltech101 (read-only here: cases that damage it work on a copy or a side root)."""
    root = str(tmp_path_factory.mktemp("err_data"))
    build(root, names=["Caltech101"], verbose=False)
    return root


def side_root(caltech, tmp_path, split_bytes=None):
    """A data root whose caltech-101/ links to the shared images, with its own split file."""
    root = tmp_path / "data"
    (root / "caltech-101").mkdir(parents=True)
    os.symlink(osp.join(caltech, "caltech-101", "101_ObjectCategories"), root / "caltech-101" / "101_ObjectCategories")
    if split_bytes is not None:
        (root / "caltech-101" / SPLIT).write_bytes(split_bytes)
    return str(root)


def args(root, out, *opts, trainer="MultiModalAdapter", config="vit_b16_ep5", flags=()):
    return ["--root", root, "--seed", "1", "--trainer", trainer, "--output-dir", out,
            "--dataset-config-file", osp.join(REPO, "configs", "datasets", "caltech101.yaml"),
            "--config-file", osp.join(REPO, "configs", "trainers", trainer, f"{config}.yaml"), *flags,
            "MODEL.BACKBONE.NAME", "test-tiny", "MODEL.BACKBONE.WEIGHTS", "random", "DATALOADER.NUM_WORKERS", "0",
            "OPTIM.MAX_EPOCH", "1", "DATASET.NUM_SHOTS", "1", "TRAINER.MMADAPTER.PREC", "fp32", *opts]


def fails(argv, capsys, *named):
    """Run the CLI; assert exit status 2, one ``error:`` line naming each of ``named``; return the line."""
    with pytest.raises(SystemExit) as exit_info:
        train.cli(argv)
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and "initialized randomly" not in out + err
    for text in named:
        assert str(text) in lines[0], lines[0]
    output_dir = argv[argv.index("--output-dir") + 1]
    assert not osp.exists(output_dir), os.listdir(output_dir)
    return lines[0]


def truncated_torch_file(path):
    torch.save({"weight": torch.zeros(64, 64)}, path)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    return str(path)


# ------------------------------------------------------------------ config files, keys and values

def test_yaml_syntax_error_names_the_file_and_line(caltech, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("OPTIM:\n  LR: [0.1\n")
    argv = args(caltech, str(tmp_path / "out"))
    argv[argv.index("--config-file") + 1] = str(bad)
    line = fails(argv, capsys, bad, "YAML syntax error", "line 3")
    assert "<unicode string>" not in line


def test_yaml_that_is_not_a_mapping(caltech, tmp_path, capsys):
    bad = tmp_path / "list.yaml"
    bad.write_text("- OPTIM\n- LR\n")
    argv = args(caltech, str(tmp_path / "out"))
    argv[argv.index("--config-file") + 1] = str(bad)
    fails(argv, capsys, bad, "not a mapping")


def test_wrong_method_config_name_lists_the_configs(caltech, tmp_path, capsys):
    fails(args(caltech, str(tmp_path / "out"), config="vit_b16_ep50"), capsys,
          "vit_b16_ep50.yaml", "vit_b16_ep5, vit_b16_ep5_imnet, vit_b16_xd")


def test_wrong_dataset_config_name_lists_the_configs(caltech, tmp_path, capsys):
    argv = args(caltech, str(tmp_path / "out"))
    argv[argv.index("--dataset-config-file") + 1] = osp.join(REPO, "configs", "datasets", "caltech.yaml")
    fails(argv, capsys, "caltech.yaml", "caltech101, dtd, eurosat")


def test_unknown_trainer_lists_the_trainers(caltech, tmp_path, capsys):
    argv = args(caltech, str(tmp_path / "out"))
    argv[argv.index("--trainer") + 1] = "MMA"
    fails(argv, capsys, '"MMA"', "MultiModalAdapter", "ZeroshotCLIP")


@pytest.mark.parametrize("key, value, allowed", [
    ("TRAINER.MMADAPTER.PREC", "fp23", "fp16, fp32, amp"),
    ("TRAINER.ATTN_MM_ADAPTER.MASK", "diagonal", "cross_modal, additive_01, none"),
    ("OPTIM.NAME", "sgdd", "adam, amsgrad, sgd"),
    ("DATASET.SUBSAMPLE_CLASSES", "novel", "all, base, new"),
])
def test_enumerated_value_names_key_value_and_choices(caltech, tmp_path, capsys, key, value, allowed):
    fails(args(caltech, str(tmp_path / "out"), key, value), capsys, key, f'"{value}"', allowed)


def test_unknown_override_key(caltech, tmp_path, capsys):
    fails(args(caltech, str(tmp_path / "out"), "OPTIM.LEARNING_RATE", "0.1"), capsys, "OPTIM.LEARNING_RATE", "OPTIM: ")


# ------------------------------------------------------------------ data root and split files

def test_missing_data_root(tmp_path, capsys):
    fails(args(str(tmp_path / "nowhere"), str(tmp_path / "out")), capsys, tmp_path / "nowhere", "--root")


def test_missing_dataset_folder(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    fails(args(str(tmp_path / "data"), str(tmp_path / "out")), capsys, tmp_path / "data" / "caltech-101", "DATASETS.md")


@pytest.mark.parametrize("content, problem", [
    (b"", "is empty"),
    (b'{"train": [["accordion/image_0001.jpg", 0, "accordion"]], "val": [', "not valid JSON (truncated?)"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "not a text file"),
    (b'{"train": [], "val": [], "test": []}', 'empty "train" list'),
    (b'{"train": [["accordion/image_0001.jpg", 0]], "val": [], "test": []}', 'entry 0 of "train"'),
    (b"[1, 2, 3]", "holds a JSON list"),
    (b'{"train": [["a.jpg", 0, "a"]], "test": [["a.jpg", 0, "a"]]}', 'no "val" list'),
], ids=["empty", "truncated", "binary", "empty-train", "two-fields", "list", "no-val"])
def test_malformed_split_file(caltech, tmp_path, capsys, content, problem):
    root = side_root(caltech, tmp_path, content)
    fails(args(root, str(tmp_path / "out")), capsys, osp.join(root, "caltech-101", SPLIT), problem,
          "DATASETS.md#caltech101")


def test_empty_class_folder(caltech, tmp_path, capsys):
    root = str(tmp_path / "data")
    shutil.copytree(osp.join(caltech, "caltech-101"), osp.join(root, "caltech-101"))
    os.remove(osp.join(root, "caltech-101", SPLIT))  # the reader would split the class folders at random
    empty = osp.join(root, "caltech-101", "101_ObjectCategories", "accordion")
    for name in os.listdir(empty):
        os.remove(osp.join(empty, name))
    fails(args(root, str(tmp_path / "out")), capsys, empty, "is empty")


def test_error_after_the_folder_was_created_removes_it(caltech, tmp_path, capsys):
    """A listed image that is missing is found by the reader (after the run took its folder): the new
    folder, and the parents the run created, are removed again."""
    root = str(tmp_path / "data")
    shutil.copytree(osp.join(caltech, "caltech-101"), osp.join(root, "caltech-101"))
    missing = osp.join(root, "caltech-101", "101_ObjectCategories", "accordion", "image_0001.jpg")
    os.remove(missing)
    fails(args(root, str(tmp_path / "out" / "run" / "seed1")), capsys, missing)
    assert not osp.exists(tmp_path / "out")


# ------------------------------------------------------------------ weights, checkpoints, --model-dir

@pytest.mark.parametrize("kind, problem", [
    ("text", "is a text file"), ("empty", "is empty"), ("truncated", "is truncated"), ("missing", "not found"),
])
def test_bad_weights_file(caltech, tmp_path, capsys, kind, problem):
    path = tmp_path / "ViT-B-16.pt"
    if kind == "text":
        path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:5806e77c\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        truncated_torch_file(path)
    line = fails(args(caltech, str(tmp_path / "out"), "MODEL.BACKBONE.WEIGHTS", str(path)), capsys,
                 "MODEL.BACKBONE.WEIGHTS", path, problem)
    assert "KeyError" not in line


def test_unknown_backbone_name(caltech, tmp_path, capsys):
    fails(args(caltech, str(tmp_path / "out"), "MODEL.BACKBONE.NAME", "ViT-B-16/openai"), capsys,
          "MODEL.BACKBONE.NAME", "ViT-B/16")


def eval_args(caltech, tmp_path, model_dir, *flags):
    return args(caltech, str(tmp_path / "eval"), flags=["--eval-only", "--model-dir", str(model_dir), *flags])


def test_model_dir_not_found(caltech, tmp_path, capsys):
    fails(eval_args(caltech, tmp_path, tmp_path / "nope", "--load-epoch", "5"), capsys, "--model-dir", tmp_path / "nope")


def test_model_dir_without_the_epoch_lists_the_epochs_it_has(caltech, tmp_path, capsys):
    (tmp_path / "train" / "adapter_learner").mkdir(parents=True)
    torch.save({"epoch": 2}, tmp_path / "train" / "adapter_learner" / "model.pth.tar-2")
    fails(eval_args(caltech, tmp_path, tmp_path / "train", "--load-epoch", "5"), capsys,
          "model.pth.tar-5", "--load-epoch 2")


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_damaged_checkpoint_in_model_dir(caltech, tmp_path, capsys, damage):
    path = tmp_path / "train" / "adapter_learner" / "model.pth.tar-5"
    path.parent.mkdir(parents=True)
    if damage == "empty":
        path.write_bytes(b"")
    else:
        truncated_torch_file(path)
    fails(eval_args(caltech, tmp_path, tmp_path / "train", "--load-epoch", "5"), capsys, path,
          "is empty" if damage == "empty" else "is truncated")


def test_model_dir_naming_a_damaged_file(caltech, tmp_path, capsys):
    """--model-dir may name a reference code's weights file directly; it must still be PyTorch's."""
    (tmp_path / "adapter_state_dict.pt").write_text("not weights\n")
    fails(eval_args(caltech, tmp_path, tmp_path / "adapter_state_dict.pt"), capsys, "adapter_state_dict.pt",
          "is a text file")


def test_empty_checkpoint_pointer_of_the_run_to_resume(caltech, tmp_path, capsys):
    old = tmp_path / "old" / "adapter_learner"
    old.mkdir(parents=True)
    (old / "checkpoint").write_text("")
    fails(args(caltech, str(tmp_path / "out"), flags=["--resume", str(tmp_path / "old")]), capsys,
          old / "checkpoint", "is empty")


def test_resume_folder_not_found(caltech, tmp_path, capsys):
    fails(args(caltech, str(tmp_path / "out"), flags=["--resume", str(tmp_path / "old")]), capsys,
          "--resume", tmp_path / "old")


def test_damaged_resume_state(caltech, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    truncated_torch_file(out / "resume_state.pth.tar")
    argv = args(caltech, str(out))
    with pytest.raises(SystemExit) as exit_info:
        train.cli(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: resume state") and "is truncated" in err
    assert os.listdir(out) == ["resume_state.pth.tar"]  # nothing added to the folder


def test_debug_shows_the_traceback(caltech, tmp_path):
    with pytest.raises(ConfigError, match="fp23"):
        train.cli(args(caltech, str(tmp_path / "out"), "TRAINER.MMADAPTER.PREC", "fp23", flags=["--debug"]))
