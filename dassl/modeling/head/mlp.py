"""The ``mlp`` head: hidden layers between the backbone features and the classifier."""
import functools

import torch.nn as nn

from .build import HEAD_REGISTRY

ACTIVATIONS = {
    "relu": functools.partial(nn.ReLU, inplace=True),
    "leaky_relu": functools.partial(nn.LeakyReLU, inplace=True),
}


class MLP(nn.Module):
    """Per hidden size h: Linear(prev, h) [-> BatchNorm1d(h)] -> activation [-> Dropout]."""

    def __init__(self, in_features=2048, hidden_layers=(), activation="relu", bn=True, dropout=0.0):
        super().__init__()
        if isinstance(hidden_layers, int):
            hidden_layers = [hidden_layers]
        if len(hidden_layers) == 0:
            raise ValueError("The mlp head needs at least one hidden layer (MODEL.HEAD.HIDDEN_LAYERS)")
        if activation not in ACTIVATIONS:
            raise NotImplementedError(f'Unknown activation "{activation}"; use one of {list(ACTIVATIONS)}')
        layers = []
        for width in hidden_layers:
            layers.append(nn.Linear(in_features, width))
            if bn:
                layers.append(nn.BatchNorm1d(width))
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_features = width
        self.mlp = nn.Sequential(*layers)
        self.out_features = hidden_layers[-1]

    def forward(self, x):
        return self.mlp(x)


@HEAD_REGISTRY.register()
def mlp(**kwargs):
    return MLP(**kwargs)
