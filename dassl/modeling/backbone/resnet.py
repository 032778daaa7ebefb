"""ResNet backbones (He et al., CVPR 2016) built from torchvision's residual blocks.

Parameter names equal torchvision's ``resnet*`` without ``fc``, so ImageNet weights load directly.
``*_ms_l1`` / ``_l12`` / ``_l123`` insert MixStyle after layer1 / layers 1-2 / layers 1-3 (``*_efdmix_*``:
EFDMix), with p = 0.5, alpha = 0.1. ``forward`` returns globally pooled features [B, 512 * expansion].
"""
import torch.nn as nn
from torch.hub import load_state_dict_from_url
from torchvision.models.resnet import BasicBlock, Bottleneck

from dassl.modeling.ops import EFDMix, MixStyle

from .backbone import Backbone
from .build import BACKBONE_REGISTRY

__all__ = ["ResNet", "init_pretrained_weights"]

# ImageNet weights; torch hub caches the files under these names, as upstream Dassl does.
model_urls = {
    "resnet18": "https://download.pytorch.org/models/resnet18-5c106cde.pth",
    "resnet34": "https://download.pytorch.org/models/resnet34-333f7ec4.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-19c8e357.pth",
    "resnet101": "https://download.pytorch.org/models/resnet101-5d3b4d8f.pth",
    "resnet152": "https://download.pytorch.org/models/resnet152-b121ed2d.pth",
}

ARCHS = {  # depth -> (block, blocks per stage)
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
}


