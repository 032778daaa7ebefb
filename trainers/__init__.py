"""Trainer modules; importing them registers their trainers in TRAINER_REGISTRY.

A module may define ``add_config(cfg)`` (its config node) and ``apply_dataset_overrides(cfg)``.
"""
from . import zsclip
from . import mma
from . import clip_adapter
from . import mmrl
from . import attn_mm_adapter
from . import coop
from . import cocoop
from . import maple
from . import mmrl_pp

TRAINER_MODULES = [zsclip, mma, clip_adapter, mmrl, attn_mm_adapter, coop, cocoop, maple, mmrl_pp]
