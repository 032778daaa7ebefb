"""Dynamic convolution of Dynamic Domain Generalization (Sun et al., IJCAI 2022)."""
import torch.nn as nn

from .attention import Attention

__all__ = ["Conv2dDynamic"]


class Conv2dDynamic(nn.Module):
    """A static k x k convolution plus four kernel templates weighted per sample.

    out = conv(x) + sum_i a_i(attention_x) * template_i(x), templates: depthwise-grouped k x k
    (``conv_nn``), 1 x 1 (``conv_11``), k x 1 (``conv_n1``) and 1 x k (``conv_1n``); the weights a [B, 4]
    come from :class:`Attention` on ``attention_x`` (default: ``x``). ``padding`` must be
    ``kernel_size // 2`` and ``kernel_size`` odd, so that all branches give the same output size.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, bias=True, squeeze=None,
                 attention_in_channels=None):
        super().__init__()
        if padding != kernel_size // 2:
            raise ValueError("`padding` must be equal to `kernel_size // 2`.")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        k, p = kernel_size, padding

        def conv(size, pad, groups=1):
            return nn.Conv2d(in_channels, out_channels, size, stride=stride, padding=pad, groups=groups, bias=bias)

        self.conv = conv(k, p)
        self.kernel_templates = nn.ModuleDict({
            "conv_nn": conv(k, p, groups=min(in_channels, out_channels)),
            "conv_11": conv(1, 0),
            "conv_n1": conv((k, 1), (p, 0)),
            "conv_1n": conv((1, k), (0, p)),
        })
        self.attention = Attention(attention_in_channels or in_channels, len(self.kernel_templates), squeeze,
                                   bias=bias)

    def forward(self, x, attention_x=None):
        weights = self.attention(x if attention_x is None else attention_x)  # [B, 4]
        out = self.conv(x)
        for i, template in enumerate(self.kernel_templates.values()):
            out = out + template(x) * weights[:, i].view(-1, 1, 1, 1)
        return out
