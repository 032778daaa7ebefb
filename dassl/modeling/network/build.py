from dassl.utils import Registry

from .._build import build_registered

NETWORK_REGISTRY = Registry("NETWORK")


def build_network(name, verbose=True, **kwargs):
    """Call the network function registered as ``name`` (prints ``Network: NAME`` when verbose)."""
    return build_registered(NETWORK_REGISTRY, "Network", name, verbose, kwargs)
