from dassl.utils import Registry

from .._build import build_registered

HEAD_REGISTRY = Registry("HEAD")


def build_head(name, verbose=True, **kwargs):
    """Call the head function registered as ``name`` (prints ``Head: NAME`` when verbose)."""
    return build_registered(HEAD_REGISTRY, "Head", name, verbose, kwargs)
