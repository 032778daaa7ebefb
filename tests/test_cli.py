"""train.py's command line: --help without torch, usage without arguments, the static trainer catalog
against the real registry, the config-value tables, Ctrl-C, the worker cap."""
import importlib
import os
import os.path as osp
import signal
import subprocess
import sys

import pytest
import yaml

import toy
import train
import trainers
from dassl.config import get_cfg_default
from dassl.engine import TRAINER_REGISTRY
from dassl.engine import trainer as engine
from harness import catalog
from harness.protocols import METHODS
from harness.run import config_identity
from helpers import read, run_train
from trainers.config import check_config_values, config_choices, extend_cfg

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
HIDDEN_FLAGS = ("--source-domains", "--target-domains", "--backbone", "--head", "--transforms")


def test_help_lists_trainers_configs_and_overrides_and_hides_unused_flags():
    proc = subprocess.run([sys.executable, "train.py", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for name in catalog.TRAINERS:
        assert f"\n  {name} " in text
    for stem in ("caltech101", "imagenet_sketch", "ucf101"):
        assert stem in text
    assert "configs/trainers/MultiModalAdapter/: vit_b16_ep5, vit_b16_ep5_imnet," in text
    assert "configs/trainers/MMRL/: vit_b16, vit_b16_cross_datasets" in text
    for key in ("DATASET.NUM_SHOTS", "DATASET.SUBSAMPLE_CLASSES", "MODEL.BACKBONE.WEIGHTS", "TRAINER.<NODE>.PREC"):
        assert key in text
    for flag in HIDDEN_FLAGS:
        assert flag not in text


def test_parsing_and_help_import_no_torch():
    code = ("import sys, train; train.build_parser().format_help(); "
            "train.build_parser().parse_args(['--trainer', 'MMRL', 'OPTIM.LR', '0.1']); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'open_clip', 'trainers', 'dassl')))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_no_arguments_prints_usage_and_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.cli([])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith("usage: ") and "--help lists the trainers" in err


def test_hidden_dassl_flags_are_still_accepted():
    args = train.build_parser().parse_args(["--backbone", "RN50", "--head", "mlp", "--source-domains", "a", "b",
                                            "--transforms", "random_flip", "normalize"])
    assert args.backbone == "RN50" and args.source_domains == ["a", "b"]
    assert args.transforms == ["random_flip", "normalize"]


def test_catalog_matches_the_trainer_registry():
    """Every trainer module registers exactly the names the catalog lists for it, with its config node."""
    cfg = get_cfg_default()
    extend_cfg(cfg)
    registered = {}
    for module in trainers.TRAINER_MODULES:
        for name in TRAINER_REGISTRY.registered_names():
            if TRAINER_REGISTRY.get(name).__module__ == module.__name__:
                registered[name] = module.__name__
    assert registered == {name: info.module for name, info in catalog.TRAINERS.items()}
    assert set(catalog.TRAINERS) == set(METHODS)  # every trainer has its protocol settings
    for name, info in catalog.TRAINERS.items():
        importlib.import_module(info.module)
        if info.node is not None:
            assert cfg.TRAINER[info.node].PREC in ("fp16", "fp32", "amp")
            assert catalog.precision_key(name) == f"TRAINER.{info.node}.PREC"
        assert catalog.method_configs(name), f"no configs for {name} in {catalog.config_dir(name)}"


def test_config_choices_name_existing_keys_and_allow_the_defaults():
    cfg = get_cfg_default()
    extend_cfg(cfg)
    check_config_values(cfg)  # the defaults are allowed values
    for key in config_choices():
        node = cfg
        for part in key.split("."):
            assert part in node, key
            node = node[part]
    # each trainer's precision key is checked
    for name in catalog.TRAINERS:
        if catalog.precision_key(name):
            assert catalog.precision_key(name) in config_choices()


@pytest.mark.parametrize("path", sorted(
    osp.join(d, f) for d, _, files in os.walk(osp.join(REPO, "configs", "trainers")) for f in files if f.endswith(".yaml")))
def test_every_shipped_method_config_passes_the_checks(path):
    cfg = get_cfg_default()
    extend_cfg(cfg)
    cfg.merge_from_file(path)
    check_config_values(cfg)
    with open(path) as f:
        assert isinstance(yaml.safe_load(f), dict)


def setup(argv, cpus, monkeypatch):
    monkeypatch.setattr(train, "available_cpus", lambda: cpus)
    train.import_registries()
    notes = []
    cfg = train.setup_cfg(train.build_parser().parse_args(argv), notes)
    return cfg, notes


@pytest.mark.parametrize("requested, cpus, expected", [(8, 2, 2), (8, 1, 1), (2, 4, 2), (0, 1, 0)])
def test_workers_are_capped_to_the_cpus_but_never_to_zero(monkeypatch, requested, cpus, expected):
    argv = ["--trainer", "ZeroshotCLIP", "--dataset-config-file", "configs/datasets/dtd.yaml",
            "DATALOADER.NUM_WORKERS", str(requested)]
    cfg, notes = setup(argv, cpus, monkeypatch)
    assert cfg.DATALOADER.NUM_WORKERS == expected
    assert len(notes) == (1 if requested > cpus else 0)
    if notes:
        assert notes[0].startswith(f"Note: DATALOADER.NUM_WORKERS {requested} -> {expected}")
    # the run's identity (what results depend on) is the same capped or not
    uncapped, _ = setup(argv, 64, monkeypatch)
    assert config_identity(cfg) == config_identity(uncapped)


@pytest.fixture
def toy_root(tmp_path_factory):
    return toy.make_toy_root(str(tmp_path_factory.mktemp("toy")))


def test_ctrl_c_prints_the_resume_command_and_exits_130(toy_root, tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "run")
    argv = ["--root", toy_root, "--trainer", "ToyProbe", "--output-dir", out, "--seed", "1",
            "DATASET.NAME", "ToyColours", "DATALOADER.NUM_WORKERS", "0", "INPUT.SIZE", "(32, 32)",
            "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "OPTIM.MAX_EPOCH", "3"]
    original = engine.SimpleTrainer.epoch_finished

    def ctrl_c_after_first_epoch(self):
        original(self)
        if self.epoch == 0:
            os.kill(os.getpid(), signal.SIGINT)  # through the real signal handler

    monkeypatch.setattr(engine.SimpleTrainer, "epoch_finished", ctrl_c_after_first_epoch)
    # As in a terminal: a shell starts background jobs (and so pytest run with "&") with SIGINT
    # ignored, and train.py then rightly leaves it ignored.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(SystemExit) as exit_info:
            train.cli(argv)
        handler_after = signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)
    err = capsys.readouterr().err
    assert exit_info.value.code == 130
    assert err.splitlines() == [f"Interrupted. Run the same command to resume after the last finished epoch: "
                                f"{train.command_line(argv)}"]
    assert handler_after is signal.default_int_handler  # restored
    monkeypatch.setattr(engine.SimpleTrainer, "epoch_finished", original)
    run_train(argv)  # the same command resumes
    assert "Found a resume state at" in read(osp.join(out, "log.txt"))
    assert osp.isfile(osp.join(out, "finished.json"))
