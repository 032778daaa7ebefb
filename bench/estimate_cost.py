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

# Classes and split sizes of the 11 base-to-novel datasets and the 4 ImageNet variants (datasets.md).
CLASSES = {"imagenet": 1000, "caltech101": 100, "oxford_pets": 37, "stanford_cars": 196, "oxford_flowers": 102,
           "food101": 101, "fgvc_aircraft": 100, "sun397": 397, "dtd": 47, "eurosat": 10, "ucf101": 101}
TEST = {"imagenet": 50000, "caltech101": 2465, "oxford_pets": 3669, "stanford_cars": 8041, "oxford_flowers": 2463,
        "food101": 30300, "fgvc_aircraft": 3333, "sun397": 19850, "dtd": 1692, "eurosat": 8100, "ucf101": 3783}
DG_TEST = {"imagenetv2": 10000, "imagenet_sketch": 50889, "imagenet_a": 7500, "imagenet_r": 30000}
SHOTS = 16

# Per method: the protocol configs the scripts use; training cost per image and per class and step,
# in units of one ViT-B/16 image forward (F); whether features are encoded once (AttnMMAdapter).
# Derivations in docs/compute.md.
METHODS = {
    "CLIP_Adapter": dict(b2n="vit_b16", b2n_imagenet="vit_b16_ep50", xd="vit_b16_ep50", image=1.0, per_class=0.0),
    "MultiModalAdapter": dict(b2n="vit_b16_ep5", b2n_imagenet="vit_b16_ep5_imnet", xd="vit_b16_xd",
                              image=1.84, per_class=0.067),
    "MMRL": dict(b2n="vit_b16", b2n_imagenet="vit_b16_imagenet", xd="vit_b16_cross_datasets",
                 image=2.39, per_class=0.30),
    "AttnMMAdapter": dict(b2n="vit_b16_paper", b2n_imagenet="vit_b16_paper", xd="vit_b16_paper",
                          image=None, per_class=0.0),
}


def config(trainer, name):
    with open(os.path.join(REPO, "configs", "trainers", trainer, f"{name}.yaml")) as f:
        cfg = yaml.safe_load(f)
    return cfg["DATALOADER"]["TRAIN_X"]["BATCH_SIZE"], cfg["OPTIM"]["MAX_EPOCH"]


def training(method, cfg_name, n_classes, trainer, val_images=None):
    """(steps, forward-equivalents) of one training run on ``n_classes`` classes with 16 shots;
    ``val_images``: the validation set (default: 4 shots per class; ImageNet's is its test set)."""
    batch, epochs = config(trainer, cfg_name)
    images = SHOTS * n_classes
    steps = max(1, images // batch) * epochs
    if method["image"] is None:  # features encoded once (train + val); the epochs' cost is negligible
        val = min(SHOTS, 4) * n_classes if val_images is None else val_images
        return steps, images + val
    return steps, steps * (batch * method["image"] + n_classes * method["per_class"])


def protocols(name, method):
    """{protocol: (training steps, forward-equivalents of training, test images)} for one seed."""
    b2n_steps = b2n_train = 0.0
    for dataset, n in CLASSES.items():
        if dataset == "imagenet":
            continue
        steps, cost = training(method, method["b2n"], math.ceil(n / 2), name)
        b2n_steps, b2n_train = b2n_steps + steps, b2n_train + cost
    in_steps, in_train = training(method, method["b2n_imagenet"], 500, name, TEST["imagenet"] // 2)
    xd_steps, xd_train = training(method, method["xd"], 1000, name, TEST["imagenet"])
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
    for name, method in METHODS.items():
        for protocol, (steps, train, test) in protocols(name, method).items():
            shown = f"≤ {steps:,.0f} (cached features)" if method["image"] is None else f"{steps:,.0f}"
            print(f"| {name} | {protocol} | {shown} | {duration(train, args.image_ms)} | "
                  f"{duration(test, args.image_ms)} ({test:,}) | {duration(train + test, args.image_ms)} | "
                  f"{duration(args.seeds * (train + test), args.image_ms)} |")
    zs = sum(TEST.values()) + sum(DG_TEST.values())
    print(f"| ZeroshotCLIP | all 15 test sets | 0 | - | {duration(zs, args.image_ms)} ({zs:,}) | "
          f"{duration(zs, args.image_ms)} | (no seeds) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
