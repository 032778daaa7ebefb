from dassl.utils import Registry

from .._build import build_registered

BACKBONE_REGISTRY = Registry("BACKBONE")


def build_backbone(name, verbose=True, **kwargs):
    """Call the backbone function registered as ``name`` (prints ``Backbone: NAME`` when verbose)."""
    return build_registered(BACKBONE_REGISTRY, "Backbone", name, verbose, kwargs)
