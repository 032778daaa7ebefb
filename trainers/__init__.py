"""Trainer modules; importing them registers their trainers in TRAINER_REGISTRY.

Each method module's config node (``add_config``), the allowed values of its enumerated keys
(``CONFIG_CHOICES``) and its per-dataset settings (``apply_dataset_overrides``, applied after the
YAMLs and flags, before the command-line opts) are listed here; ``trainers/config.py`` applies them.
"""
from . import zsclip
from . import mma
from . import clip_adapter
from . import mmrl
from . import mmrl_config
from . import attn_mm_adapter
from . import coop
from . import cocoop
from . import maple
from . import mmrl_pp

TRAINER_MODULES = [zsclip, mma, clip_adapter, mmrl, attn_mm_adapter, coop, cocoop, maple, mmrl_pp]
CONFIG_NODES = [module.add_config for module in (mma, clip_adapter, mmrl_config, attn_mm_adapter, coop, cocoop, maple,
                                                 mmrl_pp)]
CONFIG_CHOICES = {**mma.CONFIG_CHOICES, **clip_adapter.CONFIG_CHOICES, **mmrl_config.CONFIG_CHOICES,
                  **attn_mm_adapter.CONFIG_CHOICES, **coop.CONFIG_CHOICES, **cocoop.CONFIG_CHOICES,
                  **maple.CONFIG_CHOICES, **mmrl_pp.CONFIG_CHOICES}
DATASET_OVERRIDES = [mmrl_config.apply_dataset_overrides, mmrl_pp.apply_dataset_overrides]
