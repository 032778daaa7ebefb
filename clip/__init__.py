"""CLIP on open_clip: ``load``, ``tokenize`` and a block-by-block forward for adapters."""
from .clip import (  # noqa: F401
    WeightsError, available_models, check_backbone, count_parameters, load, load_clip_to_cpu, model_dtype, openclip_name,
)
from .tokenizer import tokenize  # noqa: F401
from . import layerwise  # noqa: F401
