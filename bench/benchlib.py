"""What the benchmarks share: a generated image dataset, trainers at ViT-B/16 with random weights,
synthetic batches and timers. Self-contained: nothing here comes from ``tests/``.

The repository to benchmark is whatever ``import train`` finds first on ``sys.path`` (the scripts
put their own checkout there; ``compare.py`` puts another one first to time two versions).
"""
import os
import os.path as osp
import random
import resource
import time

import numpy as np
import torch
from PIL import Image

from dassl.data.datasets import DATASET_REGISTRY, DatasetBase, Datum

DATASET_NAME = "BenchImages"

# The config node of each trainer's PREC and speed switches (False = the direct path; same numbers).
PREC_KEYS = {
    "ZeroshotCLIP": None, "ZeroshotCLIP2": None,
    "CLIP_Adapter": "TRAINER.CLIP_ADAPTER.PREC", "MultiModalAdapter": "TRAINER.MMADAPTER.PREC",
    "AttnMMAdapter": "TRAINER.ATTN_MM_ADAPTER.PREC", "MMRL": "TRAINER.MMRL.PREC", "MMRLpp": "TRAINER.MMRLpp.PREC",
    "CoOp": "TRAINER.COOP.PREC", "CoCoOp": "TRAINER.COCOOP.PREC", "MaPLe": "TRAINER.MAPLE.PREC",
}
SPEED_SWITCHES = {
    "CLIP_Adapter": ["TRAINER.CLIP_ADAPTER.CACHE_TEXT_FEATURES"],
    "MultiModalAdapter": ["TRAINER.MMADAPTER.CACHE_FROZEN_TEXT", "TRAINER.MMADAPTER.TRUNCATE_TEXT",
                          "TRAINER.MMADAPTER.CACHE_EVAL_TEXT"],
    "AttnMMAdapter": ["TRAINER.ATTN_MM_ADAPTER.CACHE_FEATURES"],
    "MMRL": ["TRAINER.MMRL.SHARE_LOWER_LAYERS", "TRAINER.MMRL.CACHE_TEXT_LOWER_LAYERS"],
    "MMRLpp": ["TRAINER.MMRLpp.SHARE_LOWER_LAYERS", "TRAINER.MMRLpp.CACHE_TEXT_LOWER_LAYERS"],
    "CoOp": ["TRAINER.COOP.TRUNCATE_TEXT", "TRAINER.COOP.CACHE_EVAL_TEXT"],
    "CoCoOp": ["TRAINER.COCOOP.TRUNCATE_TEXT"],
    "MaPLe": ["TRAINER.MAPLE.TRUNCATE_TEXT", "TRAINER.MAPLE.CACHE_EVAL_TEXT"],
}
# Switches of the evaluation cache shared by runs (issue #15 item 2), where this checkout has it.
EVAL_CACHE_SWITCHES = ["EVAL_CACHE.FEATURES", "EVAL_CACHE.IMAGES"]

# Each trainer's base-to-novel ViT-B/16 config (its training batch size is the config's).
CONFIGS = {
    "ZeroshotCLIP": "configs/trainers/ZeroshotCLIP/vit_b16.yaml",
    "CLIP_Adapter": "configs/trainers/CLIP_Adapter/vit_b16.yaml",
    "MultiModalAdapter": "configs/trainers/MultiModalAdapter/vit_b16_ep5.yaml",
    "AttnMMAdapter": "configs/trainers/AttnMMAdapter/vit_b16.yaml",
    "MMRL": "configs/trainers/MMRL/vit_b16.yaml",
    "MMRLpp": "configs/trainers/MMRLpp/vit_b16.yaml",
    "CoOp": "configs/trainers/CoOp/vit_b16_ctxv1.yaml",
    "CoCoOp": "configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml",
    "MaPLe": "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml",
}


# ---------------------------------------------------------------------------------------------
# A generated dataset
# ---------------------------------------------------------------------------------------------

def classnames(n):
    """``n`` class names: four colour words, then ``toy_class_<i>`` (as the issue's measurements used)."""
    first = ["red_square", "green_thing", "blue_sky", "grey_wall"]
    return first[:n] + [f"toy_class_{i}" for i in range(len(first), n)]


