"""Dassl's backbone/head registries; CLIP trainers build their models themselves."""
from dassl.utils import Registry

BACKBONE_REGISTRY = Registry("BACKBONE")
HEAD_REGISTRY = Registry("HEAD")
NETWORK_REGISTRY = Registry("NETWORK")
