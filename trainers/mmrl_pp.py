"""MMRL++ (Guo & Gu, IJCV 2026), trainer ``MMRLpp``: MMRL with fewer parameters and composed tokens.

A delta against MMRL (trainers/mmrl.py), whose model, loss, decoupled inference, caches and
checkpoint loading it reuses unchanged:

- SRRA (shared-residual representation aligner): per tower, the aligners of the L insertion layers
  share one weight W; layer i adds its own rank-r residual and bias, T_i = R (W + A_i B_i)ᵀ + b_i.
- PRC (progressive representation composition): before each listed block after the first, the K
  token positions become β·T_i + (1 − β)·(the previous block's outputs there); MMRL is β = 1.
- The representation projection is P_r = P_c + A B, the frozen CLIP ``proj`` plus a rank-64
  residual (B = 0, so P_r = P_c at init), instead of a fresh random matrix.

Loss, fused logits and inference rules are MMRL's. β and λ come from a per-dataset table that
depends on ``TASK``; for cross-dataset evaluation β is the *target* dataset's entry.
813,312 trainable parameters at ViT-B/16 (MMRL: 4,992,256).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from dassl.engine import TRAINER_REGISTRY

from .mmrl import MMRL

__all__ = [
    "add_config", "apply_dataset_overrides", "LowRankResidual", "SharedResidualAligner", "SRRARepresentationLearner",
    "ResidualProjection", "MMRLppLearner", "MMRLpp",
]

# The reference's per-dataset β and λ by TASK (mmrl_pp.md §7.3): the defaults of the config nodes
# TRAINER.MMRLpp.DATASET_BETA / DATASET_REG_WEIGHT. Cross-dataset: λ 0.1 for training on ImageNet, β per
# evaluated target; datasets without a λ entry keep the YAML's λ.
_B2N_FS_BETA = {
    "ImageNet": 0.9, "FGVCAircraft": 0.9, "UCF101": 0.9, "DescribableTextures": 0.9, "OxfordPets": 0.7,
    "StanfordCars": 0.7, "Caltech101": 0.6, "SUN397": 0.5, "OxfordFlowers": 0.4, "EuroSAT": 0.2, "Food101": 0.1,
}
_B2N_FS_REG_WEIGHT = {
    "ImageNet": 0.2, "FGVCAircraft": 2.0, "UCF101": 3.0, "DescribableTextures": 7.0, "OxfordPets": 0.01,
    "StanfordCars": 6.0, "Caltech101": 3.0, "SUN397": 3.0, "OxfordFlowers": 7.0, "EuroSAT": 0.01, "Food101": 1.0,
}
_CD_BETA = {
    "ImageNet": 0.9, "FGVCAircraft": 0.9, "UCF101": 0.9, "DescribableTextures": 0.5, "OxfordPets": 0.6,
    "StanfordCars": 0.3, "Caltech101": 0.6, "SUN397": 0.7, "OxfordFlowers": 0.4, "EuroSAT": 0.3, "Food101": 0.3,
    "ImageNetV2": 0.9, "ImageNetR": 0.9, "ImageNetA": 0.8, "ImageNetSketch": 0.7,
}
_CD_REG_WEIGHT = {"ImageNet": 0.1}


def _tables_by_task(b2n_fs, cd):
    """TASK -> DATASET.NAME -> value; datasets may be added (assigned one by one: a CN built from a dict
    of CNs would rebuild them without ``new_allowed``)."""
    tables = CN()
    tables.B2N, tables.FS, tables.CD = (CN(t, new_allowed=True) for t in (b2n_fs, b2n_fs, cd))
    return tables


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------

def add_config(cfg):
    """``TRAINER.MMRLpp``: MMRL's keys plus β and the two residual ranks."""
    node = cfg.TRAINER.MMRLpp = CN()
    node.ALPHA = 0.7  # weight of ℓ_c in the CE terms and in the fused logits
    node.BETA = 0.9  # PRC: weight of the fresh aligned tokens at listed layers after the first
    node.REG_WEIGHT = 1.0  # λ of both cosine regularisers
    node.REP_LAYERS = []  # 1-based blocks where the representation tokens are inserted / composed
    node.REP_DIM = 512  # d_r
    node.N_REP_TOKENS = 5  # K
    node.PROJ_LORA_DIM = 64  # rank of the residual on the representation projection
    node.RES_LORA_DIM = 4  # rank of each layer's SRRA residual
    node.DATASET_BETA = _tables_by_task(_B2N_FS_BETA, _CD_BETA)  # TASK -> DATASET.NAME -> β
    node.DATASET_REG_WEIGHT = _tables_by_task(_B2N_FS_REG_WEIGHT, _CD_REG_WEIGHT)  # TASK -> DATASET.NAME -> λ
    node.PREC = "amp"  # amp or fp32 (the reference's default fp16 crashes, mmrl_pp.md §6)
    # Speed switches of MMRL's model (same numbers as the direct path).
    node.SHARE_LOWER_LAYERS = True
    node.CACHE_TEXT_LOWER_LAYERS = True


