"""What this repository offers, known without importing torch: for ``train.py --help`` and messages.

- ``TRAINERS``: each trainer name, the module that registers it and its config node under
  ``TRAINER`` (the node holding ``PREC``). ``tests/test_cli.py`` checks this table against the real
  registry, so a new method must be added here (see docs/adding_a_method.md).
- ``dataset_configs()`` / ``method_configs(trainer)``: the YAML stems found under ``configs/``
  (a trainer's config folder is the one ``harness/protocols.py`` names).
- ``COMMON_OVERRIDES``: the ``KEY VALUE`` overrides most runs need.
"""
import os
import os.path as osp
from collections import namedtuple

from .protocols import METHODS

__all__ = ["TRAINERS", "COMMON_OVERRIDES", "TrainerInfo", "dataset_configs", "method_configs", "config_dir",
           "precision_key", "CONFIGS"]

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(REPO, "configs")

# module: the trainers module; node: TRAINER.<node> (None: no node of its own).
TrainerInfo = namedtuple("TrainerInfo", "module node description")

TRAINERS = {
    "ZeroshotCLIP": TrainerInfo("trainers.zsclip", None, "CLIP zero-shot with CoOp's per-dataset template (eval-only)"),
    "ZeroshotCLIP2": TrainerInfo("trainers.zsclip", None, "CLIP zero-shot with a template ensemble (eval-only)"),
    "CLIP_Adapter": TrainerInfo("trainers.clip_adapter", "CLIP_ADAPTER", "CLIP-Adapter (Gao et al., IJCV 2024)"),
    "MultiModalAdapter": TrainerInfo("trainers.mma", "MMADAPTER", "MMA, Multi-Modal Adapter (Yang et al., CVPR 2024)"),
    "AttnMMAdapter": TrainerInfo("trainers.attn_mm_adapter", "ATTN_MM_ADAPTER",
                                 "attention-based Multi-Modal Adapter (Seputis et al., 2024)"),
    "MMRL": TrainerInfo("trainers.mmrl", "MMRL", "MMRL, Multi-Modal Representation Learning (Guo & Gu, CVPR 2025)"),
    "MMRLpp": TrainerInfo("trainers.mmrl_pp", "MMRLpp", "MMRL++ (Guo & Gu, IJCV 2026)"),
    "CoOp": TrainerInfo("trainers.coop", "COOP", "CoOp, Context Optimization (Zhou et al., IJCV 2022)"),
    "CoCoOp": TrainerInfo("trainers.cocoop", "COCOOP", "CoCoOp, Conditional Context Optimization (Zhou et al., CVPR 2022)"),
    "MaPLe": TrainerInfo("trainers.maple", "MAPLE", "MaPLe, Multi-modal Prompt Learning (Khattak et al., CVPR 2023)"),
}

COMMON_OVERRIDES = [
    ("DATASET.NUM_SHOTS 16", "training images per class (-1: all)"),
    ("DATASET.SUBSAMPLE_CLASSES base", "all | base | new (base-to-novel protocol)"),
    ("OPTIM.MAX_EPOCH 5", "training epochs"),
    ("OPTIM.LR 0.002", "learning rate (a float: write 1.0, not 1)"),
    ("DATALOADER.TRAIN_X.BATCH_SIZE 32", "training batch size"),
    ("DATALOADER.NUM_WORKERS 4", "data-loading processes (capped to the CPUs; 0: none)"),
    ("MODEL.BACKBONE.NAME ViT-B/16", "CLIP backbone: ViT-B/16, ViT-B/32, RN50, RN101, ..."),
    ("MODEL.BACKBONE.WEIGHTS /path/ViT-B-16.pt", "a local weights file (see docs/weights.md)"),
    ("TRAINER.<NODE>.PREC fp32", "fp16 | fp32 | amp; use fp32 on a CPU"),
    ("TASK CD", "B2N | CD | FS: the protocol, for MMRL and MMRL++"),
    ("TEST.FINAL_MODEL best_val", "last_step | best_val: the model the final test uses"),
    ("USE_CUDA False", "run on the CPU even when a GPU is present"),
]


def _yaml_stems(folder):
    if not osp.isdir(folder):
        return []
    return sorted(name[:-5] for name in os.listdir(folder) if name.endswith(".yaml") and not name.startswith("."))


def dataset_configs():
    """Stems of ``configs/datasets/*.yaml``."""
    return _yaml_stems(osp.join(CONFIGS, "datasets"))


def config_dir(trainer):
    """``configs/trainers/<folder>`` of a trainer (ZeroshotCLIP2 shares ZeroshotCLIP's)."""
    method = METHODS.get(trainer)
    return osp.join(CONFIGS, "trainers", (method and method.config_dir) or trainer)


def method_configs(trainer):
    """Stems of the trainer's method configs."""
    return _yaml_stems(config_dir(trainer))


def precision_key(trainer):
    """``TRAINER.<node>.PREC`` of a trainer, or None when it has no precision setting."""
    info = TRAINERS.get(trainer)
    return f"TRAINER.{info.node}.PREC" if info and info.node else None
