r"""Train or evaluate a CLIP adaptation method (CoOp's command line).

    python train.py --root DATA --trainer NAME --dataset-config-file configs/datasets/X.yaml \
        --config-file configs/trainers/NAME/cfg.yaml --output-dir OUT [--seed S] [KEY VALUE ...]

Only the standard library is imported up here, so ``--help`` and argument errors are instant; torch
and the method modules are imported once the arguments are parsed. Every input is checked before
the output folder is created; a problem is one line ``error: ...`` and exit status 2.
"""
import argparse
import contextlib
import io
import os
import re
import signal
import sys
import time

from harness import catalog
from harness.console import log_only
from harness.fileio import WriteError
from harness.preflight import ConfigError, check_model_dir, check_resume_dir, check_torch_file
from harness.run import ENGINE_RESUME_STATE_FILE, Run, RunError, command_line
from harness.safe_load import TRUST_ENV_VAR, CheckpointError

HELP_HINT = "python train.py --help lists the trainers, configs and common overrides"


def user_errors():
    """Mistakes in the command line, config or input files: one line ``error: ...``, exit status 2."""
    from datasets.common import CacheError  # imports torch: called once a run has started

    return ConfigError, RunError, CheckpointError, CacheError, WriteError, FileNotFoundError


def print_args(args, cfg):
    print("***************")
    print("** Arguments **")
    print("***************")
    for key in sorted(args.__dict__):
        print(f"{key}: {args.__dict__[key]}")
    print("************")
    print("** Config **")
    print("************")
    print(cfg)


def reset_cfg(cfg, args):
    """Command-line flags; each applies only when given (so ``--seed 0`` is ignored, as upstream)."""
    if args.root:
        cfg.DATASET.ROOT = args.root
    if args.output_dir:
        cfg.OUTPUT_DIR = args.output_dir
    if args.resume:
        cfg.RESUME = args.resume
    if args.seed:
        cfg.SEED = args.seed
    if args.source_domains:
        cfg.DATASET.SOURCE_DOMAINS = args.source_domains
    if args.target_domains:
        cfg.DATASET.TARGET_DOMAINS = args.target_domains
    if args.transforms:
        cfg.INPUT.TRANSFORMS = args.transforms
    if args.trainer:
        cfg.TRAINER.NAME = args.trainer
    if args.backbone:
        cfg.MODEL.BACKBONE.NAME = args.backbone
    if args.head:
        cfg.MODEL.HEAD.NAME = args.head


def _bad_key_error(cfg, message, source):
    key = message.split(":", 1)[-1].strip().strip("'\"")
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    node = cfg
    for part in parent.split(".") if parent else []:
        node = node.get(part) if isinstance(node, dict) else None
    choices = sorted(k for k in (node or {}).keys()) if isinstance(node, dict) else []
    hint = f"; keys under {parent or 'the root'}: {', '.join(choices)}" if choices else ""
    return ConfigError(f"Unknown config key {key} in {source}{hint}")


def _missing_config_error(path, what, trainer):
    if what == "dataset config":
        names, where = catalog.dataset_configs(), "configs/datasets/"
    else:
        names, where = catalog.method_configs(trainer), os.path.relpath(catalog.config_dir(trainer), catalog.REPO) + "/"
    listed = f": {where} has {', '.join(names)}" if names else ""
    return ConfigError(f"{what} file not found: {path}{listed}")


def merge_yaml(cfg, path, what, trainer):
    """Merge one YAML file; syntax errors, unknown keys and wrong types name the file."""
    import yaml

    if not os.path.isfile(path):
        raise _missing_config_error(path, what, trainer)
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not a text file: pass a YAML config") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"YAML syntax error in {what} {path}{where}: {problem}: fix the file") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{what} {path} holds a YAML {type(data).__name__}, not a mapping of config keys")
    try:
        cfg.merge_from_file(path)
    except KeyError as e:
        raise _bad_key_error(cfg, str(e.args[0]), path) from None
    except ValueError as e:
        raise ConfigError(f"Bad value in {what} {path}: {e}") from None


