"""Every trainer at ViT-B/16 (random weights): training step and evaluation throughput, caches on and off.

    python bench/run_all.py [--trainers MultiModalAdapter,MMRL] [--prec fp32] [--iters 3] [--test-per-class 2]

One line per measurement, each trainer in its own process:

- ``measure=train``: one ``forward_backward`` on a synthetic batch of the config's size (the
  config's optimiser; data loading not included): seconds and CPU seconds per step, images/s;
- ``measure=eval``: ``trainer.test()`` on the generated test split (JPEG decoding, transforms,
  the data loader and the model; images/s over the whole evaluation). With ``caches=on`` it runs
  twice: ``pass=cold`` fills the evaluation cache shared by runs, ``pass=warm`` is a re-evaluation.

``caches=off`` turns off every speed switch of the trainer that has one (``benchlib.SPEED_SWITCHES``,
the direct path with the same numbers) and the evaluation cache (``EVAL_CACHE.*``, when this
checkout has it; ``eval_cache=absent`` otherwise). Classes: ``--classes`` (50) text prompts.
"""
import argparse
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if __name__ == "__main__":
    sys.path[:0] = [REPO, HERE]

TRAINERS = ["ZeroshotCLIP", "CLIP_Adapter", "MultiModalAdapter", "AttnMMAdapter", "MMRL", "MMRLpp", "CoOp", "CoCoOp",
            "MaPLe"]
EVAL_ONLY = {"ZeroshotCLIP"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trainers", default=",".join(TRAINERS), help="comma-separated trainer names")
    parser.add_argument("--prec", default="fp32", choices=("config", "fp32", "amp", "fp16"),
                        help="default fp32 (the configs' amp/fp16 are meant for a GPU)")
    parser.add_argument("--caches", default="on,off", help="on, off or both")
    parser.add_argument("--measures", default="train,eval")
    parser.add_argument("--iters", type=int, default=3, help="timed training steps (after one warm-up step)")
    parser.add_argument("--classes", type=int, default=50)
    parser.add_argument("--test-per-class", type=int, default=2, help="test images per class")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="DATALOADER.NUM_WORKERS")
    parser.add_argument("--backbone", default="ViT-B/16", help="e.g. test-tiny for a quick check")
    parser.add_argument("--one", default="", help=argparse.SUPPRESS)  # internal: measure this trainer here
    parser.add_argument("--work-dir", default="", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def measure_one(a):
    import benchlib

    work = a.work_dir
    root = benchlib.write_images(os.path.join(work, "data"), a.classes, 1, a.test_per_class)
    name = a.one
    eval_cache = "absent"
    for caches in a.caches.split(","):
        opts = benchlib.prec_opts(name, a.prec) + benchlib.switch_opts(name, caches)
        if benchlib.eval_cache_available():
            eval_cache = caches
            opts += ["EVAL_CACHE.DIR", os.path.join(work, f"eval_cache_{caches}")]
        trainer = benchlib.build(name, benchlib.CONFIGS[name], root, os.path.join(work, f"out_{caches}"), opts,
                                 backbone=a.backbone, workers=a.workers)
        device = trainer.device
        common = dict(bench="run_all", trainer=name, backbone=a.backbone.replace("/", ""), caches=caches, eval_cache=eval_cache, prec=a.prec,
                      device=benchlib.device_name(device))
        if "train" in a.measures and name not in EVAL_ONLY:
            batch_size = trainer.cfg.DATALOADER.TRAIN_X.BATCH_SIZE
            step = benchlib.train_step(trainer, benchlib.synthetic_batch(trainer, batch_size))
            benchlib.timed(step, device)  # warm-up: caches computed once per run
            benchlib.reset_peak_memory(device)
            times = [benchlib.timed(step, device)[:2] for _ in range(a.iters)]
            wall = sum(t for t, _ in times) / len(times)
            cpu = sum(c for _, c in times) / len(times)
            print(benchlib.result_line(**common, measure="train", batch=batch_size,
                                       **{"s/iter": f"{wall:.3f}", "cpu_s/iter": f"{cpu:.3f}",
                                          "images/s": f"{batch_size / wall:.2f}"},
                                       peak=benchlib.peak_memory(device)), file=sys.__stdout__, flush=True)
        if "eval" in a.measures:
            n_test = len(trainer.dm.dataset.test)
            for run in (("cold", "warm") if caches == "on" else ("-",)):
                benchlib.reset_peak_memory(device)
                wall, cpu, _ = benchlib.timed(trainer.test, device)
                print(benchlib.result_line(**common, measure="eval", **{"pass": run}, images=n_test,
                                           s=f"{wall:.2f}", cpu_s=f"{cpu:.2f}", **{"images/s": f"{n_test / wall:.2f}"},
                                           peak=benchlib.peak_memory(device)), file=sys.__stdout__, flush=True)
        del trainer


def main(argv=None):
    a = parse_args(argv)
    if a.one:
        sys.stdout = sys.stderr  # the trainers' own output; RESULT lines go to the real stdout
        measure_one(a)
        return
    work = tempfile.mkdtemp(prefix="bench-all-")
    forwarded = ["--prec", a.prec, "--caches", a.caches, "--measures", a.measures, "--iters", str(a.iters),
                 "--classes", str(a.classes), "--test-per-class", str(a.test_per_class), "--workers", str(a.workers),
                 "--backbone", a.backbone]
    failed = []
    with open(os.path.join(work, "log.txt"), "w") as log:
        for name in a.trainers.split(","):
            proc = subprocess.run([sys.executable, __file__, "--one", name, "--work-dir", work, *forwarded],
                                  stderr=log, cwd=REPO)
            if proc.returncode:
                failed.append(name)
    print(f"(log: {os.path.join(work, 'log.txt')})")
    if failed:
        sys.exit(f"error: the benchmark failed for {', '.join(failed)}; see the log")


if __name__ == "__main__":
    main()
