from .defaults import _C as cfg_default


def get_cfg_default():
    """A fresh copy of the default config tree."""
    return cfg_default.clone()


def clean_cfg(cfg, trainer):
    """Drop every TRAINER sub-node except NAME and ``trainer.upper()`` (train.py does not call this)."""
    cfg.defrost()
    keep = trainer.upper()
    for key in list(cfg.TRAINER.keys()):
        if key not in ("NAME", keep):
            cfg.TRAINER.pop(key)
