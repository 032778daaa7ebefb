"""Seconds per training iteration (or per test batch) and peak memory of a trainer, on synthetic batches.

    python bench/bench_step.py --trainer MultiModalAdapter \\
        --config-file configs/trainers/MultiModalAdapter/vit_b16_ep5.yaml [--iters 5] [--prec amp] [KEY VALUE ...]

``--mode eval`` times ``model_inference`` on test batches (default size: the config's TEST batch
size) in eval mode, as ``test()`` runs it; the warm-up batch pays for anything computed once per
evaluation (e.g. cached text features).

The backbone defaults to ViT-B/16 with random weights (MODEL.BACKBONE.NAME / WEIGHTS override it).
The class list is that of a generated dataset with ``--classes`` classes; images are random
tensors of the config's INPUT.SIZE, so data loading is not measured. Runs on the GPU when present
(``--prec fp16`` or ``amp`` there). ``cpu_s/iter`` is the process's CPU time per iteration (all
threads), less sensitive than the wall time to other programs sharing the machine.

``--flops`` adds the step's matrix-product FLOPs (``gflop/iter``), the rate achieved
(``gflop/s``), the machine's fp32 matmul rate (``matmul_gflop/s``) and their ratio
(``of_matmul_peak``): how far the step is from the floor that any exact fp32 code has. The counter
does not see ``nn.MultiheadAttention``'s fused inference kernel, which frozen blocks take in eval
mode without autograd, so ``--mode eval`` figures count too few FLOPs (MMA's ViT-B/16 evaluation:
~60% of them).
``--profile N`` prints the N operators of one more step with the most self time.
"""
import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
if __name__ == "__main__":
    sys.path[:0] = [os.path.dirname(HERE), HERE]

import benchlib  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    benchlib.add_trainer_args(parser)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--mode", choices=("train", "eval"), default="train")
    parser.add_argument("--batch-size", type=int, default=0,
                        help="default: the config's TRAIN_X (train) or TEST (eval) batch size")
    parser.add_argument("--classes", type=int, default=50, help="number of classes (text prompts)")
    parser.add_argument("--flops", action="store_true", help="also count the step's FLOPs and the matmul peak")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also print the N operators of one step with the most self time (torch.profiler)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser.parse_args(argv)


def setup(a, root):
    """The trainer and one timed step for the options ``a``: ``(trainer, step, batch_size)``."""
    config_file = a.config_file or benchlib.CONFIGS.get(a.trainer, "")
    benchlib.write_images(root, a.classes, 1, 1, size=(16, 16))
    trainer = benchlib.build(a.trainer, config_file, root, os.path.join(root, "out"),
                             benchlib.prec_opts(a.trainer, a.prec) + list(a.opts))
    loader = trainer.cfg.DATALOADER.TRAIN_X if a.mode == "train" else trainer.cfg.DATALOADER.TEST
    batch_size = a.batch_size or loader.BATCH_SIZE
    batch = benchlib.synthetic_batch(trainer, batch_size)
    if a.mode == "train":
        return trainer, benchlib.train_step(trainer, batch), batch_size
    return trainer, benchlib.eval_step(trainer, batch["img"]), batch_size


def main(argv=None):
    a = parse_args(argv)
    root = tempfile.mkdtemp(prefix="bench-")
    trainer, step, batch_size = setup(a, root)
    device = trainer.device
    benchlib.reset_peak_memory(device)
    walls, cpus = [], []
    for i in range(a.warmup + a.iters):
        wall, cpu, _ = benchlib.timed(step, device)
        if i >= a.warmup:
            walls.append(wall)
            cpus.append(cpu)
    wall = sum(walls) / len(walls)
    extra = {}
    if a.flops:
        flops = benchlib.count_flops(step)
        peak = benchlib.matmul_peak_flops(device)
        extra = {"gflop/iter": f"{flops / 1e9:.1f}", "gflop/s": f"{flops / min(walls) / 1e9:.1f}",
                 "matmul_gflop/s": f"{peak / 1e9:.1f}", "of_matmul_peak": f"{flops / min(walls) / peak:.2f}"}
    if a.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            step()
        sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=sort_by, row_limit=a.profile))
    print(benchlib.result_line(
        trainer=a.trainer, mode=a.mode, device=benchlib.device_name(device), prec=a.prec, batch=batch_size,
        classes=trainer.num_classes, **{"s/iter": f"{wall:.3f}", "min_s/iter": f"{min(walls):.3f}",
                                        "cpu_s/iter": f"{sum(cpus) / len(cpus):.3f}",
                                        "images/s": f"{batch_size / wall:.1f}", **extra},
        peak=benchlib.peak_memory(device), opts="[" + " ".join(a.opts) + "]"))


if __name__ == "__main__":
    main()
