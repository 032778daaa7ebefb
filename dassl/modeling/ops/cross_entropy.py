"""Cross-entropy with label smoothing."""
import torch
import torch.nn.functional as F

__all__ = ["cross_entropy"]


def cross_entropy(input, target, label_smooth=0, reduction="mean"):
    """Cross-entropy of logits ``input`` [B, K] against integer ``target`` [B].

    The target distribution is (1 - label_smooth) * one_hot + label_smooth / K.
    ``reduction``: "mean", "sum" or "none".
    """
    num_classes = input.shape[1]
    log_prob = F.log_softmax(input, dim=1)
    onehot = torch.zeros_like(log_prob).scatter(1, target.unsqueeze(1), 1)
    smoothed = (1 - label_smooth) * onehot + label_smooth / num_classes
    loss = -(smoothed * log_prob).sum(1)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f'Unknown reduction "{reduction}"; use "mean", "sum" or "none"')
