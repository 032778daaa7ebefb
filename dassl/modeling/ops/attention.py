"""Input-dependent mixing weights of Dynamic Domain Generalization (Sun et al., IJCAI 2022)."""
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["Attention"]


class Attention(nn.Module):
    """Global average pool -> fc1 (in_channels -> squeeze) -> ReLU -> fc2 -> softmax: [B, out_features].

    ``squeeze`` defaults to ``in_channels // 16``.
    """

    def __init__(self, in_channels, out_features, squeeze=None, bias=True):
        super().__init__()
        self.squeeze = squeeze if squeeze else in_channels // 16
        if self.squeeze <= 0:
            raise ValueError(f"squeeze={self.squeeze}: give squeeze explicitly for in_channels={in_channels} < 16")
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(in_channels, self.squeeze, bias=bias)
        self.fc2 = nn.Linear(self.squeeze, out_features, bias=bias)
        self.sf = nn.Softmax(dim=-1)

    def forward(self, x):
        pooled = self.avg_pool(x).flatten(1)  # [B, C]
        return self.sf(self.fc2(F.relu(self.fc1(pooled))))