def write_images(root, num_classes, train_per_class, test_per_class, size=(320, 240)):
    """Write ``root/bench_images/<class>/{train,test}_<i>.jpg`` (skipped when already there); returns ``root``.

    Photo-sized JPEGs (``size`` = width, height) with smooth class-coloured content and noise, so
    that decoding and resizing cost what they cost on real data. Deterministic.
    """
    base = osp.join(root, "bench_images")
    marker = osp.join(base, f"DONE-{num_classes}-{train_per_class}-{test_per_class}-{size[0]}x{size[1]}")
    if osp.isfile(marker):
        return root
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for label, name in enumerate(classnames(num_classes)):
        folder = osp.join(base, name)
        os.makedirs(folder, exist_ok=True)
        rng = np.random.default_rng(label)
        colour = rng.uniform(40, 215, size=3).astype(np.float32)
        for split, count in (("train", train_per_class), ("test", test_per_class)):
            for i in range(count):
                phase = rng.uniform(0, 6.28)
                wave = 30 * np.sin(xx / (9 + label % 7) + phase) + 30 * np.cos(yy / (11 + i % 5))
                pixels = colour[None, None, :] + wave[..., None] + rng.normal(0, 12, size=(h, w, 3))
                image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
                image.save(osp.join(folder, f"{split}_{i}.jpg"), "JPEG", quality=90)
    open(marker, "w").close()
    return root


@DATASET_REGISTRY.register(force=True)
class BenchImages(DatasetBase):
    """``write_images``'s folders: train/test splits (val = test), few-shot sampling and base/new halves."""

    dataset_dir = "bench_images"

    def __init__(self, cfg):
        from datasets.common import subsample_classes

        root = osp.join(osp.abspath(osp.expanduser(cfg.DATASET.ROOT)), self.dataset_dir)
        names = [n for n in os.listdir(root) if osp.isdir(osp.join(root, n))]
        order = {n: i for i, n in enumerate(classnames(len(names)))}
        splits = {"train": [], "test": []}
        for name in sorted(names, key=order.__getitem__):
            label = order[name]
            for f in sorted(os.listdir(osp.join(root, name)), key=lambda f: (len(f), f)):
                split = f.split("_")[0]
                splits[split].append(Datum(impath=osp.join(root, name, f), label=label, classname=name))
        train = self.generate_fewshot_dataset(splits["train"], num_shots=cfg.DATASET.NUM_SHOTS)
        train, test = subsample_classes(train, splits["test"], subsample=cfg.DATASET.SUBSAMPLE_CLASSES)
        super().__init__(train_x=train, val=test, test=test)


# ---------------------------------------------------------------------------------------------
# Trainers
# ---------------------------------------------------------------------------------------------

def default_cfg():
    """The project's config tree before any YAML (to see which keys this checkout has)."""
    from dassl.config import get_cfg_default
    from trainers.config import extend_cfg

    cfg = get_cfg_default()
    extend_cfg(cfg)
    return cfg


def has_key(cfg, key):
    node = cfg
    for part in key.split("."):
        if part not in node:
            return False
        node = node[part]
    return True


def switch_opts(trainer, caches):
    """Overrides for ``caches`` "on" (the defaults) or "off" (every speed switch and eval cache False)."""
    if caches == "on":
        return []
    cfg = default_cfg()
    keys = SPEED_SWITCHES.get(trainer, []) + EVAL_CACHE_SWITCHES
    return [x for key in keys if has_key(cfg, key) for x in (key, "False")]


def eval_cache_available():
    return all(has_key(default_cfg(), key) for key in EVAL_CACHE_SWITCHES)


def prec_opts(trainer, prec):
    """Overrides for ``prec`` (fp32, amp, fp16; "config" keeps the YAML's)."""
    if prec == "config":
        return []
    key = PREC_KEYS.get(trainer)
    if key is None:
        if trainer not in PREC_KEYS:
            raise SystemExit(f"error: no PREC key known for trainer {trainer} (bench/benchlib.py PREC_KEYS)")
        return []
    return [key, prec]


