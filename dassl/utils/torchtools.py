"""Checkpoint I/O and small model utilities."""
import os.path as osp
import warnings
from collections import OrderedDict

import torch
import torch.nn as nn

from harness.console import log_only
from harness.safe_load import TRUST_ENV_VAR, CheckpointError, find_inert, load_checkpoint_file, trusted

from .tools import atomic_write, mkdir_if_missing

__all__ = [
    "save_checkpoint", "load_checkpoint", "resume_from_checkpoint", "load_pretrained_weights",
    "count_num_param", "open_all_layers", "open_specified_layers", "init_network_weights",
    "TRUST_ENV_VAR", "strip_module_prefix", "rng_state", "restore_rng_state",
]


def strip_module_prefix(state_dict):
    """Drop the ``module.`` prefix that DataParallel adds to parameter names."""
    return OrderedDict((k[7:] if k.startswith("module.") else k, v) for k, v in state_dict.items())


def save_checkpoint(state, save_dir, is_best=False, remove_module_from_keys=True, model_name=""):
    """Write ``state`` to ``save_dir/model.pth.tar-<epoch>`` (or ``model_name``) atomically.

    Also updates the ``checkpoint`` pointer file naming the latest file.
    """
    mkdir_if_missing(save_dir)
    if remove_module_from_keys:
        state["state_dict"] = strip_module_prefix(state["state_dict"])
    epoch_file = not model_name
    if epoch_file:
        model_name = "model.pth.tar-" + str(state["epoch"])
    fpath = osp.join(save_dir, model_name)
    with atomic_write(fpath, "wb") as f:
        torch.save(state, f)
    with log_only():  # the console shows the output folder once, in the run's header
        print(f"Checkpoint saved to {fpath}")
    if epoch_file:
        # The pointer names the latest epoch file only (upstream also pointed it at model-best),
        # so resuming continues from the last epoch, as an uninterrupted run would.
        with atomic_write(osp.join(save_dir, "checkpoint"), "w") as f:
            f.write(f"{osp.basename(fpath)}\n")
    if is_best:
        best_fpath = osp.join(osp.dirname(fpath), "model-best.pth.tar")
        with atomic_write(best_fpath, "wb") as f:
            torch.save(state, f)
        print(f'Best checkpoint saved to "{best_fpath}"')


def load_checkpoint(fpath, trust=None):
    """Load a checkpoint onto the CPU (or the GPU when present) without running code from the file.

    Files this engine writes load with ``weights_only=True``. Files written by upstream Dassl pickle
    a scheduler object: their tensors are read exactly by a restricted unpickler and the objects
    become inert stand-ins (enough for evaluation), unless ``trust`` (or ``--trust-checkpoint``,
    i.e. ``DASSL_TRUST_CHECKPOINT=1``) allows full unpickling. See ``harness.safe_load``.
    """
    if fpath is None:
        raise ValueError("File path is None")
    return load_checkpoint_file(osp.abspath(osp.expanduser(fpath)), trust=trust)


def resume_from_checkpoint(fdir, model, optimizer=None, scheduler=None):
    """Restore model/optimizer/scheduler from the file named in ``fdir/checkpoint``; return its epoch."""
    pointer = osp.join(fdir, "checkpoint")
    with open(pointer, "r") as f:
        lines = f.readlines()
    if not lines or not lines[0].strip():
        raise CheckpointError(f'the checkpoint pointer "{pointer}" is empty: delete it to resume from the '
                              "newest model.pth.tar-N by hand, or start the run in a new folder")
    fpath = osp.join(fdir, lines[0].strip())
    print(f'Loading checkpoint from "{fpath}"')
    checkpoint = load_checkpoint(fpath)
    untrusted = find_inert({k: checkpoint.get(k) for k in ("optimizer", "scheduler")})
    if untrusted and not trusted():
        raise CheckpointError(
            f'resuming from "{fpath}" needs its pickled optimizer/scheduler objects ({", ".join(sorted(untrusted))}), '
            f"and unpickling them can run code: rerun with --trust-checkpoint (or {TRUST_ENV_VAR}=1) if you "
            "trust the file")
    model.load_state_dict(checkpoint["state_dict"])
    print("Loaded model weights")
    if optimizer is not None and checkpoint.get("optimizer") is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        print("Loaded optimizer")
    if scheduler is not None and checkpoint.get("scheduler") is not None:
        scheduler.load_state_dict(checkpoint["scheduler"])
        print("Loaded scheduler")
    if checkpoint.get("rng_state") is not None:
        restore_rng_state(checkpoint["rng_state"])
        print("Restored random-number states")
    start_epoch = checkpoint["epoch"]
    print(f"Previous epoch: {start_epoch}")
    return start_epoch


