from .evaluator import EVALUATOR_REGISTRY, Classification, EvaluatorBase, build_evaluator  # noqa: F401
