"""Optimisers selectable by ``OPTIM.NAME``."""
import warnings

import torch
import torch.nn as nn

from .radam import RAdam

__all__ = ["build_optimizer"]

AVAI_OPTIMS = ["adam", "amsgrad", "sgd", "rmsprop", "radam", "adamw"]


def build_optimizer(model, optim_cfg, param_groups=None):
    """Build the optimiser over a module's (or an iterable of) parameters."""
    name = optim_cfg.NAME
    lr = optim_cfg.LR
    wd = optim_cfg.WEIGHT_DECAY
    betas = (optim_cfg.ADAM_BETA1, optim_cfg.ADAM_BETA2)
    if name not in AVAI_OPTIMS:
        raise ValueError(f"OPTIM.NAME must be one of {AVAI_OPTIMS}, but got {name}")
    if param_groups is not None and optim_cfg.STAGED_LR:
        warnings.warn("STAGED_LR will be ignored; if you need it, build param_groups yourself")

    if param_groups is None:
        if optim_cfg.STAGED_LR:
            if not isinstance(model, nn.Module):
                raise TypeError("With STAGED_LR, build_optimizer needs an nn.Module, not an iterable")
            if isinstance(model, nn.DataParallel):
                model = model.module
            new_layers = optim_cfg.NEW_LAYERS
            if isinstance(new_layers, str):
                new_layers = [new_layers]
            base_params, new_params = [], []
            for child_name, child in model.named_children():
                target = new_params if child_name in new_layers else base_params
                target.extend(child.parameters())
            param_groups = [
                {"params": base_params, "lr": lr * optim_cfg.BASE_LR_MULT},
                {"params": new_params},
            ]
        elif isinstance(model, nn.Module):
            param_groups = model.parameters()
        else:
            param_groups = model

    if name == "adam":
        return torch.optim.Adam(param_groups, lr=lr, weight_decay=wd, betas=betas)
    if name == "amsgrad":
        return torch.optim.Adam(param_groups, lr=lr, weight_decay=wd, betas=betas, amsgrad=True)
    if name == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, momentum=optim_cfg.MOMENTUM, weight_decay=wd,
                               dampening=optim_cfg.SGD_DAMPNING, nesterov=optim_cfg.SGD_NESTEROV)
    if name == "rmsprop":
        return torch.optim.RMSprop(param_groups, lr=lr, momentum=optim_cfg.MOMENTUM, weight_decay=wd,
                                   alpha=optim_cfg.RMSPROP_ALPHA)
    if name == "radam":
        return RAdam(param_groups, lr=lr, weight_decay=wd, betas=betas)  # decoupled weight decay
    return torch.optim.AdamW(param_groups, lr=lr, weight_decay=wd, betas=betas)
