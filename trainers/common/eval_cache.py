"""A value that depends only on a learner's weights (e.g. text features of learned prompts that do
not depend on the image), computed once per evaluation instead of once per test batch.

    cache = EvalCache(learner)
    text_features = cache.get(compute_text_features, device)

In training mode ``get`` always calls ``compute`` (with autograd: the value trains) and forgets any
stored value. In eval mode the first call computes without autograd and stores the result; later
calls return it until the learner goes back to training mode, loads weights (``load_state_dict``,
as resuming and ``--model-dir`` do), or the autocast state changes (its numbers depend on it).
"""
import torch

__all__ = ["EvalCache", "autocast_state"]


def autocast_state(device):
    """The autocast setting a value is computed under on ``device``: None, or its dtype."""
    kind = device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None


class EvalCache:
    def __init__(self, learner, enabled=True):
        self.learner = learner
        self.enabled = enabled
        self.clear()
        learner.register_load_state_dict_post_hook(lambda module, incompatible_keys: self.clear())

    def clear(self):
        self._value = None
        self._key = None

    def get(self, compute, device):
        if self.learner.training or not self.enabled:
            self.clear()
            return compute()
        key = autocast_state(device)
        if self._value is None or key != self._key:
            with torch.no_grad():
                self._value = compute()
            self._key = key
        return self._value
