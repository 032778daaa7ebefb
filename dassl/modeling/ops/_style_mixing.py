"""What MixStyle and EFDMix share: the on/off switch, the choice of mixing partners, and the
module-level helpers that flip every such layer of a model."""
import random
from contextlib import contextmanager

import torch
import torch.nn as nn


class StyleMixingLayer(nn.Module):
    """Base of MixStyle / EFDMix: active only in training, when switched on, with probability ``p``.

    ``mix``: "random" (partners from a random permutation of the batch) or "crossdomain" (the batch
    is two domains stacked; each half takes partners from the other half, in random order).
    """

    def __init__(self, p=0.5, alpha=0.1, eps=1e-6, mix="random"):
        super().__init__()
        self.p = p
        self.beta = torch.distributions.Beta(alpha, alpha)
        self.eps = eps
        self.alpha = alpha
        self.mix = mix
        self._activated = True

    def __repr__(self):
        return f"{type(self).__name__}(p={self.p}, alpha={self.alpha}, eps={self.eps}, mix={self.mix})"

    def set_activation_status(self, status=True):
        self._activated = status

    def update_mix_method(self, mix="random"):
        self.mix = mix

    def _skip(self):
        if not self.training or not self._activated:
            return True
        return random.random() > self.p

    def _partners(self, batch_size):
        """Index of each sample's mixing partner, shape [batch_size]."""
        if self.mix == "random":
            return torch.randperm(batch_size)
        if self.mix == "crossdomain":
            # Reversed order puts the second half first: chunk 0 serves the first half, chunk 1 the second.
            first, second = torch.arange(batch_size - 1, -1, -1).chunk(2)
            first = first[torch.randperm(first.shape[0])]
            second = second[torch.randperm(second.shape[0])]
            return torch.cat([first, second], 0)
        raise NotImplementedError(f'Unknown mix "{self.mix}"; use "random" or "crossdomain"')


def layer_switches(layer_class):
    """The six helpers of one layer class, in upstream's order of names:
    activate(m), deactivate(m), random(m), crossdomain(m) for ``model.apply``, and the context
    managers run_without(model) and run_with(model, mix=None). Subclasses are not matched."""

    def activate(m):
        if type(m) is layer_class:
            m.set_activation_status(True)

    def deactivate(m):
        if type(m) is layer_class:
            m.set_activation_status(False)

    def random_mix(m):
        if type(m) is layer_class:
            m.update_mix_method("random")

    def crossdomain_mix(m):
        if type(m) is layer_class:
            m.update_mix_method("crossdomain")

    @contextmanager
    def run_without(model):
        """Switch the layers off inside the block; on again afterwards."""
        try:
            model.apply(deactivate)
            yield
        finally:
            model.apply(activate)

    @contextmanager
    def run_with(model, mix=None):
        """Switch the layers on inside the block (optionally setting ``mix``); off again afterwards."""
        model.apply(activate)
        if mix == "random":
            model.apply(random_mix)
        elif mix == "crossdomain":
            model.apply(crossdomain_mix)
        try:
            yield
        finally:
            model.apply(deactivate)

    return activate, deactivate, random_mix, crossdomain_mix, run_without, run_with