def setup_cfg(args, notes=None):
    """defaults -> extend_cfg -> dataset YAML -> method YAML -> flags -> per-dataset -> opts; checked
    and frozen. Notes to print (e.g. the capped worker count) are appended to ``notes``."""
    from dassl.config import get_cfg_default
    from trainers.config import apply_dataset_overrides, check_config_values, extend_cfg

    cfg = get_cfg_default()
    extend_cfg(cfg)
    for path, what in ((args.dataset_config_file, "dataset config"), (args.config_file, "method config")):
        if path:
            merge_yaml(cfg, path, what, args.trainer)
    reset_cfg(cfg, args)
    _opts_for_tables(cfg, args.opts)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # e.g. MMRL's per-dataset settings: shown with the header
        apply_dataset_overrides(cfg)
    if len(args.opts) % 2:
        raise ConfigError(f"Overrides must be KEY VALUE pairs; got an odd number: {args.opts}")
    try:
        cfg.merge_from_list(args.opts)
    except AssertionError as e:
        raise _bad_key_error(cfg, str(e), "the command-line overrides") from None
    except ValueError as e:
        raise ConfigError(f"Bad value in the command-line overrides: {e}") from None
    _check_names(cfg)
    check_config_values(cfg)
    capped = cap_workers(cfg)
    if notes is not None:
        notes.extend(printed.getvalue().splitlines() + capped)
    else:
        print(printed.getvalue() + "".join(note + "\n" for note in capped), end="")
    cfg.freeze()
    return cfg


def _opts_for_tables(cfg, opts):
    """Overrides the per-dataset step reads count already for it: ``TASK`` (MMRL++'s tables depend on
    it) and edits of a table entry, ``TRAINER.<NODE>.DATASET_<KEY>.<dataset>`` (MMRL's tables) or
    ``TRAINER.<NODE>.DATASET_<KEY>.<TASK>.<dataset>`` (MMRL++'s)."""
    for key, value in zip(opts[0::2], opts[1::2]):
        if key == "TASK":
            cfg.TASK = value
        elif re.fullmatch(r"TRAINER\.\w+\.DATASET_\w+(\.\w+){1,2}", key):
            try:
                cfg.merge_from_list([key, value])
            except (AssertionError, ValueError):
                pass  # reported with the other overrides, by the full merge


def _check_names(cfg):
    from dassl.data.datasets import DATASET_REGISTRY
    from dassl.engine import TRAINER_REGISTRY

    import_registries()  # as main() does, so that setup_cfg alone checks against every name
    if not cfg.TRAINER.NAME:
        raise ConfigError(f"no trainer: pass --trainer NAME, one of {', '.join(sorted(TRAINER_REGISTRY.registered_names()))}")
    if not cfg.DATASET.NAME:
        raise ConfigError("no dataset: pass --dataset-config-file configs/datasets/NAME.yaml, NAME one of "
                          f"{', '.join(catalog.dataset_configs())}")
    for value, registry, where in ((cfg.TRAINER.NAME, TRAINER_REGISTRY, "trainer (--trainer)"),
                                   (cfg.DATASET.NAME, DATASET_REGISTRY, "dataset (DATASET.NAME)")):
        if value not in registry.registered_names():  # upstream's Registry has no __contains__
            choices = ", ".join(sorted(registry.registered_names()))
            raise ConfigError(f'Unknown {where} "{value}"; choose one of: {choices}')


def available_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cap_workers(cfg):
    """Cap ``DATALOADER.NUM_WORKERS`` to the CPUs this process may use (never to 0: a positive count
    stays positive, and results do not depend on it then, see ``harness.run.config_identity``)."""
    requested, cpus = cfg.DATALOADER.NUM_WORKERS, available_cpus()
    if requested <= cpus:
        return []
    cfg.DATALOADER.NUM_WORKERS = max(1, cpus)
    return [f"Note: DATALOADER.NUM_WORKERS {requested} -> {cfg.DATALOADER.NUM_WORKERS}, the CPUs available "
            "(the results do not depend on the number of workers)"]


