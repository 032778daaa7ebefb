"""Backbone / head / network registries and builders (``SimpleNet`` builds its model with them;
the CLIP trainers of this project build their models themselves)."""
from .head import HEAD_REGISTRY, build_head  # noqa: F401
from .network import NETWORK_REGISTRY, build_network  # noqa: F401
from .backbone import BACKBONE_REGISTRY, Backbone, build_backbone  # noqa: F401
