"""Small tensor helpers of semi-supervised / domain-adaptation methods."""
import numpy as np
import torch

__all__ = ["sharpen_prob", "reverse_index", "shuffle_index", "create_onehot", "sigmoid_rampup",
           "linear_rampup", "ema_model_update"]


def sharpen_prob(p, temperature=2):
    """Rows of ``p`` [B, K] raised to ``temperature`` and renormalised (MixMatch's sharpening)."""
    p = p.pow(temperature)
    return p / p.sum(1, keepdim=True)


def reverse_index(data, label):
    """``data`` and ``label`` with the batch order reversed."""
    order = torch.arange(data.size(0) - 1, -1, -1)
    return data[order], label[order]


def shuffle_index(data, label):
    """``data`` and ``label`` in one random batch order (torch's RNG)."""
    order = torch.randperm(data.shape[0])
    return data[order], label[order]


def create_onehot(label, num_classes):
    """One-hot float matrix [B, num_classes] on the CPU for integer labels [B]."""
    return torch.zeros(label.shape[0], num_classes).scatter(1, label.detach().cpu().unsqueeze(1), 1)


def sigmoid_rampup(current, rampup_length):
    """exp(-5 (1 - t)^2) for t = clip(current / rampup_length, 0, 1); 1.0 from ``rampup_length`` on."""
    assert rampup_length > 0
    phase = 1.0 - np.clip(current, 0.0, rampup_length) / rampup_length
    return float(np.exp(-5.0 * phase * phase))


def linear_rampup(current, rampup_length):
    """clip(current / rampup_length, 0, 1)."""
    assert rampup_length > 0
    return float(np.clip(current / rampup_length, 0.0, 1.0))


@torch.no_grad()
def ema_model_update(model, ema_model, alpha):
    """ema <- alpha * ema + (1 - alpha) * param for every parameter pair (buffers untouched)."""
    for ema_param, param in zip(ema_model.parameters(), model.parameters()):
        ema_param.mul_(alpha).add_(param, alpha=1 - alpha)
