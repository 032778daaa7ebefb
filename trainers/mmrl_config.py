"""Config of MMRL (trainers/mmrl.py): the ``TRAINER.MMRL`` node, the reference's top-level ``TASK``
(shared with MMRL++) and the decoupled-inference rule that ``TASK`` selects."""
from yacs.config import CfgNode as CN

from .common.precision import PRECISIONS

__all__ = ["add_config", "CONFIG_CHOICES", "apply_dataset_overrides", "uses_fused_logits", "TASKS"]

TASKS = ("B2N", "CD", "FS")


def add_config(cfg):
    """``TRAINER.MMRL`` (reference defaults; the YAMLs set the working values) and the reference's
    top-level ``TASK`` (B2N, CD or FS; read by MMRL and MMRL++, set by the scripts).

    λ and d_r come from per-dataset tables that are config nodes (``TRAINER.MMRL.DATASET_REG_WEIGHT.
    StanfordCars 5.0``; datasets may be added). Precedence (mmrl.md §10.4): a YAML's ``REG_WEIGHT``/
    ``REP_DIM`` < the dataset's entry < ``REG_WEIGHT``/``REP_DIM`` on the command line."""
    cfg.TASK = "B2N"
    node = cfg.TRAINER.MMRL = CN()
    node.ALPHA = 0.7  # weight of ℓ_c in the CE terms and in the fused logits
    node.REG_WEIGHT = 1.0  # λ of both cosine regularisers (a YAML's value: datasets without a table entry)
    node.DATASET_REG_WEIGHT = CN({  # DATASET.NAME -> λ: the reference's table (mmrl.md §10.3)
        "StanfordCars": 7.0, "FGVCAircraft": 6.0, "SUN397": 6.0, "DescribableTextures": 6.0, "Food101": 5.0,
        "OxfordFlowers": 4.0, "UCF101": 3.0, "ImageNet": 0.5, "Caltech101": 0.5, "OxfordPets": 0.2, "EuroSAT": 0.01,
    }, new_allowed=True)
    node.REP_LAYERS = []  # 1-based blocks where the representation tokens are (re)inserted
    node.REP_DIM = 512  # d_r, width of the shared representation space (as REG_WEIGHT)
    node.DATASET_REP_DIM = CN({"EuroSAT": 2048}, new_allowed=True)  # DATASET.NAME -> d_r
    node.N_REP_TOKENS = 5  # K
    node.PREC = "fp16"  # fp16, fp32 or amp
    # Speed switches (project keys; both give the same numbers as the reference's direct path).
    node.SHARE_LOWER_LAYERS = True  # zero-shot image target reuses blocks 1..J-1 of the batch
    node.CACHE_TEXT_LOWER_LAYERS = True  # text blocks 1..J-1 on the fixed prompts once per run


# Allowed values of this node's enumerated keys (checked before a run starts, trainers/config.py).
CONFIG_CHOICES = {"TRAINER.MMRL.PREC": PRECISIONS, "TASK": TASKS}


def apply_dataset_overrides(cfg):
    """The dataset's λ and d_r table entries; called after the YAMLs and flags, before the command-line opts."""
    if cfg.TRAINER.NAME != "MMRL":
        return
    node, name = cfg.TRAINER.MMRL, cfg.DATASET.NAME
    for key, table in (("REG_WEIGHT", "DATASET_REG_WEIGHT"), ("REP_DIM", "DATASET_REP_DIM")):
        if name in node[table]:
            node[key] = node[table][name]


def uses_fused_logits(cfg):
    """Decoupled inference: True where the fused logits are evaluated, False for ℓ_c alone."""
    task = cfg.TASK
    if task == "B2N":
        return cfg.DATASET.SUBSAMPLE_CLASSES == "base"
    if task == "FS":
        return True
    if task == "CD":
        return cfg.DATASET.NAME == "ImageNet"  # the source; every other dataset is a transfer target
    raise ValueError("The TASK must be either B2N, CD, or FS.")
