"""Transferable normalisation (Wang et al., NeurIPS 2019)."""
import torch
import torch.nn as nn

__all__ = ["TransNorm1d", "TransNorm2d"]


class _TransNorm(nn.Module):
    """BatchNorm with separate source / target statistics and a shared affine transform.

    Training input: the source batch stacked on the target batch (two equal halves); each half is
    normalised with its own batch statistics. Evaluation: target running statistics. With
    ``adaptive_alpha`` the output is scaled per channel by (1 + alpha), alpha = C * w / sum(w) with
    w = 1 / (1 + |mu_s / sqrt(var_s + eps) - mu_t / sqrt(var_t + eps)|): channels whose statistics
    agree across domains get more weight.

    Running statistics are updated as upstream does: new = momentum * old + (1 - momentum) * batch.
    """

    input_dim = None

    def __init__(self, num_features, eps=1e-5, momentum=0.1, adaptive_alpha=True):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.adaptive_alpha = adaptive_alpha
        self.register_buffer("running_mean_s", torch.zeros(num_features))
        self.register_buffer("running_var_s", torch.ones(num_features))
        self.register_buffer("running_mean_t", torch.zeros(num_features))
        self.register_buffer("running_var_t", torch.ones(num_features))
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def resnet_running_stats(self):
        """Reset the running statistics (upstream's name)."""
        for mean, var in ((self.running_mean_s, self.running_var_s), (self.running_mean_t, self.running_var_t)):
            mean.zero_()
            var.fill_(1)

    def reset_parameters(self):
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)

    def _check_input(self, x):
        if x.dim() != self.input_dim:
            raise ValueError(f"Expected the input to be {self.input_dim}-D, but got {x.dim()}-D")

    def _channel_view(self, t):
        """[C] -> [1, C] or [1, C, 1, 1]."""
        return t.view(1, -1, *([1] * (self.input_dim - 2)))

    def _compute_alpha(self, mean_s, var_s, mean_t, var_t):
        gap = (mean_s / (var_s + self.eps).sqrt() - mean_t / (var_t + self.eps).sqrt()).abs()
        closeness = 1 / (1 + gap)
        return self.num_features * closeness / closeness.sum()

    def _normalise(self, x, mean, var):
        v = self._channel_view
        return (x - v(mean)) / (v(var) + self.eps).sqrt() * v(self.weight) + v(self.bias)

    def _batch_stats(self, x, running_mean, running_var):
        per_channel = x.transpose(0, 1).reshape(self.num_features, -1)
        mean, var = per_channel.mean(1), per_channel.var(1)
        with torch.no_grad():
            running_mean.mul_(self.momentum).add_((1 - self.momentum) * mean)
            running_var.mul_(self.momentum).add_((1 - self.momentum) * var)
        return mean, var

    def forward(self, input):
        self._check_input(input)
        if self.training:
            source, target = torch.split(input, input.shape[0] // 2, dim=0)
            mean_s, var_s = self._batch_stats(source, self.running_mean_s, self.running_var_s)
            mean_t, var_t = self._batch_stats(target, self.running_mean_t, self.running_var_t)
            output = torch.cat([self._normalise(source, mean_s, var_s), self._normalise(target, mean_t, var_t)], 0)
        else:
            mean_s, var_s = self.running_mean_s, self.running_var_s
            mean_t, var_t = self.running_mean_t, self.running_var_t
            output = self._normalise(input, mean_t, var_t)
        if self.adaptive_alpha:
            alpha = self._compute_alpha(mean_s, var_s, mean_t, var_t).detach()
            output = (1 + self._channel_view(alpha)) * output
        return output


class TransNorm1d(_TransNorm):
    """For [B, C] features."""

    input_dim = 2


class TransNorm2d(_TransNorm):
    """For [B, C, H, W] feature maps."""

    input_dim = 4
