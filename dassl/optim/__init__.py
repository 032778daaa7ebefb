from .optimizer import build_optimizer  # noqa: F401
from .lr_scheduler import build_lr_scheduler  # noqa: F401