def add_trainer_args(parser, prec_default="config"):
    """``--trainer``, ``--config-file`` and ``--prec``, as every benchmark takes them."""
    parser.add_argument("--trainer", required=True)
    parser.add_argument("--config-file", default="", help="default: the trainer's base-to-novel ViT-B/16 config")
    parser.add_argument("--prec", default=prec_default, choices=("config", "fp32", "amp", "fp16"),
                        help="the trainer's PREC (config: the YAML's)")


def build(trainer, config_file, root, output_dir, opts=(), backbone="ViT-B/16", weights="random",
          dataset=DATASET_NAME, workers=0):
    """A trainer as ``train.py`` builds it (no run record), on the dataset under ``root``."""
    import train
    from dassl.engine import build_trainer

    args = train.build_parser().parse_args(
        ["--root", root, "--trainer", trainer, "--config-file", config_file, "--output-dir", output_dir,
         "DATASET.NAME", dataset, "DATALOADER.NUM_WORKERS", str(workers),
         "MODEL.BACKBONE.NAME", backbone, "MODEL.BACKBONE.WEIGHTS", weights] + list(opts))
    cfg = train.setup_cfg(args)
    if cfg.SEED >= 0:
        set_seed(cfg.SEED)
    return build_trainer(cfg)


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def synthetic_batch(trainer, batch_size, seed=0):
    """A training/test batch of random images of the config's INPUT.SIZE and random labels."""
    g = torch.Generator().manual_seed(seed)
    h, w = trainer.cfg.INPUT.SIZE
    return {
        "img": torch.randn(batch_size, 3, h, w, generator=g),
        "label": torch.randint(0, trainer.num_classes, (batch_size,), generator=g),
        "domain": torch.zeros(batch_size, dtype=torch.long),
        "index": torch.arange(batch_size),
        "impath": [""] * batch_size,
    }


def train_step(trainer, batch):
    """One call = one ``forward_backward`` on ``batch`` (never the epoch's last batch: no LR step)."""
    # A trainer whose epoch loop feeds something else than images (e.g. cached features) converts
    # the batch once, outside the timing.
    prepare = getattr(trainer, "prepare_bench_batch", None)
    if prepare is not None:
        batch = prepare(batch)
    trainer.set_model_mode("train")
    trainer.num_batches, trainer.batch_idx = 10**6, 0

    def step():
        trainer.forward_backward(batch)
    return step


def eval_step(trainer, images):
    """One call = ``model_inference`` on ``images`` in eval mode, as ``test()`` runs it."""
    trainer.set_model_mode("eval")
    images = images.to(trainer.device)

    @torch.no_grad()
    def step():
        trainer.model_inference(images)
    return step


# ---------------------------------------------------------------------------------------------
# Timing and memory
# ---------------------------------------------------------------------------------------------

def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    """``(wall seconds, process CPU seconds, result)`` of one call, the device synchronised around it.

    CPU seconds count every thread of this process, and are much less sensitive than the wall
    time to other programs sharing the machine.
    """
    synchronize(device)
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    synchronize(device)
    return time.perf_counter() - t0, time.process_time() - c0, result


def count_flops(fn):
    """Floating-point operations of one call (matrix products, convolutions and attention, as
    ``torch.utils.flop_counter`` counts them; elementwise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def matmul_peak_flops(device, n=1024, repeats=20):
    """This machine's fp32 matrix-product rate (FLOP/s) on [n, n] @ [n, n], the ceiling of a step
    made of matrix products: step FLOPs / this rate is the least time any exact fp32 code can take."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * n ** 3 * repeats / (time.perf_counter() - t0)


def reset_peak_memory(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device):
    """Peak device memory since the last reset (CUDA), or the process's peak resident memory (CPU)."""
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f}MiB-GPU"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}MiB-RSS"


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device).replace(" ", "_")
    return f"CPU-{torch.get_num_threads()}threads"


def result_line(**fields):
    """``RESULT key=value ...``: one line per measurement, easy to grep and to parse."""
    return "RESULT " + " ".join(f"{k}={v}" for k, v in fields.items())
