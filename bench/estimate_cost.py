"""Estimated GPU time and memory per method and protocol (the tables of docs/compute.md).

    python bench/estimate_cost.py [--image-ms 2.7] [--seeds 3]

Nothing is run: the image and step counts are exact (published split sizes, the shipped configs'
shots, batch sizes and epochs); the per-image and per-class costs are estimates, scaled from one
measurement: ViT-B/16 inference takes 85 ms per batch of 32 images on an RTX 3090 in fp32
(``--image-ms`` = 85 / 32; measure your own GPU with bench/bench_step.py and pass it here). See
docs/compute.md for how each method's costs are derived.
"""
import argparse
import math
import os
import sys

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from harness.protocols import METHODS  # noqa: E402

# Classes and split sizes of the 11 base-to-novel datasets and the 4 ImageNet variants (datasets.md).
CLASSES = {"imagenet": 1000, "caltech101": 100, "oxford_pets": 37, "stanford_cars": 196, "oxford_flowers": 102,
           "food101": 101, "fgvc_aircraft": 100, "sun397": 397, "dtd": 47, "eurosat": 10, "ucf101": 101}
TEST = {"imagenet": 50000, "caltech101": 2465, "oxford_pets": 3669, "stanford_cars": 8041, "oxford_flowers": 2463,
        "food101": 30300, "fgvc_aircraft": 3333, "sun397": 19850, "dtd": 1692, "eurosat": 8100, "ucf101": 3783}
DG_TEST = {"imagenetv2": 10000, "imagenet_sketch": 50889, "imagenet_a": 7500, "imagenet_r": 30000}
SHOTS = 16

# Training cost per image and per class and step, in units of one ViT-B/16 image forward (F);
# image None: features are encoded once (AttnMMAdapter); per_image_text: the prompts depend on the
# image, so the text cost is per class and image (CoCoOp). Derivations in docs/compute.md. The
# configs are those of harness/protocols.py (what the scripts and scripts/benchmark.py run).
COSTS = {
    "CLIP_Adapter": dict(image=1.0, per_class=0.0),
    "MultiModalAdapter": dict(image=1.84, per_class=0.067),
    "MMRL": dict(image=2.39, per_class=0.30),
    "MMRLpp": dict(image=2.39, per_class=0.30),
    "CoOp": dict(image=1.0, per_class=0.10),
    "CoCoOp": dict(image=1.1, per_class=0.10, per_image_text=True),
    "MaPLe": dict(image=2.2, per_class=0.10),
    "AttnMMAdapter": dict(image=None, per_class=0.0),
}


def config(trainer, name):
    folder = METHODS[trainer].config_dir or trainer
    with open(os.path.join(REPO, "configs", "trainers", folder, f"{name}.yaml")) as f:
        cfg = yaml.safe_load(f)
    return cfg["DATALOADER"]["TRAIN_X"]["BATCH_SIZE"], cfg["OPTIM"]["MAX_EPOCH"]


def training(trainer, cfg_name, n_classes, val_images=None):
    """(steps, forward-equivalents) of one training run on ``n_classes`` classes with 16 shots;
    ``val_images``: the validation set (default: 4 shots per class; ImageNet's is its test set)."""
    cost = COSTS[trainer]
    batch, epochs = config(trainer, cfg_name)
    images = SHOTS * n_classes
    steps = max(1, images // batch) * epochs
    if cost["image"] is None:  # features encoded once (train + val); the epochs' cost is negligible
        val = min(SHOTS, 4) * n_classes if val_images is None else val_images
        return steps, images + val
    text = n_classes * cost["per_class"] * (batch if cost.get("per_image_text") else 1)
    return steps, steps * (batch * cost["image"] + text)


def protocols(trainer):
    """{protocol: (training steps, forward-equivalents of training, test images)} for one seed."""
    method = METHODS[trainer]
    b2n_steps = b2n_train = 0.0
    for dataset, n in CLASSES.items():
        if dataset == "imagenet":
            continue
        steps, cost = training(trainer, method.base2new.cfg_for(dataset), math.ceil(n / 2))
        b2n_steps, b2n_train = b2n_steps + steps, b2n_train + cost
    in_steps, in_train = training(trainer, method.base2new.cfg_for("imagenet"), 500, TEST["imagenet"] // 2)
    xd_steps, xd_train = training(trainer, method.xd.cfg_for("imagenet"), 1000, TEST["imagenet"])
    small_test = sum(v for k, v in TEST.items() if k != "imagenet")
    return {
        "base-to-novel, 10 datasets": (b2n_steps, b2n_train, small_test),
        "base-to-novel, ImageNet": (in_steps, in_train, TEST["imagenet"]),
        "cross-dataset + DG (ImageNet, 14 targets)": (xd_steps, xd_train, sum(TEST.values()) + sum(DG_TEST.values())),
    }


def duration(forwards, image_ms):
    minutes = forwards * image_ms / 1000 / 60
    return f"{minutes:.0f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-ms", type=float, default=85 / 32, help="ms per ViT-B/16 image forward")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"| Method | Protocol (one seed) | Training steps | Training | Testing (images) | Total, 1 seed | "
          f"{args.seeds} seeds |")
    print("|---|---|---|---|---|---|---|")
    for name in COSTS:
        for protocol, (steps, train, test) in protocols(name).items():
            cached = COSTS[name]["image"] is None
            shown = f"≤ {steps:,.0f} (cached features)" if cached else f"{steps:,.0f}"
            print(f"| {name} | {protocol} | {shown} | {duration(train, args.image_ms)} | "
                  f"{duration(test, args.image_ms)} ({test:,}) | {duration(train + test, args.image_ms)} | "
                  f"{duration(args.seeds * (train + test), args.image_ms)} |")
    zs = sum(TEST.values()) + sum(DG_TEST.values())
    print(f"| ZeroshotCLIP | all 15 test sets | 0 | - | {duration(zs, args.image_ms)} ({zs:,}) | "
          f"{duration(zs, args.image_ms)} | (no seeds) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
