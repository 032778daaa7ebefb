"""Domain-specific batch normalisation (Chang et al., CVPR 2019)."""
import torch.nn as nn

__all__ = ["DSBN1d", "DSBN2d"]


class _DSBN(nn.Module):
    """One BatchNorm per domain; ``select_bn(i)`` chooses the one ``forward`` uses."""

    bn_class = None

    def __init__(self, num_features, n_domain):
        super().__init__()
        self.bn = nn.ModuleList(self.bn_class(num_features) for _ in range(n_domain))
        self.n_domain = n_domain
        self.valid_domain_idxs = list(range(n_domain))
        self.domain_idx = 0

    def select_bn(self, domain_idx=0):
        if domain_idx not in self.valid_domain_idxs:
            raise ValueError(f"domain_idx={domain_idx} is not in {self.valid_domain_idxs}")
        self.domain_idx = domain_idx

    def forward(self, x):
        return self.bn[self.domain_idx](x)


class DSBN1d(_DSBN):
    bn_class = nn.BatchNorm1d


class DSBN2d(_DSBN):
    bn_class = nn.BatchNorm2d
