"""An ``nn.Sequential`` whose modules may take and return several tensors."""
import torch.nn as nn

__all__ = ["Sequential2"]


class Sequential2(nn.Sequential):
    """A tuple returned by one module is unpacked into the arguments of the next."""

    def forward(self, *inputs):
        for module in self:
            inputs = module(*inputs) if isinstance(inputs, tuple) else module(inputs)
        return inputs
