"""Config keys the project adds to Dassl's default tree before any YAML is merged (``extend_cfg``),
and the allowed values of the enumerated keys (``check_config_values``)."""
import difflib

from yacs.config import CfgNode as CN

from dassl.data.transforms.transforms import AVAI_CHOICES
from dassl.optim.lr_scheduler import AVAI_SCHEDS
from dassl.optim.optimizer import AVAI_OPTIMS
from harness.preflight import ConfigError

__all__ = ["extend_cfg", "add_eval_cache_config", "apply_dataset_overrides", "config_choices", "check_config_values"]

SAMPLERS = ("RandomSampler", "SequentialSampler", "RandomDomainSampler", "SeqDomainSampler", "RandomClassSampler")

# Allowed values of the engine's enumerated keys and of those extend_cfg adds; each trainer module
# lists its own next to its add_config (CONFIG_CHOICES).
ENGINE_CHOICES = {
    "INPUT.INTERPOLATION": ("bilinear", "bicubic", "nearest"),
    "OPTIM.NAME": tuple(AVAI_OPTIMS),
    "OPTIM.LR_SCHEDULER": tuple(AVAI_SCHEDS),
    "OPTIM.WARMUP_TYPE": ("constant", "linear"),
    "TEST.FINAL_MODEL": ("last_step", "best_val"),
    "TEST.SPLIT": ("val", "test"),
    "TRAIN.COUNT_ITER": ("train_x", "train_u", "smaller_one"),
    "DATALOADER.TRAIN_X.SAMPLER": SAMPLERS,
    "DATALOADER.TRAIN_U.SAMPLER": SAMPLERS,
    "DATALOADER.TEST.SAMPLER": SAMPLERS,
    "DATASET.SUBSAMPLE_CLASSES": ("all", "base", "new"),
}
# Keys holding a list, each element of which must be one of the values.
ENGINE_LIST_CHOICES = {"INPUT.TRANSFORMS": tuple(AVAI_CHOICES)}
# Smallest allowed value of numeric keys.
ENGINE_MINIMUMS = {"DATALOADER.TRAIN_X.BATCH_SIZE": 1, "DATALOADER.TEST.BATCH_SIZE": 1, "DATALOADER.NUM_WORKERS": 0,
                   "EVAL_CACHE.MAX_GB": 0}


def extend_cfg(cfg):
    """Add every key a project YAML or command line may set (framework.md §4.3)."""
    from . import CONFIG_NODES

    cfg.DATASET.SUBSAMPLE_CLASSES = "all"  # all, base or new
    cfg.DATASET.SKIP_BAD_IMAGES = False  # skip unreadable images with a warning instead of failing
    cfg.MODEL.BACKBONE.WEIGHTS = ""  # "" = official weights, a file path, or "random"
    add_eval_cache_config(cfg)

    for add_config in CONFIG_NODES:
        add_config(cfg)


def add_eval_cache_config(cfg):
    """``EVAL_CACHE``: the disk cache of evaluation inputs shared by runs (trainers/common/eval_inputs.py).

    Both switches leave every number unchanged; False gives the direct path (decode, transform and
    encode every test image at every evaluation), e.g. for benchmarks with the caches off.
    """
    from harness.disk_cache import DEFAULT_MAX_GB

    cfg.EVAL_CACHE = CN()
    # Frozen image encoders (ZeroshotCLIP, CLIP_Adapter, CoOp, CoCoOp, AttnMMAdapter): test/val image features.
    cfg.EVAL_CACHE.FEATURES = True
    # Adapted image encoders (MMA, MMRL, MMRL++, MaPLe): decoded, resized, cropped uint8 test/val images.
    cfg.EVAL_CACHE.IMAGES = True
    cfg.EVAL_CACHE.DIR = ""  # "" = $CLIP_EVAL_CACHE_DIR, else $XDG_CACHE_HOME (~/.cache)/clip-fewshot/eval
    cfg.EVAL_CACHE.MAX_GB = DEFAULT_MAX_GB  # size cap: least recently used entries are evicted beyond it; 0 = off


def apply_dataset_overrides(cfg):
    """Per-dataset settings of a method (e.g. MMRL's λ table): after the YAMLs and flags, before opts."""
    from . import DATASET_OVERRIDES

    for apply in DATASET_OVERRIDES:
        apply(cfg)


def config_choices():
    """``{dotted key: allowed values}``: the engine's and every trainer module's ``CONFIG_CHOICES``."""
    from . import CONFIG_CHOICES

    return {**ENGINE_CHOICES, **CONFIG_CHOICES}


def _value(cfg, key):
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _not_allowed(key, value, allowed):
    close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return ConfigError(f'{key} "{value}" is not allowed{hint}: use one of {", ".join(map(str, allowed))}')


def check_config_values(cfg):
    """Raise ``ConfigError`` naming the first key whose value is not allowed (enumerations, minimums)."""
    for key, allowed in config_choices().items():
        value = _value(cfg, key)
        if value is not None and value not in allowed:
            raise _not_allowed(key, value, allowed)
    for key, allowed in ENGINE_LIST_CHOICES.items():
        for value in _value(cfg, key) or ():
            if value not in allowed:
                raise _not_allowed(f"{key} element", value, allowed)
    for key, minimum in ENGINE_MINIMUMS.items():
        value = _value(cfg, key)
        if value is not None and value < minimum:
            raise ConfigError(f"{key} is {value}: it must be at least {minimum}")