def check_inputs(cfg, args, kind):
    """Everything a run will read, checked before the output folder is created."""
    from clip import check_backbone
    from datasets.preflight import check_dataset_files

    check_dataset_files(cfg)
    if cfg.TRAINER.NAME in catalog.TRAINERS:  # the CLIP trainers (others may build Dassl's own backbones)
        check_backbone(cfg.MODEL.BACKBONE.NAME, cfg.MODEL.BACKBONE.WEIGHTS)
    if cfg.MODEL.INIT_WEIGHTS:
        check_torch_file(cfg.MODEL.INIT_WEIGHTS, "MODEL.INIT_WEIGHTS", "pass a checkpoint of the trainable module")
    if kind == "test" and args.model_dir:
        info = catalog.TRAINERS.get(cfg.TRAINER.NAME)
        check_model_dir(args.model_dir, args.load_epoch, needs_weights=info is None or info.node is not None)
    if kind == "train":
        if cfg.RESUME and not os.path.isdir(cfg.RESUME):
            raise ConfigError(f'--resume "{cfg.RESUME}" is not a folder: pass the output folder of the run to resume')
        check_resume_dir(cfg.RESUME or cfg.OUTPUT_DIR, ENGINE_RESUME_STATE_FILE)


def run_kind(args):
    """``train``, ``test`` (eval-only) or ``build`` (``--no-train``: nothing is recorded)."""
    if args.eval_only:
        return "test"
    return "build" if args.no_train else "train"


# ---------------------------------------------------------------------------------------------
# The console: a short header; the full config and environment go to log.txt only
# ---------------------------------------------------------------------------------------------

def _weights_label(weights):
    if weights == "random":
        return "RANDOM weights (the numbers mean nothing)"
    return "official weights" if weights in ("", "official", "openai") else f"weights {weights}"


def print_header(cfg, args, kind):
    """Trainer, dataset, protocol, backbone, precision, device and output folder (printed before building)."""
    import torch

    what = {"train": "train, then test", "test": "evaluate", "build": "build only (--no-train)"}[kind]
    if kind == "test" and args.model_dir:
        what += f" {args.model_dir}" + (f" (epoch {args.load_epoch})" if args.load_epoch is not None else "")
    classes = {"all": "all classes", "base": "base classes", "new": "new classes"}.get(cfg.DATASET.SUBSAMPLE_CLASSES)
    shots = f"{cfg.DATASET.NUM_SHOTS} shots" if cfg.DATASET.NUM_SHOTS > 0 else "all images"
    seed = f"seed {cfg.SEED}" if cfg.SEED >= 0 else "no fixed seed"
    prec_key = catalog.precision_key(cfg.TRAINER.NAME)
    prec = cfg.TRAINER.get(prec_key.split(".")[1]).PREC if prec_key else "fp32"
    cuda = torch.cuda.is_available() and cfg.USE_CUDA
    device = f"cuda ({torch.cuda.get_device_name(0)})" if cuda else "cpu"
    print(f"{cfg.TRAINER.NAME} | {cfg.DATASET.NAME}, {classes}, {shots}, {seed} | {what}")
    print(f"  backbone  {cfg.MODEL.BACKBONE.NAME}, {_weights_label(cfg.MODEL.BACKBONE.WEIGHTS)} | precision {prec} "
          f"| {device}")
    print(f"  output    {os.path.abspath(cfg.OUTPUT_DIR)} (full log: log.txt)")


def count_trainable(trainer):
    return sum(p.numel() for name in trainer.get_model_names()
               for p in trainer._models[name].parameters() if p.requires_grad)


def print_built(trainer, seconds):
    dataset = trainer.dm.dataset
    sizes = ", ".join(f"{len(getattr(dataset, split) or []):,} {split.replace('_x', '')}"
                      for split in ("train_x", "val", "test") if getattr(dataset, split, None))
    print(f"  data      {trainer.dm.num_classes:,} classes; images: {sizes}")
    print(f"  model     {count_trainable(trainer):,} trainable parameters (built in {seconds:.0f} s)")


# ---------------------------------------------------------------------------------------------
# A run
# ---------------------------------------------------------------------------------------------

def collect_env_info():
    """The environment report written to log.txt (dassl's; imported here because it needs torch)."""
    from dassl.utils import collect_env_info as report

    return report()


def import_registries():
    """Import the dataset readers and trainers: their decorators fill the registries."""
    import datasets  # noqa: F401
    import trainers  # noqa: F401


