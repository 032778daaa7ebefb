"""Config keys the project adds to Dassl's default tree before any YAML is merged (``extend_cfg``)."""

__all__ = ["extend_cfg", "apply_dataset_overrides"]


def extend_cfg(cfg):
    """Add every key a project YAML or command line may set (framework.md §4.3)."""
    from . import TRAINER_MODULES

    cfg.DATASET.SUBSAMPLE_CLASSES = "all"  # all, base or new
    cfg.DATASET.SKIP_BAD_IMAGES = False  # skip unreadable images with a warning instead of failing
    cfg.MODEL.BACKBONE.WEIGHTS = ""  # "" = official weights, a file path, or "random"
    cfg.TASK = "B2N"  # B2N, CD or FS (read by MMRL and MMRL++)

    for module in TRAINER_MODULES:
        add_config = getattr(module, "add_config", None)
        if add_config is not None:
            add_config(cfg)


def apply_dataset_overrides(cfg):
    """Per-dataset settings of a method (e.g. MMRL's λ table): after the YAMLs and flags, before opts."""
    from . import TRAINER_MODULES

    for module in TRAINER_MODULES:
        apply = getattr(module, "apply_dataset_overrides", None)
        if apply is not None:
            apply(cfg)
