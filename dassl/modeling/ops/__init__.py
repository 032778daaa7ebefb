"""Generic layers and losses of Dassl's domain-adaptation / generalisation methods.

Helpers for semi-supervised training live in ``dassl.modeling.ops.utils``.
"""
from .attention import Attention  # noqa: F401
from .conv import Conv2dDynamic  # noqa: F401
from .cross_entropy import cross_entropy  # noqa: F401
from .dsbn import DSBN1d, DSBN2d  # noqa: F401
from .efdmix import (  # noqa: F401
    EFDMix, activate_efdmix, crossdomain_efdmix, deactivate_efdmix, random_efdmix, run_with_efdmix,
    run_without_efdmix,
)
from .mixstyle import (  # noqa: F401
    MixStyle, activate_mixstyle, crossdomain_mixstyle, deactivate_mixstyle, random_mixstyle, run_with_mixstyle,
    run_without_mixstyle,
)
from .mixup import mixup  # noqa: F401
from .mmd import MaximumMeanDiscrepancy  # noqa: F401
from .optimal_transport import MinibatchEnergyDistance, SinkhornDivergence  # noqa: F401
from .reverse_grad import ReverseGrad  # noqa: F401
from .sequential2 import Sequential2  # noqa: F401
from .transnorm import TransNorm1d, TransNorm2d  # noqa: F401
