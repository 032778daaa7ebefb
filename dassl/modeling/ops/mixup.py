"""Mixup (Zhang et al., ICLR 2018) of images and soft labels."""
import torch

__all__ = ["mixup"]


def mixup(x1, x2, y1, y2, beta, preserve_order=False):
    """Mix images [B, C, H, W] and label distributions [B, K] with per-sample lambda ~ Beta(beta, beta).

    With ``preserve_order`` lambda is max(lambda, 1 - lambda), so the result stays closer to (x1, y1).
    """
    lmda = torch.distributions.Beta(beta, beta).sample([x1.shape[0], 1, 1, 1]).to(x1.device)
    if preserve_order:
        lmda = torch.max(lmda, 1 - lmda)
    xmix = x1 * lmda + x2 * (1 - lmda)
    lmda = lmda[:, :, 0, 0]
    ymix = y1 * lmda + y2 * (1 - lmda)
    return xmix, ymix