def execute(cfg, args, run, notes):
    """Build the trainer and train and/or test; stdout is teed into ``OUTPUT_DIR/log.txt`` meanwhile."""
    import torch

    from dassl.engine import build_trainer
    from dassl.utils import set_random_seed

    with log_only():
        if cfg.SEED >= 0:
            print(f"Setting fixed seed: {cfg.SEED}")
            set_random_seed(cfg.SEED)
    if torch.cuda.is_available() and cfg.USE_CUDA:
        torch.backends.cudnn.benchmark = True

    print_header(cfg, args, run_kind(args))
    with log_only():
        print_args(args, cfg)
        print("Collecting env info ...")
        print(f"** System info **\n{collect_env_info()}\n")
        start = time.time()
        trainer = build_trainer(cfg)
    print_built(trainer, time.time() - start)
    for note in run.notes + notes:
        print(note)
    run.record_split(trainer.dm.dataset)
    if args.eval_only:
        trainer.load_model(args.model_dir, epoch=args.load_epoch)
        run.finish(trainer.test())
        return trainer
    if not args.no_train:
        trainer.train()
        run.finish(getattr(trainer, "final_result", None))  # upstream Dassl does not keep it
    return trainer


def main(args, argv=None):
    """One run; returns the trainer (None when the folder's run had already finished)."""
    from dassl.utils import setup_logger

    if args.trust_checkpoint:
        os.environ[TRUST_ENV_VAR] = "1"
    import_registries()
    notes = []
    cfg = setup_cfg(args, notes)
    kind = run_kind(args)
    check_inputs(cfg, args, kind)
    command = command_line(sys.argv[1:] if argv is None else argv)
    with Run(cfg, kind, command, model_dir=args.model_dir, load_epoch=args.load_epoch,
             discard_old=args.discard_old_run) as run:
        if run.already_finished is not None:
            result = run.already_finished.get("result") or {}
            shown = f" (accuracy {result['accuracy']:.1f}%)" if "accuracy" in result else ""
            print(f"This run already finished in {run.directory}{shown}: nothing to do "
                  "(--discard-old-run runs it again)")
            return None
        saved = sys.stdout
        try:
            setup_logger(cfg.OUTPUT_DIR)
            return execute(cfg, args, run, notes)
        except Exception as error:
            if isinstance(error, user_errors()):
                if sys.stdout is not saved:
                    sys.stdout.close()
                    sys.stdout = saved
                run.abandon()  # a new run that failed before any result leaves no folder behind
            raise
        finally:
            if sys.stdout is not saved:
                sys.stdout.close()
                sys.stdout = saved


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def _wrap(words, first, rest=None, width=100):
    """``words`` joined by commas into lines starting with ``first`` (then ``rest``)."""
    lines, line = [], first
    for word in words:
        if len(line) + len(word) + 2 > width and line.strip() != first.strip():
            lines.append(line.rstrip(", ") + ",")
            line = rest if rest is not None else " " * len(first)
        line += word + ", "
    lines.append(line.rstrip(", "))
    return lines


