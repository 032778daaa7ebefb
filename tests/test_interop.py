"""Working with what CoOp-family users already have: upstream Dassl, shared data roots and their
caches, the attention adapter's reference checkpoints, CoOp's result parser.

Upstream-format files are written here by the tests themselves: few-shot and ImageNet caches pickle
a stand-in class published as ``dassl.data.datasets.base_dataset.Datum`` for the moment of pickling.
"""
import contextlib
import hashlib
import io
import os
import os.path as osp
import pickle
import subprocess
import sys
import types

import pytest
import torch

import parse_test_res
import toy
import train
import upstream_dassl
from dassl.engine import build_trainer
from dassl.utils import listdir_nohidden, set_random_seed
from datasets import mini
from datasets.common import CacheError, fewshot_cache_path, own_cache_path
from harness.safe_load import CheckpointError
from helpers import read, run_train
from test_datasets import build, fresh_copy, impaths

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
FOREIGN_ROOT = "/home/someone/data"  # where the machine that wrote an upstream cache kept the data


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Upstream Dassl: the project code runs through upstream's public API only
# ---------------------------------------------------------------------------------------------

def test_trainers_train_through_upstream_dassls_public_api(tmp_path):
    """Every registered trainer trains one epoch (zero-shot ones evaluate) behind the upstream view,
    and the view refuses the project-only names that once broke upstream runs."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, osp.join(REPO, "tests", "upstream_dassl.py"), str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path))
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    trained = [line.split()[1] for line in lines if line.startswith("ok ")]
    assert trained == sorted(upstream_dassl.project_trainers()) and len(trained) >= 5
    probes = [line for line in lines if line.startswith(("refused ", "ALLOWED "))]
    assert len(probes) == 6 and all(line.startswith("refused ") for line in probes), probes
    assert any("'tfm_train'" in line for line in probes) and any("not iterable" in line for line in probes)


def test_upstream_name_lists_exist_in_our_dassl():
    """The facts the view enforces are all provided by our engine (typos in the lists fail here)."""
    import importlib

    for module, names in upstream_dassl.UPSTREAM_NAMES.items():
        found = importlib.import_module(module)
        assert not [n for n in names if not hasattr(found, n)], module


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    return toy.make_toy_root(str(tmp_path_factory.mktemp("toy")), per_class=4, num_classes=4)


def attn_trainer(root, out, *opts, seed=1):
    args = train.build_parser().parse_args([
        "--root", root, "--trainer", "AttnMMAdapter", "--output-dir", out, "--seed", str(seed),
        "--config-file", osp.join(REPO, "configs", "trainers", "AttnMMAdapter", "vit_b16_paper.yaml"),
        "DATASET.NAME", "ToyColours", "DATALOADER.NUM_WORKERS", "0", "MODEL.BACKBONE.NAME", "test-tiny",
        "MODEL.BACKBONE.WEIGHTS", "random", "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "OPTIM.MAX_EPOCH", "3", *opts])
    cfg = train.setup_cfg(args)
    set_random_seed(cfg.SEED)
    with contextlib.redirect_stdout(io.StringIO()):
        return build_trainer(cfg)


def test_epochs_after_an_early_stop_do_nothing(toy_root, tmp_path, monkeypatch):
    """Upstream's epoch loop has no stop flag: after an early stop the trainer's epochs are no-ops."""
    trainer = attn_trainer(toy_root, str(tmp_path))
    steps = []
    monkeypatch.setattr(trainer, "forward_backward", lambda batch: steps.append(1) or {"loss": 0.0})
    trainer.epoch, trainer.stop_training = 1, True
    trainer.run_epoch()
    trainer.after_epoch()
    assert steps == [] and not osp.exists(osp.join(str(tmp_path), "attn_mm_adapter"))
    trainer.stop_training = False
    trainer.run_epoch()
    assert steps  # the same call trains when not stopped


# ---------------------------------------------------------------------------------------------
# Few-shot and ImageNet caches written by Dassl/CoOp
# ---------------------------------------------------------------------------------------------

def write_upstream_pickle(path, payload, monkeypatch):
    """Pickle ``payload`` (``(impath, label, classname)`` tuples become upstream ``Datum`` objects).

    As upstream does: highest protocol, the class referenced as
    ``dassl.data.datasets.base_dataset.Datum``, its four private attributes as state.
    """
    module = types.ModuleType("dassl.data.datasets.base_dataset")

    def init(self, impath, label, classname):
        self._impath, self._label, self._domain, self._classname = impath, label, 0, classname

    module.Datum = type("Datum", (), {"__init__": init, "__module__": module.__name__})
    objects = {name: [module.Datum(*record) for record in records] for name, records in payload.items()}
    os.makedirs(osp.dirname(path), exist_ok=True)
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, module.__name__, module)
        with open(path, "wb") as f:
            pickle.dump(objects, f, protocol=pickle.HIGHEST_PROTOCOL)


def foreign(root, impath):
    """``impath`` as the machine that wrote an upstream cache had it (another data root)."""
    return FOREIGN_ROOT + "/" + osp.relpath(impath, root).replace(os.sep, "/")


def local(root, foreign_path):
    return osp.join(root, foreign_path[len(FOREIGN_ROOT) + 1:])


def records(root, items):
    return [(foreign(root, i.impath), i.label, i.classname) for i in items]


def last_per_label(recs, k):
    """The last ``k`` records of each label, labels descending: a sample our sampler would not draw."""
    by_label = {}
    for rec in recs:
        by_label.setdefault(rec[1], []).append(rec)
    return [rec for label in sorted(by_label, reverse=True) for rec in by_label[label][-k:]]


def upstream_sample(root, ds, shots):
    return {"train": last_per_label(records(root, ds.train_x), shots),
            "val": last_per_label(records(root, ds.val), min(shots, 4))}


@pytest.fixture
def eurosat6(tmp_path):
    mini.build(str(tmp_path), ["EuroSAT"], per_class=6, verbose=False)
    return str(tmp_path)


def test_upstream_fewshot_cache_is_reused_and_left_byte_identical(eurosat6, monkeypatch, capsys):
    full = build(eurosat6, "EuroSAT")
    sample = upstream_sample(eurosat6, full, shots=2)
    shared = fewshot_cache_path(osp.join(eurosat6, "eurosat"), 2, 1)
    write_upstream_pickle(shared, sample, monkeypatch)
    digest = sha256(shared)
    capsys.readouterr()

    ds = build(eurosat6, "EuroSAT", shots=2, seed=1)
    assert f"Loading preprocessed few-shot data from {shared}" in capsys.readouterr().out
    expected = [local(eurosat6, r[0]) for r in sample["train"]]
    assert [i.impath for i in ds.train_x] == expected  # the same images, in the cached order
    assert [(i.label, i.classname) for i in ds.train_x] == [r[1:] for r in sample["train"]]
    assert [i.impath for i in ds.val] == [local(eurosat6, r[0]) for r in sample["val"]]
    base = build(eurosat6, "EuroSAT", shots=2, seed=1, subsample="base")  # base/new come from that sample
    assert set(impaths(base.train_x)) < set(expected) and len(base.train_x) == 10
    assert sha256(shared) == digest and os.listdir(osp.dirname(shared)) == [osp.basename(shared)]


def test_own_cache_is_kept_when_an_upstream_one_appears(eurosat6, monkeypatch, capsys):
    ours = build(eurosat6, "EuroSAT", shots=2, seed=1)
    shared = fewshot_cache_path(osp.join(eurosat6, "eurosat"), 2, 1)
    write_upstream_pickle(shared, upstream_sample(eurosat6, build(eurosat6, "EuroSAT"), 2), monkeypatch)
    capsys.readouterr()
    again = build(eurosat6, "EuroSAT", shots=2, seed=1)
    out = capsys.readouterr().out
    assert [i.impath for i in again.train_x] == [i.impath for i in ours.train_x]
    assert f"Loading preprocessed few-shot data from {own_cache_path(shared)}" in out
    assert f"Note: {shared} (written by Dassl/CoOp code) holds another sample" in out


def test_stale_own_cache_gives_way_to_the_upstream_one(eurosat6, monkeypatch, capsys):
    shared = fewshot_cache_path(osp.join(eurosat6, "eurosat"), 2, 1)
    build(eurosat6, "EuroSAT", shots=2, seed=1)
    with open(own_cache_path(shared), "wb") as f:
        f.write(b"damaged")
    sample = upstream_sample(eurosat6, build(eurosat6, "EuroSAT"), 2)
    write_upstream_pickle(shared, sample, monkeypatch)
    digest = sha256(shared)
    capsys.readouterr()
    ds = build(eurosat6, "EuroSAT", shots=2, seed=1)
    assert f"does not match the data (unreadable: " in capsys.readouterr().out
    assert [i.impath for i in ds.train_x] == [local(eurosat6, r[0]) for r in sample["train"]]
    assert sha256(shared) == digest and os.listdir(osp.dirname(shared)) == [osp.basename(shared)]


def test_own_cache_written_under_the_upstream_name_is_moved(eurosat6, capsys):
    ours = build(eurosat6, "EuroSAT", shots=2, seed=1)
    shared = fewshot_cache_path(osp.join(eurosat6, "eurosat"), 2, 1)
    os.replace(own_cache_path(shared), shared)  # where versions before this one wrote it
    capsys.readouterr()
    again = build(eurosat6, "EuroSAT", shots=2, seed=1)
    assert f"Note: moved this project's cache {shared} to {own_cache_path(shared)}" in capsys.readouterr().out
    assert [i.impath for i in again.train_x] == [i.impath for i in ours.train_x]
    assert os.listdir(osp.dirname(shared)) == [osp.basename(own_cache_path(shared))]


def crafted(marker):
    """An object whose unpickling would run code (it writes ``marker``)."""

    class Payload:
        def __reduce__(self):
            return exec, (f"open({marker!r}, 'w').write('code ran')",)

    return Payload()


UNUSABLE = {
    "unmappable": ("has no folder named \"eurosat\"", lambda rec: ("/elsewhere/Forest_1.jpg",) + rec[1:]),
    "missing": ("listed file no longer exists: 2750x/", lambda rec: (rec[0].replace("2750", "2750x"),) + rec[1:]),
    # image 9 of each class is a test image
    "not_in_split": ("is not in the current train split", lambda rec: (rec[0].rsplit("_", 1)[0] + "_9.jpg",) + rec[1:]),
    "other_label": ("is cached as (", lambda rec: (rec[0], rec[1] + 1, rec[2])),
    "code": ("other objects than Datum records (builtins.exec)", None),
    "garbage": ("unreadable", None),
}


@pytest.mark.parametrize("problem", list(UNUSABLE))
def test_unusable_upstream_fewshot_cache_is_a_one_line_error_and_left_alone(eurosat6, tmp_path, monkeypatch,
                                                                           problem):
    shared = fewshot_cache_path(osp.join(eurosat6, "eurosat"), 2, 1)
    sample = upstream_sample(eurosat6, build(eurosat6, "EuroSAT"), 2)
    reason, change = UNUSABLE[problem]
    marker = str(tmp_path / "marker")
    if change is not None:
        sample["train"][0] = change(sample["train"][0])
        write_upstream_pickle(shared, sample, monkeypatch)
    else:
        with open(shared, "wb") as f:  # (the reader made split_fewshot/ above)
            if problem == "code":
                pickle.dump({"train": [crafted(marker)], "val": []}, f)
            else:
                f.write(b"\x80\x05truncated")
    digest = sha256(shared)
    with pytest.raises(CacheError) as error:
        build(eurosat6, "EuroSAT", shots=2, seed=1)
    message = str(error.value)
    assert len(message.splitlines()) == 1 and shared in message and reason in message
    assert "move the file away" in message
    assert sha256(shared) == digest and not osp.exists(marker)
    assert os.listdir(osp.dirname(shared)) == [osp.basename(shared)]


def test_cache_error_from_the_command_line(eurosat6, tmp_path, capsys):
    shared = fewshot_cache_path(osp.join(eurosat6, "eurosat"), 2, 1)
    os.makedirs(osp.dirname(shared))
    with open(shared, "wb") as f:
        f.write(b"not a pickle")
    with pytest.raises(SystemExit) as exit_:
        train.cli(["--root", eurosat6, "--trainer", "ZeroshotCLIP", "--eval-only", "--seed", "1", "--output-dir",
                   str(tmp_path / "out"), "--dataset-config-file", osp.join(REPO, "configs/datasets/eurosat.yaml"),
                   "DATASET.NUM_SHOTS", "2", "DATALOADER.NUM_WORKERS", "0", "MODEL.BACKBONE.NAME", "test-tiny",
                   "MODEL.BACKBONE.WEIGHTS", "random"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"error: cache {shared} (not written by this project) cannot be used: unreadable")


@pytest.fixture
def imagenet_root(mini_root, tmp_path):
    return fresh_copy(mini_root, tmp_path, "ImageNet")


def test_upstream_imagenet_caches_are_reused_in_their_order(imagenet_root, monkeypatch, capsys):
    root, dataset_dir = imagenet_root, osp.join(imagenet_root, "imagenet")
    listed = build(root, "ImageNet")
    os.remove(osp.join(dataset_dir, "preprocessed.portable.pkl"))  # as if only CoOp had run here
    lists = {"train": records(root, reversed(listed.train_x)), "test": records(root, reversed(listed.test))}
    shared = osp.join(dataset_dir, "preprocessed.pkl")
    write_upstream_pickle(shared, lists, monkeypatch)
    shot = fewshot_cache_path(dataset_dir, 1, 1)
    one_shot = last_per_label(lists["train"], 1)
    write_upstream_pickle(shot, {"train": one_shot}, monkeypatch)
    digests = {path: sha256(path) for path in (shared, shot)}
    capsys.readouterr()

    ds = build(root, "ImageNet")
    assert [i.impath for i in ds.train_x] == [i.impath for i in reversed(listed.train_x)]
    assert [i.impath for i in ds.test] == [i.impath for i in reversed(listed.test)]
    assert f"Loading preprocessed data from {shared}" in capsys.readouterr().out
    sampled = build(root, "ImageNet", shots=1, seed=1)
    assert [i.impath for i in sampled.train_x] == [local(root, r[0]) for r in one_shot]
    assert {path: sha256(path) for path in (shared, shot)} == digests
    assert "preprocessed.portable.pkl" not in os.listdir(dataset_dir)
    assert os.listdir(osp.dirname(shot)) == [osp.basename(shot)]


def test_crafted_imagenet_cache_does_not_run(imagenet_root, tmp_path):
    shared = osp.join(imagenet_root, "imagenet", "preprocessed.pkl")
    marker = str(tmp_path / "marker")
    with open(shared, "wb") as f:
        pickle.dump({"train": [crafted(marker)], "test": []}, f)
    with pytest.raises(CacheError, match="builtins.exec"):
        build(imagenet_root, "ImageNet")
    assert not osp.exists(marker) and osp.isfile(shared)


# ---------------------------------------------------------------------------------------------
# The attention adapter's reference checkpoints
# ---------------------------------------------------------------------------------------------

def test_reference_attention_adapter_files_load_to_the_same_logits(toy_root, tmp_path):
    """``adapter_state_dict.pt`` (adapter only) and ``model_best.pth.tar`` (whole model) of the
    reference code load like our own checkpoint of the same weights."""
    trained = attn_trainer(toy_root, str(tmp_path / "a"))
    adapter = trained.model.adapter
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(0.05 * torch.randn_like(p))  # not the initial weights of any seed
    reference = {f"adapter.{k}": v.clone() for k, v in adapter.state_dict().items()}
    os.makedirs(tmp_path / "adapter_only")
    torch.save(reference, tmp_path / "adapter_only" / "adapter_state_dict.pt")
    whole = {"_clip.visual.proj": torch.randn(8, 4), "image_encoder.proj": torch.randn(8, 4),
             "logit_scale": torch.tensor(4.6052), **reference}
    os.makedirs(tmp_path / "whole")
    torch.save({"epoch": 12, "state_dict": whole, "best_acc1": 81.5,
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.005, "params": [0, 1]}]}},
               tmp_path / "whole" / "model_best.pth.tar")
    with contextlib.redirect_stdout(io.StringIO()):
        trained.save_model(0, str(tmp_path / "ours"))  # our converted copy: attn_mm_adapter/model.pth.tar-1
    features = torch.nn.functional.normalize(torch.randn(5, trained.model.text_features.shape[1]), dim=-1)
    with torch.no_grad():
        expected = trained.model(features)

    other = attn_trainer(toy_root, str(tmp_path / "b"))  # the same random CLIP, so the same text features
    with torch.no_grad():
        for p in other.model.adapter.parameters():
            p.mul_(-1.0)  # other weights than the saved ones
        assert (other.model(features) - expected).abs().max() > 1e-3
    sources = [(str(tmp_path / "ours"), 1), (str(tmp_path / "adapter_only"), None), (str(tmp_path / "whole"), None),
               (str(tmp_path / "whole" / "model_best.pth.tar"), None)]
    for directory, epoch in sources:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            other.load_model(directory, epoch=epoch)
        with torch.no_grad():
            assert torch.equal(other.model(features), expected), directory
    assert '(reference file, epoch = 12)' in out.getvalue()

    with pytest.raises(CheckpointError, match="drop --load-epoch"):
        other.load_model(str(tmp_path / "whole"), epoch=12)
    smaller = attn_trainer(toy_root, str(tmp_path / "c"), "TRAINER.ATTN_MM_ADAPTER.DOWN_DIMS", "[16, 64]")
    with pytest.raises(CheckpointError, match="does not match the model"):
        smaller.load_model(str(tmp_path / "adapter_only"))


def test_model_dir_pointing_at_reference_output_evaluates(toy_root, tmp_path):
    trained = attn_trainer(toy_root, str(tmp_path / "a"))
    os.makedirs(tmp_path / "reference")
    torch.save({f"adapter.{k}": v for k, v in trained.model.adapter.state_dict().items()},
               tmp_path / "reference" / "adapter_state_dict.pt")
    with contextlib.redirect_stdout(io.StringIO()):
        trained.save_model(0, str(tmp_path / "ours"))
    accuracies = []
    for name, flags in (("ours", ["--load-epoch", "1"]), ("reference", [])):
        out = str(tmp_path / f"test_{name}")
        run_train(["--root", toy_root, "--trainer", "AttnMMAdapter", "--output-dir", out, "--eval-only", "--seed", "1",
                   "--model-dir", str(tmp_path / name), *flags, "--config-file",
                   osp.join(REPO, "configs", "trainers", "AttnMMAdapter", "vit_b16_paper.yaml"),
                   "DATASET.NAME", "ToyColours", "DATALOADER.NUM_WORKERS", "0", "MODEL.BACKBONE.NAME", "test-tiny",
                   "MODEL.BACKBONE.WEIGHTS", "random"])
        log = read(osp.join(out, "log.txt"))
        accuracies.append([line for line in log.splitlines() if line.startswith("* accuracy")])
    assert "adapter_state_dict.pt\" (reference file, epoch = ?)" in log
    assert accuracies[0] == accuracies[1] and accuracies[0]


# ---------------------------------------------------------------------------------------------
# CoOp's parse_test_res.py on a folder our parser has summarised
# ---------------------------------------------------------------------------------------------

def test_parsed_folders_still_satisfy_coops_parser(tmp_path):
    """CoOp's parser lists a folder with ``listdir_nohidden`` and requires ``log.txt`` in each entry
    (per experiment with ``--multi-exp``); our summary file is hidden, so that still holds."""
    for exp in ("exp1", "exp2"):
        for seed in (1, 2):
            os.makedirs(tmp_path / exp / f"seed{seed}")
            (tmp_path / exp / f"seed{seed}" / "log.txt").write_text(
                "Finish training\n=> result\n* accuracy: 90.0%\n")
    with contextlib.redirect_stdout(io.StringIO()):
        assert parse_test_res.main([str(tmp_path / "exp1")]) == 0
        assert parse_test_res.main([str(tmp_path), "--multi-exp"]) == 0
    written = [osp.join(d, f) for d, _, files in os.walk(tmp_path) for f in files if f != "log.txt"]
    assert written and all(osp.basename(p).startswith(".") for p in written)
    for exp in listdir_nohidden(str(tmp_path)):
        assert all(osp.isfile(tmp_path / exp / seed / "log.txt") for seed in listdir_nohidden(str(tmp_path / exp)))
