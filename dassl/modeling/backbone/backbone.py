import torch.nn as nn


class Backbone(nn.Module):
    """Base of registered backbones: ``forward`` returns features [B, out_features]."""

    def forward(self):
        pass

    @property
    def out_features(self):
        """Feature size, from ``self._out_features`` (None when the subclass does not set it)."""
        return self.__dict__.get("_out_features")
