"""Train or evaluate a CLIP adaptation method (CoOp's command line).

    python train.py --root DATA --trainer NAME --dataset-config-file configs/datasets/X.yaml \
        --config-file configs/trainers/NAME/cfg.yaml --output-dir OUT [--seed S] [KEY VALUE ...]
"""
import argparse
import os
import sys

import torch

import datasets  # noqa: F401  (registers the dataset readers)
import trainers  # noqa: F401  (registers the trainers)
from dassl.config import get_cfg_default
from dassl.engine import build_trainer
from dassl.utils import collect_env_info, set_random_seed, setup_logger
from datasets.common import CacheError
from harness.fileio import WriteError
from harness.run import Run, RunError, command_line
from harness.safe_load import TRUST_ENV_VAR, CheckpointError
from trainers.config import apply_dataset_overrides, extend_cfg


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


def _keys_under(node, prefix=""):
    out = []
    for k, v in node.items():
        full = f"{prefix}{k}"
        out.extend(_keys_under(v, full + ".") if isinstance(v, dict) else [full])
    return out


class ConfigError(Exception):
    """A user mistake in the config or command line, reported in one line."""


def _bad_key_error(cfg, message, source):
    key = message.split(":", 1)[-1].strip().strip("'\"")
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    node = cfg
    for part in parent.split(".") if parent else []:
        node = node.get(part) if isinstance(node, dict) else None
    choices = sorted(k for k in (node or {}).keys()) if isinstance(node, dict) else []
    hint = f"; keys under {parent or 'the root'}: {', '.join(choices)}" if choices else ""
    return ConfigError(f"Unknown config key {key} in {source}{hint}")


def setup_cfg(args):
    """defaults -> extend_cfg -> dataset YAML -> method YAML -> flags -> per-dataset -> opts."""
    cfg = get_cfg_default()
    extend_cfg(cfg)
    for path, what in ((args.dataset_config_file, "dataset config"), (args.config_file, "method config")):
        if not path:
            continue
        if not os.path.isfile(path):
            raise ConfigError(f"{what} file not found: {path}")
        try:
            cfg.merge_from_file(path)
        except KeyError as e:
            raise _bad_key_error(cfg, str(e.args[0]), path) from None
    reset_cfg(cfg, args)
    _task_from_opts(cfg, args.opts)
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
    cfg.freeze()
    return cfg


def _task_from_opts(cfg, opts):
    """A ``TASK`` given in the overrides counts already for the per-dataset tables (MMRL++'s depend on it)."""
    for key, value in zip(opts[0::2], opts[1::2]):
        if key == "TASK":
            cfg.TASK = value


def _check_names(cfg):
    from dassl.data.datasets import DATASET_REGISTRY
    from dassl.engine import TRAINER_REGISTRY

    for value, registry, where in ((cfg.TRAINER.NAME, TRAINER_REGISTRY, "trainer (--trainer)"),
                                   (cfg.DATASET.NAME, DATASET_REGISTRY, "dataset (DATASET.NAME)")):
        if value not in registry.registered_names():  # upstream's Registry has no __contains__
            choices = ", ".join(sorted(registry.registered_names()))
            raise ConfigError(f'Unknown {where} "{value}"; choose one of: {choices}')


def run_kind(args):
    """``train``, ``test`` (eval-only) or ``build`` (``--no-train``: nothing is recorded)."""
    if args.eval_only:
        return "test"
    return "build" if args.no_train else "train"


def main(args, argv=None):
    if args.trust_checkpoint:
        os.environ[TRUST_ENV_VAR] = "1"
    cfg = setup_cfg(args)
    command = command_line(sys.argv[1:] if argv is None else argv)
    with Run(cfg, run_kind(args), command, model_dir=args.model_dir, load_epoch=args.load_epoch,
             discard_old=args.discard_old_run) as run:
        if run.already_finished is not None:
            result = run.already_finished.get("result") or {}
            shown = f" (accuracy {result['accuracy']:.1f}%)" if "accuracy" in result else ""
            print(f"This run already finished in {run.directory}{shown}: nothing to do "
                  "(--discard-old-run runs it again)")
            return None
        if cfg.SEED >= 0:
            print(f"Setting fixed seed: {cfg.SEED}")
            set_random_seed(cfg.SEED)
        setup_logger(cfg.OUTPUT_DIR)
        for note in run.notes:
            print(note)
        if torch.cuda.is_available() and cfg.USE_CUDA:
            torch.backends.cudnn.benchmark = True

        print_args(args, cfg)
        print("Collecting env info ...")
        print(f"** System info **\n{collect_env_info()}\n")

        trainer = build_trainer(cfg)
        run.record_split(trainer.dm.dataset)
        if args.eval_only:
            trainer.load_model(args.model_dir, epoch=args.load_epoch)
            run.finish(trainer.test())
            return trainer
        if not args.no_train:
            trainer.train()
            run.finish(getattr(trainer, "final_result", None))  # upstream Dassl does not keep it
        return trainer


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=str, default="", help="path to dataset")
    parser.add_argument("--output-dir", type=str, default="", help="output directory")
    parser.add_argument("--resume", type=str, default="", help="checkpoint directory (from which the training resumes)")
    parser.add_argument("--seed", type=int, default=-1, help="only positive value enables a fixed seed")
    parser.add_argument("--source-domains", type=str, nargs="+", help="source domains for DA/DG")
    parser.add_argument("--target-domains", type=str, nargs="+", help="target domains for DA/DG")
    parser.add_argument("--transforms", type=str, nargs="+", help="data augmentation methods")
    parser.add_argument("--config-file", type=str, default="", help="path to config file")
    parser.add_argument("--dataset-config-file", type=str, default="", help="path to config file for dataset setup")
    parser.add_argument("--trainer", type=str, default="", help="name of trainer")
    parser.add_argument("--backbone", type=str, default="", help="name of CNN backbone")
    parser.add_argument("--head", type=str, default="", help="name of head")
    parser.add_argument("--eval-only", action="store_true", help="evaluation only")
    parser.add_argument("--model-dir", type=str, default="", help="load model from this directory for eval-only mode")
    parser.add_argument("--load-epoch", type=int, help="load model weights at this epoch for evaluation")
    parser.add_argument("--no-train", action="store_true", help="do not call trainer.train()")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="allow loading checkpoints that need full unpickling (e.g. written by upstream Dassl)")
    parser.add_argument("--discard-old-run", action="store_true",
                        help="move an existing run in --output-dir aside (to .<name>.discarded-<time>) and start anew")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER,
                        help="modify config options using the command-line")
    return parser


def run(argv):
    """``main`` on an argument list, in this process; the log tee is closed and stdout restored."""
    saved = sys.stdout
    try:
        return main(build_parser().parse_args(argv), argv)
    finally:
        if sys.stdout is not saved:
            sys.stdout.close()
            sys.stdout = saved


def cli(argv=None):
    args = build_parser().parse_args(argv)
    try:
        main(args, argv)
    except (ConfigError, RunError, CheckpointError, CacheError, WriteError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli()
