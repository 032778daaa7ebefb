"""Upstream's module path for the evaluator registry and builder (defined in ``evaluator.py``)."""
from .evaluator import EVALUATOR_REGISTRY, build_evaluator  # noqa: F401
