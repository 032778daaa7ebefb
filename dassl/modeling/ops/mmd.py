"""Maximum mean discrepancy between two batches of features."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from dassl.metrics import euclidean_squared_distance

__all__ = ["MaximumMeanDiscrepancy"]


class MaximumMeanDiscrepancy(nn.Module):
    """MMD^2(x, y) = mean k(x, x') + mean k(y, y') - 2 mean k(x, y); x [B1, D], y [B2, D].

    Within-set means leave out the diagonal (a sample with itself). Kernels: "linear" x.y;
    "poly" (x.y + 2)^2; "rbf" the sum of Gaussians exp(-d^2 / (2 sigma^2)) for sigma in 1, 5, 10.
    ``normalize`` L2-normalises the features first.
    """

    def __init__(self, kernel_type="rbf", normalize=False):
        super().__init__()
        self.kernel_type = kernel_type
        self.normalize = normalize

    def forward(self, x, y):
        if self.normalize:
            x, y = F.normalize(x, dim=1), F.normalize(y, dim=1)
        if self.kernel_type == "linear":
            return self.linear_mmd(x, y)
        if self.kernel_type == "poly":
            return self.poly_mmd(x, y)
        if self.kernel_type == "rbf":
            return self.rbf_mmd(x, y)
        raise NotImplementedError(f'Unknown kernel_type "{self.kernel_type}"; use "linear", "poly" or "rbf"')

    @staticmethod
    def _mmd(kernel, x, y):
        k_xx = MaximumMeanDiscrepancy.remove_self_distance(kernel(x, x))
        k_yy = MaximumMeanDiscrepancy.remove_self_distance(kernel(y, y))
        return k_xx.mean() + k_yy.mean() - 2 * kernel(x, y).mean()

    def linear_mmd(self, x, y):
        return self._mmd(lambda a, b: a @ b.t(), x, y)

    def poly_mmd(self, x, y, alpha=1.0, c=2.0, d=2):
        return self._mmd(lambda a, b: (alpha * (a @ b.t()) + c).pow(d), x, y)

    def rbf_mmd(self, x, y):
        return self._mmd(lambda a, b: self.rbf_kernel_mixture(euclidean_squared_distance(a, b)), x, y)

    @staticmethod
    def rbf_kernel_mixture(exponent, sigmas=(1, 5, 10)):
        return sum(torch.exp(-exponent / (2.0 * sigma ** 2)) for sigma in sigmas)

    @staticmethod
    def remove_self_distance(distmat):
        """[N, N] -> [N, N - 1]: each row without its diagonal entry."""
        n = distmat.size(0)
        off_diagonal = ~torch.eye(n, dtype=torch.bool, device=distmat.device)
        return distmat[off_diagonal].view(n, n - 1)

    @staticmethod
    def euclidean_squared_distance(x, y):
        return euclidean_squared_distance(x, y)
