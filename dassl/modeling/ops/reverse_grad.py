"""Gradient reversal (Ganin & Lempitsky, ICML 2015)."""
import torch.nn as nn
from torch.autograd import Function

__all__ = ["ReverseGrad", "reverse_grad"]


class _ReverseGrad(Function):
    @staticmethod
    def forward(ctx, input):
        return input.view_as(input)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output.neg()


reverse_grad = _ReverseGrad.apply


class ReverseGrad(nn.Module):
    """Identity in the forward pass; multiplies the gradient by -1 in the backward pass."""

    def forward(self, x):
        return reverse_grad(x)
