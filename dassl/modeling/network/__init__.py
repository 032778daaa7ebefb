"""NETWORK_REGISTRY: whole networks (upstream registers DDAIG's FCN generators, not included here)."""
from .build import NETWORK_REGISTRY, build_network  # noqa: F401