def help_epilog():
    """Trainers with their method configs, dataset configs and common overrides (from ``harness.catalog``)."""
    lines = ["trainers (--trainer NAME) and method configs (--config-file configs/trainers/<folder>/<CFG>.yaml):"]
    for name, info in catalog.TRAINERS.items():
        lines.append(f"  {name:<18} {info.description}")
        configs = catalog.method_configs(name)
        folder = os.path.relpath(catalog.config_dir(name), catalog.REPO) + "/"
        lines.extend(_wrap(configs, f"  {'':<18} {folder}: ", " " * 21) if configs else [f"  {'':<18} (no configs)"])
    lines.append("")
    lines.append("dataset configs (--dataset-config-file configs/datasets/<NAME>.yaml):")
    lines.extend(_wrap(catalog.dataset_configs(), "  "))
    lines.append("")
    lines.append("common overrides (KEY VALUE pairs after the flags; every key: log.txt of any run):")
    lines.extend(f"  {key:<42} {meaning}" for key, meaning in catalog.COMMON_OVERRIDES)
    lines.append("")
    lines.append("example:")
    lines.append("  python train.py --root data --trainer MultiModalAdapter --seed 1 \\")
    lines.append("      --dataset-config-file configs/datasets/caltech101.yaml \\")
    lines.append("      --config-file configs/trainers/MultiModalAdapter/vit_b16_ep5.yaml \\")
    lines.append("      --output-dir output/mma/caltech101/seed1 DATASET.NUM_SHOTS 16 DATASET.SUBSAMPLE_CLASSES base")
    lines.append("The protocol scripts in scripts/<method>/ run these for you (README.md).")
    return "\n".join(lines)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\nOnly")[0], epilog=help_epilog(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=str, default="", help="path to dataset")
    parser.add_argument("--output-dir", type=str, default="", help="output directory")
    parser.add_argument("--resume", type=str, default="", help="checkpoint directory (from which the training resumes)")
    parser.add_argument("--seed", type=int, default=-1, help="only positive value enables a fixed seed")
    parser.add_argument("--config-file", type=str, default="", help="path to config file")
    parser.add_argument("--dataset-config-file", type=str, default="", help="path to config file for dataset setup")
    parser.add_argument("--trainer", type=str, default="", help="name of trainer")
    parser.add_argument("--eval-only", action="store_true", help="evaluation only")
    parser.add_argument("--model-dir", type=str, default="", help="load model from this directory for eval-only mode")
    parser.add_argument("--load-epoch", type=int, help="load model weights at this epoch for evaluation")
    parser.add_argument("--no-train", action="store_true", help="do not call trainer.train()")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="allow loading checkpoints that need full unpickling (e.g. written by upstream Dassl)")
    parser.add_argument("--discard-old-run", action="store_true",
                        help="move an existing run in --output-dir aside (to .<name>.discarded-<time>) and start anew")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    # Dassl's flags for domain adaptation and its own networks: accepted (CoOp's scripts pass some),
    # applied as upstream, but not shown: CLIP trainers do not read them.
    for flag in ("--source-domains", "--target-domains", "--transforms"):
        parser.add_argument(flag, type=str, nargs="+", help=argparse.SUPPRESS)
    for flag in ("--backbone", "--head"):
        parser.add_argument(flag, type=str, default="", help=argparse.SUPPRESS)
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER,
                        help="modify config options using the command-line")
    return parser


def run(argv):
    """``main`` on an argument list, in this process; the log tee is closed and stdout restored."""
    return main(build_parser().parse_args(argv), argv)


class CtrlC:
    """Ctrl-C during a run: one line saying how to resume, exit status 130.

    SIGINT also reaches the data-loader workers, and Python may swallow the main process's
    KeyboardInterrupt where it cannot raise it (it then prints "Exception ignored ..."); the error
    that follows (a worker "exited unexpectedly") is then the interruption too. So the handler
    records that Ctrl-C was pressed, and such KeyboardInterrupts are not printed.
    """

    def __init__(self):
        self.pressed = False

    def __enter__(self):
        self.previous = signal.getsignal(signal.SIGINT)
        if self.previous is signal.default_int_handler:  # not when SIGINT is ignored (nohup, &)
            signal.signal(signal.SIGINT, self.handle)
        self.previous_hook = sys.unraisablehook
        sys.unraisablehook = self.unraisable
        return self

    def __exit__(self, *exc):
        if signal.getsignal(signal.SIGINT) == self.handle:
            signal.signal(signal.SIGINT, self.previous)
        sys.unraisablehook = self.previous_hook
        return False

    def handle(self, signum, frame):
        self.pressed = True
        raise KeyboardInterrupt

    def unraisable(self, info):
        if not (self.pressed and issubclass(info.exc_type, KeyboardInterrupt)):
            self.previous_hook(info)


def cli(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv:
        parser.print_usage(sys.stderr)
        print(f"error: no arguments; {HELP_HINT}", file=sys.stderr)
        sys.exit(2)
    args = parser.parse_args(argv)
    with CtrlC() as ctrl_c:
        try:
            main(args, argv)
        except BaseException as e:
            if ctrl_c.pressed or isinstance(e, KeyboardInterrupt):
                again = "to resume after the last finished epoch" if run_kind(args) == "train" else "to run it again"
                print(f"Interrupted. Run the same command {again}: {command_line(argv)}", file=sys.stderr)
                sys.exit(130)
            if isinstance(e, user_errors()) and not args.debug:
                print(f"error: {e}", file=sys.stderr)
                sys.exit(2)
            raise


if __name__ == "__main__":
    cli()
