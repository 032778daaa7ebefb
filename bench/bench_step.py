"""Seconds per training iteration (or per test batch) and peak memory of a trainer, on synthetic batches.

    python bench/bench_step.py --trainer MultiModalAdapter \
        --config-file configs/trainers/MultiModalAdapter/vit_b16_ep5.yaml [--iters 5] [KEY VALUE ...]

``--mode eval`` times ``model_inference`` on test batches (default size: the config's TEST batch
size) in eval mode, as ``test()`` runs it; the warm-up batch pays for anything computed once per
evaluation (e.g. cached text features).

The backbone defaults to ViT-B/16 with random weights (MODEL.BACKBONE.NAME / WEIGHTS override it).
The class list comes from a generated toy dataset with ``--classes`` classes; images are random
tensors of the config's INPUT.SIZE, so data loading is not measured. Runs on the GPU when present.
``cpu_s/iter`` is the process's CPU time per iteration (all threads), less sensitive than the wall
time to other programs sharing the machine.
"""
import argparse
import os
import resource
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "tests")]

import torch  # noqa: E402

import train  # noqa: E402
import toy  # noqa: E402
from dassl.engine import build_trainer  # noqa: E402


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trainer", required=True)
    parser.add_argument("--config-file", default="")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--mode", choices=("train", "eval"), default="train")
    parser.add_argument("--batch-size", type=int, default=0,
                        help="default: the config's TRAIN_X (train) or TEST (eval) batch size")
    parser.add_argument("--classes", type=int, default=50, help="number of classes (text prompts)")
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    a = parser.parse_args()

    root = tempfile.mkdtemp(prefix="bench-")
    toy.make_toy_root(root, per_class=2, num_classes=a.classes)
    args = train.build_parser().parse_args(
        ["--root", root, "--trainer", a.trainer, "--config-file", a.config_file,
         "--output-dir", os.path.join(root, "out"),
         "DATASET.NAME", "ToyColours", "DATALOADER.NUM_WORKERS", "0",
         "MODEL.BACKBONE.NAME", "ViT-B/16", "MODEL.BACKBONE.WEIGHTS", "random"] + a.opts
    )
    cfg = train.setup_cfg(args)
    trainer = build_trainer(cfg)
    loader = cfg.DATALOADER.TRAIN_X if a.mode == "train" else cfg.DATALOADER.TEST
    bs = a.batch_size or loader.BATCH_SIZE
    h, w = cfg.INPUT.SIZE
    batch = {
        "img": torch.randn(bs, 3, h, w),
        "label": torch.randint(0, trainer.num_classes, (bs,)),
        "domain": torch.zeros(bs, dtype=torch.long),
        "index": torch.arange(bs),
        "impath": [""] * bs,
    }
    if a.mode == "train":
        # A trainer whose epoch loop feeds something other than images (e.g. cached features)
        # converts the synthetic batch once, outside the timing.
        prepare = getattr(trainer, "prepare_bench_batch", None)
        if prepare is not None:
            batch = prepare(batch)
        trainer.set_model_mode("train")
        trainer.num_batches, trainer.batch_idx = 10**6, 0  # never the last batch: no LR step
        step = trainer.forward_backward
    else:
        trainer.set_model_mode("eval")
        images = batch["img"].to(trainer.device)

        def step(_):
            with torch.no_grad():
                trainer.model_inference(images)
    cuda = trainer.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times, cpu_times = [], []
    for i in range(a.warmup + a.iters):
        if cuda:
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        step(batch)
        if cuda:
            torch.cuda.synchronize()
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
    mem = f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB GPU" if cuda else f"{peak_rss_mib():.0f} MiB RSS"
    device = torch.cuda.get_device_name() if cuda else "CPU"
    extra = " ".join(a.opts)
    print(f"RESULT trainer={a.trainer} mode={a.mode} device={device} batch={bs} classes={trainer.num_classes} "
          f"s/iter={sum(times) / len(times):.3f} (min {min(times):.3f}) cpu_s/iter={sum(cpu_times) / len(times):.3f} "
          f"peak={mem} opts=[{extra}]")


if __name__ == "__main__":
    main()
