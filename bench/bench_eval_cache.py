"""Evaluation time with the eval cache off and on (trainers/common/eval_inputs.py), ViT-B/16 random weights.

    python bench/bench_eval_cache.py [--trainers ZeroshotCLIP MultiModalAdapter ...] [--classes 50]
        [--per-class 2] [--workers 0] [--size 500x375] [--loader-only] [KEY VALUE ...]

A generated dataset (bench/benchlib.py) with ``--classes`` classes and ``--per-class`` test images each (JPEGs of ``--size``
pixels with texture, so decoding and resizing cost what they cost on photos) is written to a
temporary folder, with a fresh, empty cache folder. For each trainer (fp32, test batch 100):

- ``off``: ``trainer.test()`` with ``EVAL_CACHE.FEATURES False EVAL_CACHE.IMAGES False`` (the direct
  path: decode, resize, encode every image; the files were just written, so they are in the page cache);
- ``first``: the first ``test()`` of a run with the cache on (computes and stores the entry);
- ``rerun``: ``test()`` of a second run of the same model (a new trainer, as when re-evaluating a
  finished run): reads the entry, including the one-off weights digest.

and, for the trainers with preprocessed images, ``loader``: images/s of iterating the test loader
alone (direct vs cached, best of 3), i.e. what feeds a GPU; ``--loader-only`` measures just that. One
``RESULT`` line per measurement. Accuracies of
off and rerun must agree (checked). The caches' switch for other benchmarks: the overrides
``EVAL_CACHE.FEATURES False EVAL_CACHE.IMAGES False``.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if __name__ == "__main__":
    sys.path[:0] = [os.path.dirname(HERE), HERE]

import torch  # noqa: E402

import benchlib  # noqa: E402
from harness.disk_cache import ENV_VAR  # noqa: E402
from trainers.common.eval_inputs import weights_digest  # noqa: E402

CONFIGS = {
    "ZeroshotCLIP": ("ZeroshotCLIP/vit_b16", []),
    "CLIP_Adapter": ("CLIP_Adapter/vit_b16", []),
    "CoOp": ("CoOp/vit_b16_ctxv1", ["TRAINER.COOP.PREC", "fp32"]),
    "CoCoOp": ("CoCoOp/vit_b16_c4_ep10_batch1", ["TRAINER.COCOOP.PREC", "fp32"]),
    "AttnMMAdapter": ("AttnMMAdapter/vit_b16", []),
    "MultiModalAdapter": ("MultiModalAdapter/vit_b16_ep5", ["TRAINER.MMADAPTER.PREC", "fp32"]),
    "MMRL": ("MMRL/vit_b16", ["TRAINER.MMRL.PREC", "fp32"]),
    "MaPLe": ("MaPLe/vit_b16_c2_ep5_batch4_2ctx", ["TRAINER.MAPLE.PREC", "fp32"]),
}
OFF = ["EVAL_CACHE.FEATURES", "False", "EVAL_CACHE.IMAGES", "False"]


def make_trainer(name, root, out, workers, extra):
    config, prec = CONFIGS[name]
    config_file = os.path.join(os.path.dirname(HERE), "configs", "trainers", f"{config}.yaml")
    return benchlib.build(name, config_file, root, out, opts=["SEED", "1", "DATALOADER.TEST.BATCH_SIZE", "100", *prec,
                                                               *extra], workers=workers)


def timed(fn):
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def quiet(fn):
    """Run ``fn`` with stdout silenced (trainer logs)."""
    saved = sys.stdout
    sys.stdout = open(os.devnull, "w")
    try:
        return fn()
    finally:
        sys.stdout.close()
        sys.stdout = saved


def loader_rate(loader):
    seconds, n = timed(lambda: sum(len(batch["label"]) for batch in loader))
    return n / seconds


def report_loader(name, trainer, workers):
    """Images/s of the test loader alone: decoding (direct) vs the cached pixels, best of 3."""
    direct_rate = max(loader_rate(trainer.dm.test_loader) for _ in range(3))
    cached_rate = max(loader_rate(trainer.test_loader) for _ in range(3))
    report(trainer=name, mode="loader", workers=workers, direct_img_per_s=f"{direct_rate:.0f}",
           cached_img_per_s=f"{cached_rate:.0f}", speedup=f"{cached_rate / direct_rate:.1f}x")


def report(**fields):
    print("RESULT " + " ".join(f"{k}={v}" for k, v in fields.items()), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trainers", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--classes", type=int, default=50)
    parser.add_argument("--per-class", type=int, default=2, help="test images per class")
    parser.add_argument("--size", default="500x375", help="image size WxH")
    parser.add_argument("--workers", type=int, default=0, help="DATALOADER.NUM_WORKERS")
    parser.add_argument("--loader-only", action="store_true",
                        help="only the input pipeline's images/s (trainers with preprocessed images)")
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    a = parser.parse_args()

    work = tempfile.mkdtemp(prefix="bench-eval-cache-")
    os.environ[ENV_VAR] = os.path.join(work, "cache")
    root = os.path.join(work, "data")
    benchlib.write_images(root, a.classes, 1, a.per_class, tuple(int(v) for v in a.size.split("x")))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"# {device}, torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} "
          f"(cores {os.cpu_count()}), {a.classes * a.per_class} test images of {a.size}", flush=True)
    try:
        for name in a.trainers:
            run(name, root, work, a)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"# load average at the end {os.getloadavg()[0]:.1f}")


def run(name, root, work, a):
    opts = list(a.opts)
    n = a.classes * a.per_class
    if a.loader_only:
        trainer = quiet(lambda: make_trainer(name, root, os.path.join(work, f"{name}-loader"), a.workers, opts))
        if not hasattr(trainer.test_loader, "pil_steps"):
            return
        quiet(lambda: loader_rate(trainer.test_loader))  # decodes once into the cache
        report_loader(name, trainer, a.workers)
        return
    off = quiet(lambda: make_trainer(name, root, os.path.join(work, f"{name}-off"), a.workers, OFF + opts))
    off_s, off_acc = timed(lambda: quiet(off.test))  # the images were just written: in the page cache
    report(trainer=name, mode="off", images=n, s=f"{off_s:.2f}", img_per_s=f"{n / off_s:.1f}")

    first = quiet(lambda: make_trainer(name, root, os.path.join(work, f"{name}-first"), a.workers, opts))
    first_s, _ = timed(lambda: quiet(first.test))
    report(trainer=name, mode="first", images=n, s=f"{first_s:.2f}", img_per_s=f"{n / first_s:.1f}")

    rerun = quiet(lambda: make_trainer(name, root, os.path.join(work, f"{name}-rerun"), a.workers, opts))
    rerun_s, rerun_acc = timed(lambda: quiet(rerun.test))
    if abs(rerun_acc - off_acc) > 1e-9:
        raise SystemExit(f"{name}: accuracy with the cache {rerun_acc} != without {off_acc}")
    report(trainer=name, mode="rerun", images=n, s=f"{rerun_s:.3f}", img_per_s=f"{n / rerun_s:.1f}",
           speedup=f"{off_s / rerun_s:.1f}x")

    if hasattr(rerun.test_loader, "pil_steps"):  # preprocessed images: the input pipeline alone
        report_loader(name, rerun, a.workers)
    else:
        clip_visual = rerun.model.clip_model.visual if hasattr(rerun, "model") else rerun.clip_model.visual
        digest_s, _ = timed(lambda: weights_digest(clip_visual))
        report(trainer=name, mode="digest", s=f"{digest_s:.3f}")


if __name__ == "__main__":
    main()
