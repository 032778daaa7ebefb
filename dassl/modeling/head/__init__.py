from .build import HEAD_REGISTRY, build_head  # noqa: F401
from .mlp import mlp  # noqa: F401