def rng_state():
    """Python, NumPy, torch (and CUDA) random states, as plain data a ``weights_only`` load accepts."""
    import random

    import numpy as np

    state = {
        "python": random.getstate(),
        "numpy": [x.tolist() if isinstance(x, np.ndarray) else x for x in np.random.get_state()],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state):
    """Inverse of ``rng_state``: a resumed run then draws the same numbers."""
    import random

    import numpy as np

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_pretrained_weights(model, weight_path):
    """Load the tensors of ``weight_path`` whose names and shapes match ``model``; report the rest."""
    checkpoint = load_checkpoint(weight_path)
    state_dict = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    state_dict = strip_module_prefix(state_dict)
    model_dict = model.state_dict()
    matched, discarded = OrderedDict(), []
    for k, v in state_dict.items():
        if k in model_dict and model_dict[k].size() == v.size():
            matched[k] = v
        else:
            discarded.append(k)
    model_dict.update(matched)
    model.load_state_dict(model_dict)
    if not matched:
        warnings.warn(f'Cannot load {weight_path} (check the key names manually)')
    else:
        print(f'Successfully loaded pretrained weights from "{weight_path}"')
        if discarded:
            print(f"Layers discarded due to unmatched keys or size: {discarded}")


def count_num_param(model=None, params=None):
    if model is not None:
        return sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in params)


def open_all_layers(model):
    model.train()
    for p in model.parameters():
        p.requires_grad = True


def open_specified_layers(model, open_layers):
    """Train only the named child modules; freeze the rest."""
    if isinstance(model, nn.DataParallel):
        model = model.module
    if isinstance(open_layers, str):
        open_layers = [open_layers]
    for layer in open_layers:
        if not hasattr(model, layer):
            raise ValueError(f"{layer} is not an attribute of the model")
    for name, module in model.named_children():
        is_open = name in open_layers
        module.train(is_open)
        for p in module.parameters():
            p.requires_grad = is_open


def init_network_weights(model, init_type="normal", gain=0.02):
    def _init(m):
        classname = m.__class__.__name__
        if hasattr(m, "weight") and ("Conv" in classname or "Linear" in classname):
            if init_type == "normal":
                nn.init.normal_(m.weight.data, 0.0, gain)
            elif init_type == "xavier":
                nn.init.xavier_normal_(m.weight.data, gain=gain)
            elif init_type == "kaiming":
                nn.init.kaiming_normal_(m.weight.data, a=0, mode="fan_in")
            elif init_type == "orthogonal":
                nn.init.orthogonal_(m.weight.data, gain=gain)
            else:
                raise NotImplementedError(f"initialization method {init_type} is not implemented")
            if getattr(m, "bias", None) is not None:
                nn.init.constant_(m.bias.data, 0.0)
        elif "BatchNorm" in classname or "InstanceNorm" in classname:
            if getattr(m, "weight", None) is not None:
                nn.init.constant_(m.weight.data, 1.0)
            if getattr(m, "bias", None) is not None:
                nn.init.constant_(m.bias.data, 0.0)

    model.apply(_init)


# Upstream keeps the two helpers below out of ``__all__``: reachable as dassl.utils.torchtools.*.


def adjust_learning_rate(optimizer, base_lr, epoch, stepsize=20, gamma=0.1, linear_decay=False,
                         final_lr=0, max_epoch=100):
    """Set every param group's lr for ``epoch`` (deprecated upstream in favour of schedulers).

    Step decay: ``base_lr * gamma ** (epoch // stepsize)``. With ``linear_decay``: linear from
    ``base_lr`` at epoch 0 to ``final_lr`` at ``max_epoch``.
    """
    if linear_decay:
        done = epoch / max_epoch
        lr = (1.0 - done) * base_lr + done * final_lr
    else:
        lr = base_lr * gamma ** (epoch // stepsize)
    for group in optimizer.param_groups:
        group["lr"] = lr


def set_bn_to_eval(m):
    """For ``model.apply``: BatchNorm layers stop updating running stats (their affine stays trainable)."""
    if "BatchNorm" in type(m).__name__:
        m.eval()
