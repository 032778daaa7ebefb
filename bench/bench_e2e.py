"""One base-to-novel run end to end: train on the base classes (and test on them), then test on the
new classes, on generated photo-sized JPEGs; wall time, images/s and peak memory per phase.

    python bench/bench_e2e.py --trainer MultiModalAdapter [--prec amp] [--classes 10] [--shots 16] \\
        [--test-per-class 20] [--epochs 1] [--eval-cache on|off] [KEY VALUE ...]

The phases are those of ``scripts/<method>/base2new_train.sh`` and ``base2new_test.sh`` (the data
loaders, augmentation, evaluation and checkpoint loading included), without the run record.
Images/s counts the images a phase processed (training: the batches of all epochs; testing: the
test split) over the phase's wall time; ``build`` is the time to build the trainer (CLIP and the
data). Backbone: ViT-B/16 with random weights unless overridden. On CUDA, ``--prec fp16`` and
``amp`` exercise the mixed-precision paths; peak memory is then the GPU's, per phase.
"""
import argparse
import contextlib
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
if __name__ == "__main__":
    sys.path[:0] = [os.path.dirname(HERE), HERE]

import torch  # noqa: E402

import benchlib  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    benchlib.add_trainer_args(parser)
    parser.add_argument("--classes", type=int, default=10, help="classes in all (half base, half new)")
    parser.add_argument("--shots", type=int, default=16, help="training images per base class")
    parser.add_argument("--test-per-class", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="DATALOADER.NUM_WORKERS")
    parser.add_argument("--eval-cache", choices=("on", "off"), default="off",
                        help="EVAL_CACHE.* where this checkout has it (off: decode and encode every test image)")
    parser.add_argument("--work-dir", default="", help="images, outputs and log (default: a new temporary folder)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    work = a.work_dir or tempfile.mkdtemp(prefix="bench-e2e-")
    root = benchlib.write_images(os.path.join(work, "data"), a.classes, a.shots, a.test_per_class)
    out = os.path.join(work, "output")
    config_file = a.config_file or benchlib.CONFIGS[a.trainer]
    opts = benchlib.prec_opts(a.trainer, a.prec) + ["SEED", "1", "DATASET.NUM_SHOTS", str(a.shots),
                                                    "OPTIM.MAX_EPOCH", str(a.epochs)]
    if benchlib.eval_cache_available():
        opts += [x for key in benchlib.EVAL_CACHE_SWITCHES for x in (key, str(a.eval_cache == "on"))]
        opts += ["EVAL_CACHE.DIR", os.path.join(work, "eval_cache")]
    eval_cache = a.eval_cache if benchlib.eval_cache_available() else "absent"
    fields = dict(bench="e2e", trainer=a.trainer, prec=a.prec, eval_cache=eval_cache)
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True  # as train.py sets it
    log_path = os.path.join(work, "log.txt")
    lines = []

    def report(phase, wall, images=None, peak=None):
        extra = {} if images is None else {"images": images, "images/s": f"{images / wall:.2f}"}
        if peak is not None:
            extra["peak"] = peak
        lines.append(benchlib.result_line(**fields, phase=phase, **{"wall_s": f"{wall:.2f}"}, **extra))
        print(lines[-1], file=sys.__stdout__, flush=True)

    with open(log_path, "w") as log, contextlib.redirect_stdout(log):
        total = 0.0
        for subsample in ("base", "new"):
            phase_opts = opts + ["DATASET.SUBSAMPLE_CLASSES", subsample] + list(a.opts)
            wall, _, trainer = benchlib.timed(
                lambda: benchlib.build(a.trainer, config_file, root, out, phase_opts, workers=a.workers),
                torch.device("cpu"))
            device = trainer.device
            fields["device"] = benchlib.device_name(device)
            report(f"build_{subsample}", wall)
            total += wall
            tests = []  # (wall seconds, peak memory during the test)
            peak_before_test = []
            run_test = trainer.test

            def timed_test(*args, **kwargs):
                peak_before_test.append(benchlib.peak_memory(device))
                benchlib.reset_peak_memory(device)
                t, _, result = benchlib.timed(lambda: run_test(*args, **kwargs), device)
                tests.append((t, benchlib.peak_memory(device)))
                return result
            trainer.test = timed_test
            n_test = len(trainer.dm.dataset.test)
            benchlib.reset_peak_memory(device)
            if subsample == "base":
                wall, _, _ = benchlib.timed(trainer.train, device)
                loader = trainer.train_loader_x
                n_train = min(len(loader.dataset), len(loader) * loader.batch_size) * a.epochs
                train_peak = peak_before_test[0] if peak_before_test else benchlib.peak_memory(device)
                report("train", wall - sum(t for t, _ in tests), n_train, peak=train_peak)
            else:
                wall, _, _ = benchlib.timed(lambda: (trainer.load_model(out, epoch=a.epochs), trainer.test()), device)
            for t, peak in tests:
                report(f"test_{subsample}", t, n_test, peak=peak)
            total += wall
        report("total", total)
    print(f"(log: {log_path})", file=sys.__stdout__)


if __name__ == "__main__":
    main()
