"""Entropic optimal-transport distances between two batches of features."""
import torch
import torch.nn as nn

from dassl.metrics import cosine_distance, euclidean_squared_distance

__all__ = ["OptimalTransport", "SinkhornDivergence", "MinibatchEnergyDistance"]


class OptimalTransport(nn.Module):
    @staticmethod
    def distance(batch1, batch2, dist_metric="cosine"):
        """Cost matrix [N1, N2]: "cosine" (1 - cos), "euclidean" or "fast_euclidean" (both squared L2)."""
        if dist_metric == "cosine":
            return cosine_distance(batch1, batch2)
        if dist_metric == "euclidean":
            return euclidean_squared_distance(batch1, batch2)
        if dist_metric == "fast_euclidean":
            return (batch1.unsqueeze(-2) - batch2.unsqueeze(-3)).pow(2).sum(-1)
        raise ValueError(f"Unknown cost function: {dist_metric}. Expected to be one of [cosine | euclidean]")


class SinkhornDivergence(OptimalTransport):
    """2 W(x, y) - W(x, x) - W(y, y), W the entropic transport cost between uniform batches.

    The plan is found by log-domain Sinkhorn iterations (at most ``max_iter``, stopping when the
    source potential changes by less than ``thre`` in L1); by default no gradient flows through it.
    """

    thre = 1e-3

    def __init__(self, dist_metric="cosine", eps=0.01, max_iter=5, bp_to_sinkhorn=False):
        super().__init__()
        self.dist_metric = dist_metric
        self.eps = eps
        self.max_iter = max_iter
        self.bp_to_sinkhorn = bp_to_sinkhorn

    def forward(self, x, y):
        return 2 * self.transport_cost(x, y) - self.transport_cost(x, x) - self.transport_cost(y, y)

    def transport_cost(self, x, y, return_pi=False):
        cost = self.distance(x, y, dist_metric=self.dist_metric)
        pi = self.sinkhorn_iterate(cost, self.eps, self.max_iter, self.thre)
        if not self.bp_to_sinkhorn:
            pi = pi.detach()
        total = (pi * cost).sum()
        return (total, pi) if return_pi else total

    @staticmethod
    def sinkhorn_iterate(C, eps, max_iter, thre):
        """Plan [nx, ny] with marginals close to uniform: pi_ij = exp((u_i + v_j - C_ij) / eps)."""
        nx, ny = C.shape
        log_mu = torch.log(torch.full((nx,), 1.0 / nx, dtype=C.dtype, device=C.device) + 1e-8)
        log_nu = torch.log(torch.full((ny,), 1.0 / ny, dtype=C.dtype, device=C.device) + 1e-8)
        u = torch.zeros(nx, dtype=C.dtype, device=C.device)
        v = torch.zeros(ny, dtype=C.dtype, device=C.device)

        def log_plan(u, v):
            return (u.unsqueeze(1) + v.unsqueeze(0) - C) / eps

        for _ in range(max_iter):
            u_prev = u
            u = u + eps * (log_mu - torch.logsumexp(log_plan(u, v), dim=1))
            v = v + eps * (log_nu - torch.logsumexp(log_plan(u, v), dim=0))
            if (u - u_prev).abs().sum().item() < thre:
                break
        return torch.exp(log_plan(u, v))


class MinibatchEnergyDistance(SinkhornDivergence):
    """Energy distance on half-batches: sum of W(x_i, y_j) - 2 W(x1, x2) - 2 W(y1, y2)."""

    def __init__(self, dist_metric="cosine", eps=0.01, max_iter=5, bp_to_sinkhorn=False):
        super().__init__(dist_metric=dist_metric, eps=eps, max_iter=max_iter, bp_to_sinkhorn=bp_to_sinkhorn)

    def forward(self, x, y):
        x1, x2 = torch.split(x, x.size(0) // 2, dim=0)
        y1, y2 = torch.split(y, y.size(0) // 2, dim=0)
        cross = sum(self.transport_cost(a, b) for a in (x1, x2) for b in (y1, y2))
        return cross - 2 * self.transport_cost(x1, x2) - 2 * self.transport_cost(y1, y2)