# Allowed values of this node's enumerated keys (checked before a run starts, trainers/config.py).
CONFIG_CHOICES = {"TRAINER.MMRLpp.PREC": ("amp", "fp32")}  # fp16 crashes in the reference (mmrl_pp.md §6)


def apply_dataset_overrides(cfg):
    """The dataset's β and λ entries for ``TASK`` (``DATASET_BETA`` / ``DATASET_REG_WEIGHT``); called after
    the YAMLs and flags, before the command-line opts. Precedence, as MMRL's: a YAML's ``BETA``/``REG_WEIGHT``
    < the table entry (editable in a YAML or on the command line) < ``BETA``/``REG_WEIGHT`` on the command line."""
    if cfg.TRAINER.NAME != "MMRLpp":
        return
    node, name = cfg.TRAINER.MMRLpp, cfg.DATASET.NAME
    applied = False
    for key, table in (("BETA", "DATASET_BETA"), ("REG_WEIGHT", "DATASET_REG_WEIGHT")):
        entries = node[table].get(cfg.TASK, {})
        if name in entries:
            node[key] = entries[name]
            applied = True
    if applied:
        print(f"MMRL++ settings for {cfg.DATASET.NAME} ({cfg.TASK}): BETA {node.BETA}, REG_WEIGHT {node.REG_WEIGHT}")


# ---------------------------------------------------------------------------------------------
# Trainable modules (attribute names give the reference checkpoint keys)
# ---------------------------------------------------------------------------------------------

def _kaiming_uniform(rows, cols):
    """nn.Linear's weight init on a [rows, cols] tensor: U(±1/sqrt(cols))."""
    weight = torch.empty(rows, cols)
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    return nn.Parameter(weight)


class LowRankResidual(nn.Module):
    """One insertion layer's part of an SRRA: the residual A B [d_out, d_in] (rank r) and its bias [d_out]."""

    def __init__(self, in_dim, out_dim, rank, bias):
        super().__init__()
        self.A = _kaiming_uniform(out_dim, rank)
        self.B = nn.Parameter(torch.zeros(rank, in_dim))  # zero: every layer starts at the shared map
        self.bias = nn.Parameter(bias.detach().clone())

    def forward(self, x, shared_weight):
        """x [K, d_in] -> x (W + A B)ᵀ + b [K, d_out], as one linear with the summed weight."""
        return F.linear(x, shared_weight + self.A @ self.B, self.bias)


class SharedResidualAligner(nn.Module):
    """SRRA of one tower: L aligners d_in -> d_out sharing the weight W [d_out, d_in].

    W and every layer's bias start as the weight and bias of one fresh ``nn.Linear`` (not kept as a
    module: there is no shared bias), so at init all L aligners are the same map.
    """

    def __init__(self, in_dim, out_dim, n_layers, rank):
        super().__init__()
        fresh = nn.Linear(in_dim, out_dim)
        self.weight = nn.Parameter(fresh.weight.detach().clone())
        self.srra = nn.ModuleList(LowRankResidual(in_dim, out_dim, rank, fresh.bias) for _ in range(n_layers))

    def forward(self, x):
        """Per layer (in order): the aligned tokens [K, d_out]."""
        return [layer(x, self.weight) for layer in self.srra]


