"""CLIP on open_clip: ``load``, ``tokenize`` and a block-by-block forward for adapters."""
from .clip import (  # noqa: F401
    MINI_CLIP, MINI_CLIP_FILE, WeightsError, available_models, check_backbone, count_parameters, create_model,
    file_sha256, load, load_clip_to_cpu, model_dtype, openclip_name,
)
from .tokenizer import tokenize  # noqa: F401
from . import layerwise  # noqa: F401
