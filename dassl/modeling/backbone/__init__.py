from .build import BACKBONE_REGISTRY, build_backbone  # noqa: F401  # isort:skip
from .backbone import Backbone  # noqa: F401  # isort:skip
from .resnet import (  # noqa: F401
    resnet18, resnet18_efdmix_l1, resnet18_efdmix_l12, resnet18_efdmix_l123, resnet18_ms_l1, resnet18_ms_l12,
    resnet18_ms_l123, resnet34, resnet50, resnet50_efdmix_l1, resnet50_efdmix_l12, resnet50_efdmix_l123,
    resnet50_ms_l1, resnet50_ms_l12, resnet50_ms_l123, resnet101, resnet101_efdmix_l1, resnet101_efdmix_l12,
    resnet101_efdmix_l123, resnet101_ms_l1, resnet101_ms_l12, resnet101_ms_l123, resnet152,
)
