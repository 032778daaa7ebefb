"""Shared body of build_backbone / build_head / build_network."""
from dassl.utils import check_availability


def build_registered(registry, title, name, verbose, kwargs):
    """``registry.get(name)(**kwargs)``; an unknown name raises ValueError with the closest match."""
    check_availability(name, registry.registered_names())
    if verbose:
        print(f"{title}: {name}")
    return registry.get(name)(**kwargs)
