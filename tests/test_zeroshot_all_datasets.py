"""A ZeroshotCLIP evaluation runs on each of the 15 dataset configs (miniature data, tiny backbone)."""
import math
import os.path as osp

import pytest

from helpers import read, run_train

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
BENCHMARK = {"imagenet": 1000, "caltech101": 100, "oxford_pets": 37, "stanford_cars": 196, "oxford_flowers": 102,
             "food101": 101, "fgvc_aircraft": 100, "sun397": 397, "dtd": 47, "eurosat": 10, "ucf101": 101}
VARIANTS = {"imagenetv2": 1000, "imagenet_sketch": 1000, "imagenet_a": 200, "imagenet_r": 200}


@pytest.mark.parametrize("stem", list(BENCHMARK) + list(VARIANTS))
def test_zeroshot_eval_on_every_dataset_config(mini_root, tmp_path, stem):
    subsample = "base" if stem in BENCHMARK else "all"
    run_train(["--root", mini_root, "--trainer", "ZeroshotCLIP", "--output-dir", str(tmp_path),
               "--dataset-config-file", osp.join(REPO, "configs", "datasets", f"{stem}.yaml"), "--eval-only",
               "DATASET.SUBSAMPLE_CLASSES", subsample, "DATALOADER.NUM_WORKERS", "0",
               "DATALOADER.TEST.BATCH_SIZE", "250", "MODEL.BACKBONE.NAME", "test-tiny", "MODEL.BACKBONE.WEIGHTS", "random"])
    log = read(tmp_path / "log.txt")
    expected = math.ceil(BENCHMARK[stem] / 2) if stem in BENCHMARK else VARIANTS[stem]
    assert f"# classes  {expected:,}" in log
    assert "* accuracy:" in log and "=> result" in log