class SRRARepresentationLearner(nn.Module):
    """The shared space R [K, d_r] and one SRRA per tower (d_r -> d_v, d_r -> d_t)."""

    def __init__(self, n_tokens, rep_dim, vision_width, text_width, n_layers, rank):
        super().__init__()
        self.compound_rep_tokens = nn.Parameter(torch.empty(n_tokens, rep_dim).normal_(std=0.02))
        self.srra_r2vproj = SharedResidualAligner(rep_dim, vision_width, n_layers, rank)
        self.srra_r2tproj = SharedResidualAligner(rep_dim, text_width, n_layers, rank)

    def forward(self):
        """Per insertion layer (in order): vision tokens [K, d_v] and text tokens [K, d_t]."""
        space = self.compound_rep_tokens
        return self.srra_r2vproj(space), self.srra_r2tproj(space)


class ResidualProjection(nn.Module):
    """P_r = P_c + A B: the frozen CLIP ``proj`` [d_v, D] plus a trainable rank-r_p residual."""

    def __init__(self, vision_width, embed_dim, rank):
        super().__init__()
        self.A = _kaiming_uniform(vision_width, rank)
        self.B = nn.Parameter(torch.zeros(rank, embed_dim))  # zero: P_r = P_c at init

    def forward(self, pooled, frozen_proj):
        """f_r [B, D] from the pooled representation tokens [B, d_v]."""
        return pooled @ (frozen_proj + self.A @ self.B).to(pooled.dtype)


class MMRLppLearner(nn.Module):
    """Everything MMRL++ trains; registered as ``MultiModalRepresentationLearner`` like MMRL's learner.

    ``image_encoder`` holds only A and B: in the reference they are attributes of the image encoder,
    and the keys ``image_encoder.A`` / ``image_encoder.B`` let reference checkpoints load unchanged.
    """

    def __init__(self, n_tokens, rep_dim, vision_width, text_width, embed_dim, n_layers, res_rank, proj_rank):
        super().__init__()
        self.n_tokens = n_tokens
        self.representation_learner = SRRARepresentationLearner(n_tokens, rep_dim, vision_width, text_width,
                                                                n_layers, res_rank)
        self.image_encoder = ResidualProjection(vision_width, embed_dim, proj_rank)

    @classmethod
    def for_clip(cls, clip_model, node):
        visual = clip_model.visual
        return cls(node.N_REP_TOKENS, node.REP_DIM, visual.transformer.width, clip_model.transformer.width,
                   visual.proj.shape[1], len(node.REP_LAYERS), node.RES_LORA_DIM, node.PROJ_LORA_DIM)

    @staticmethod
    def is_learned_key(key):
        """True for the trainable tensors of a (reference or own) checkpoint; the frozen CLIP is skipped."""
        return key.startswith("representation_learner.") or key in ("image_encoder.A", "image_encoder.B")


# ---------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------

@TRAINER_REGISTRY.register()
class MMRLpp(MMRL):
    """MMRL's trainer (model, loss, inference rules, caches, checkpoints) with the MMRL++ learner and β."""

    CONFIG_NODE = "MMRLpp"
    AUTOCAST_AT_EVAL = False  # the reference evaluates in fp32 also under PREC amp (mmrl_pp.md §4.4)

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        node = cfg.TRAINER.MMRLpp
        if node.PREC == "fp16":
            raise ValueError('TRAINER.MMRLpp.PREC "fp16" is not supported (the reference crashes there); '
                             "use amp or fp32")
        if not 0.0 <= node.BETA <= 1.0:
            raise ValueError(f"TRAINER.MMRLpp.BETA must lie in [0, 1], got {node.BETA}")

    def build_learner(self, clip_model, mcfg):
        print(f"MMRL++: β {mcfg.BETA}, λ {mcfg.REG_WEIGHT}, SRRA rank {mcfg.RES_LORA_DIM}, "
              f"projection residual rank {mcfg.PROJ_LORA_DIM}")
        return MMRLppLearner.for_clip(clip_model, mcfg)