class ResNet(Backbone):
    """Stem (7x7 conv, BN, ReLU, max pool) -> layer1..layer4 -> global average pool."""

    def __init__(self, block, layers, ms_class=None, ms_layers=(), ms_p=0.5, ms_a=0.1, **kwargs):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], stride=1)
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self._out_features = 512 * block.expansion

        self.mixstyle = None
        self.ms_layers = list(ms_layers)
        if self.ms_layers:
            unknown = [n for n in self.ms_layers if n not in ("layer1", "layer2", "layer3")]
            if unknown:
                raise ValueError(f"ms_layers must be among layer1, layer2, layer3; got {unknown}")
            self.mixstyle = ms_class(p=ms_p, alpha=ms_a)
            print(f"Insert {type(self.mixstyle).__name__} after {self.ms_layers}")
        self._init_params()

    def _make_layer(self, block, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        stage = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        stage += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def _init_params(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)

    def featuremaps(self, x):
        """Last-stage feature maps [B, 512 * expansion, H / 32, W / 32]."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in ("layer1", "layer2", "layer3"):
            x = getattr(self, name)(x)
            if name in self.ms_layers:
                x = self.mixstyle(x)
        return self.layer4(x)

    def forward(self, x):
        return self.global_avgpool(self.featuremaps(x)).flatten(1)


def init_pretrained_weights(model, model_url):
    """Load ImageNet weights (from torch hub's cache, else downloaded); the classifier is skipped."""
    try:
        state_dict = load_state_dict_from_url(model_url, map_location="cpu")
    except Exception as e:
        raise RuntimeError(
            f"Cannot get the ImageNet weights {model_url} ({type(e).__name__}: {e}). Put the file into "
            "torch hub's checkpoint cache, or set MODEL.BACKBONE.PRETRAINED False."
        ) from None
    model.load_state_dict(state_dict, strict=False)


def _resnet(depth, pretrained, **kwargs):
    block, layers = ARCHS[depth]
    model = ResNet(block, layers, **kwargs)
    if pretrained:
        init_pretrained_weights(model, model_urls[f"resnet{depth}"])
    return model


_L1, _L12, _L123 = ["layer1"], ["layer1", "layer2"], ["layer1", "layer2", "layer3"]


@BACKBONE_REGISTRY.register()
def resnet18(pretrained=True, **kwargs):
    return _resnet(18, pretrained)


@BACKBONE_REGISTRY.register()
def resnet34(pretrained=True, **kwargs):
    return _resnet(34, pretrained)


@BACKBONE_REGISTRY.register()
def resnet50(pretrained=True, **kwargs):
    return _resnet(50, pretrained)


@BACKBONE_REGISTRY.register()
def resnet101(pretrained=True, **kwargs):
    return _resnet(101, pretrained)


@BACKBONE_REGISTRY.register()
def resnet152(pretrained=True, **kwargs):
    return _resnet(152, pretrained)


# MixStyle variants


@BACKBONE_REGISTRY.register()
def resnet18_ms_l123(pretrained=True, **kwargs):
    return _resnet(18, pretrained, ms_class=MixStyle, ms_layers=_L123)


@BACKBONE_REGISTRY.register()
def resnet18_ms_l12(pretrained=True, **kwargs):
    return _resnet(18, pretrained, ms_class=MixStyle, ms_layers=_L12)


@BACKBONE_REGISTRY.register()
def resnet18_ms_l1(pretrained=True, **kwargs):
    return _resnet(18, pretrained, ms_class=MixStyle, ms_layers=_L1)


@BACKBONE_REGISTRY.register()
def resnet50_ms_l123(pretrained=True, **kwargs):
    return _resnet(50, pretrained, ms_class=MixStyle, ms_layers=_L123)


@BACKBONE_REGISTRY.register()
def resnet50_ms_l12(pretrained=True, **kwargs):
    return _resnet(50, pretrained, ms_class=MixStyle, ms_layers=_L12)


@BACKBONE_REGISTRY.register()
def resnet50_ms_l1(pretrained=True, **kwargs):
    return _resnet(50, pretrained, ms_class=MixStyle, ms_layers=_L1)


@BACKBONE_REGISTRY.register()
def resnet101_ms_l123(pretrained=True, **kwargs):
    return _resnet(101, pretrained, ms_class=MixStyle, ms_layers=_L123)


@BACKBONE_REGISTRY.register()
def resnet101_ms_l12(pretrained=True, **kwargs):
    return _resnet(101, pretrained, ms_class=MixStyle, ms_layers=_L12)


@BACKBONE_REGISTRY.register()
def resnet101_ms_l1(pretrained=True, **kwargs):
    return _resnet(101, pretrained, ms_class=MixStyle, ms_layers=_L1)


# EFDMix variants


@BACKBONE_REGISTRY.register()
def resnet18_efdmix_l123(pretrained=True, **kwargs):
    return _resnet(18, pretrained, ms_class=EFDMix, ms_layers=_L123)


@BACKBONE_REGISTRY.register()
def resnet18_efdmix_l12(pretrained=True, **kwargs):
    return _resnet(18, pretrained, ms_class=EFDMix, ms_layers=_L12)


@BACKBONE_REGISTRY.register()
def resnet18_efdmix_l1(pretrained=True, **kwargs):
    return _resnet(18, pretrained, ms_class=EFDMix, ms_layers=_L1)


@BACKBONE_REGISTRY.register()
def resnet50_efdmix_l123(pretrained=True, **kwargs):
    return _resnet(50, pretrained, ms_class=EFDMix, ms_layers=_L123)


@BACKBONE_REGISTRY.register()
def resnet50_efdmix_l12(pretrained=True, **kwargs):
    return _resnet(50, pretrained, ms_class=EFDMix, ms_layers=_L12)


@BACKBONE_REGISTRY.register()
def resnet50_efdmix_l1(pretrained=True, **kwargs):
    return _resnet(50, pretrained, ms_class=EFDMix, ms_layers=_L1)


@BACKBONE_REGISTRY.register()
def resnet101_efdmix_l123(pretrained=True, **kwargs):
    return _resnet(101, pretrained, ms_class=EFDMix, ms_layers=_L123)


@BACKBONE_REGISTRY.register()
def resnet101_efdmix_l12(pretrained=True, **kwargs):
    return _resnet(101, pretrained, ms_class=EFDMix, ms_layers=_L12)


@BACKBONE_REGISTRY.register()
def resnet101_efdmix_l1(pretrained=True, **kwargs):
    return _resnet(101, pretrained, ms_class=EFDMix, ms_layers=_L1)
