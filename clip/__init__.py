"""CLIP on open_clip: ``load``, ``tokenize`` and a block-by-block forward for adapters."""
from .clip import available_models, count_parameters, load, load_clip_to_cpu, model_dtype, openclip_name  # noqa: F401
from .tokenizer import tokenize  # noqa: F401
from . import layerwise  # noqa: F401
