"""Values a model computes from its own tensors, kept until those tensors change: the caches of the
trainers (text hidden states of frozen blocks on fixed prompts, text features of learned prompts),
all with one rule.

    lower_text = TensorCache(model)                      # reads only the model's frozen tensors
    hidden = lower_text.get(frozen_blocks_on_prompts)    # computed once per run (per autocast state)
    text = TensorCache(model, learner=model.prompt_learner)
    features = text.get(encode_prompts)                  # every call in training, once per evaluation

The rule. ``get(compute)`` returns the stored value while its key is unchanged, and otherwise calls
``compute()`` without autograd and stores the result. The key is what the numbers depend on:
- the autocast state on the model's device (None or the autocast dtype), and
- the version and storage of every tensor the value reads: every in-place change (an optimiser
  step, ``load_state_dict``, ``copy_``) bumps a tensor's version, and ``.to()`` / ``.half()`` give
  it new storage. Without a ``learner`` the value reads only the tensors that do not require
  gradients (CLIP's frozen weights, fixed prompt buffers), so training steps leave it valid; with
  one it reads every tensor of the model.
While ``learner`` is in training mode nothing is stored: there the value must carry gradients and
the next step changes it, so ``get`` calls ``compute()`` with autograd (and drops what was stored).

Not seen (as autograd does not see them either): writes through ``tensor.data``, and parameters
replaced by other objects after the cache was made (e.g. ``load_state_dict(assign=True)``).
"""
import torch

__all__ = ["TensorCache", "autocast_state"]


def autocast_state(device):
    """The autocast setting a value is computed under on ``device``: None, or its dtype."""
    kind = device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None


class TensorCache:
    """One value computed from the tensors of ``model`` (see the module docstring for the rule).

    ``enabled=False`` gives the direct path: ``get`` always calls ``compute()`` and stores nothing.
    """

    def __init__(self, model: torch.nn.Module, learner: torch.nn.Module = None, enabled: bool = True):
        self.learner = learner
        self.enabled = enabled
        # Parameters keep their identity through .to() and .half(); buffers are replaced, so they
        # are looked up by owner and name at every call (a model has few).
        self._parameters = list(model.parameters())
        self._buffer_slots = [(owner, name) for owner in model.modules()
                              for name, _ in owner.named_buffers(recurse=False)]
        self.clear()

    def clear(self):
        self.value = None
        self._key = None

    def _tensors(self):
        yield from self._parameters
        for owner, name in self._buffer_slots:
            yield getattr(owner, name)

    def key(self):
        """The autocast state and (version, storage) of every tensor the value reads."""
        device = self._parameters[0].device
        read = (t for t in self._tensors() if self.learner is not None or not t.requires_grad)
        return autocast_state(device), tuple((t._version, t.data_ptr()) for t in read)

    def get(self, compute):
        """The value ``compute()`` returns, from the store while nothing it reads has changed."""
        if not self.enabled or (self.learner is not None and self.learner.training):
            self.clear()
            return compute()
        key = self.key()
        if key != self._key:
            self.clear()  # the old value is freed before the new one is computed
            with torch.no_grad():
                self.value = compute()
            self._key = key
        return self.value

    def __len__(self):
        """1 while a value is stored, else 0."""
        return int(self._key is not None)
