"""Trainer modules; importing them registers their trainers in TRAINER_REGISTRY.

A module may define ``add_config(cfg)`` (its config node) and ``apply_dataset_overrides(cfg)``.
"""
from . import zsclip

TRAINER_MODULES = [zsclip]
