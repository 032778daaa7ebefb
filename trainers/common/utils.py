"""Small helpers every CLIP trainer uses (precision modes are in ``precision.py``)."""
import functools
import inspect

import torch
import torch.nn.functional as F

from dassl.metrics import compute_accuracy
from dassl.optim import build_lr_scheduler, build_optimizer
from harness.console import log_only

from .precision import autocast_for, make_grad_scaler

__all__ = [
    "freeze_except", "report_trainable", "text_features_for_prompts", "backward_and_step", "finish_step",
    "cross_entropy_step", "l2_normalize", "register_trainable",
]


def l2_normalize(x):
    """``x / ‖x‖`` along the last dimension (CLIP's feature normalisation)."""
    return x / x.norm(dim=-1, keepdim=True)


def freeze_except(module, trainable_substrings):
    """Set ``requires_grad`` only on parameters whose name contains one of the substrings."""
    for name, param in module.named_parameters():
        param.requires_grad_(any(s in name for s in trainable_substrings))


def register_trainable(trainer, name, module, prec=None):
    """Dassl's optimizer and LR scheduler (``cfg.OPTIM``) for ``module``, registered as ``name`` (its
    checkpoint folder); with ``prec``, also the gradient scaler that precision needs (``trainer.scaler``)."""
    trainer.optim = build_optimizer(module, trainer.cfg.OPTIM)
    trainer.sched = build_lr_scheduler(trainer.optim, trainer.cfg.OPTIM)
    trainer.register_model(name, module, trainer.optim, trainer.sched)
    if prec is not None:
        trainer.scaler = make_grad_scaler(prec, trainer.device)


def report_trainable(module):
    """Print the trainable parameter names and the count line the logs are searched for."""
    names = [name for name, p in module.named_parameters() if p.requires_grad]
    count = sum(p.numel() for p in module.parameters() if p.requires_grad)
    with log_only():  # a long line: the console's header shows the count
        print(f"Parameters to be updated: {names}")
    print(f"Number of trainable parameters: {count:,}")
    return count


@torch.no_grad()
def text_features_for_prompts(clip_model, prompts, device, batch_size=1000):
    """L2-normalised text features [len(prompts), embed_dim] of fixed prompts (frozen CLIP)."""
    from clip import layerwise, tokenize
    feats = []
    for i in range(0, len(prompts), batch_size):
        tokens = tokenize(prompts[i:i + batch_size]).to(device)
        f = layerwise.encode_text(clip_model, tokens)
        feats.append(f / f.norm(dim=-1, keepdim=True))
    return torch.cat(feats)


@functools.lru_cache(maxsize=None)
def _update_takes_scaler(trainer_class):
    """Whether the engine's ``model_backward_and_update`` takes a GradScaler (ours; upstream Dassl's does not)."""
    return "scaler" in inspect.signature(trainer_class.model_backward_and_update).parameters


def backward_and_step(trainer, loss, scaler=None, names=None):
    """zero_grad, (scaled) backward and optimiser step for the registered models ``names``."""
    if scaler is None:
        trainer.model_backward_and_update(loss, names)
    elif _update_takes_scaler(type(trainer)):
        trainer.model_backward_and_update(loss, names, scaler=scaler)
    else:  # upstream Dassl's engine takes no GradScaler: the same steps on its registered optimisers
        trainer.model_zero_grad(names)
        trainer.detect_anomaly(loss)
        scaler.scale(loss).backward()
        for name in trainer.get_model_names(names):
            if trainer._optims[name] is not None:
                scaler.step(trainer._optims[name])
        scaler.update()


def finish_step(trainer, loss, logits, label):
    """The tail of a training step: the LR scheduler after the epoch's last batch, and the summary
    (one-element tensors: the engine's meters read them at the next log line, not at every step)."""
    if (trainer.batch_idx + 1) == trainer.num_batches:
        trainer.update_lr()
    return {"loss": loss.detach(), "acc": compute_accuracy(logits, label)[0]}


def cross_entropy_step(trainer, image, label):
    """One CoOp-family training step of ``trainer.model`` with plain cross-entropy.

    Forward under autocast when ``trainer.prec`` is amp, (scaled) backward and optimiser step, and
    ``finish_step``.
    """
    with autocast_for(trainer.device, enabled=trainer.prec == "amp"):
        output = trainer.model(image)
        loss = F.cross_entropy(output, label)
    backward_and_step(trainer, loss, trainer.scaler)
    return finish_step(trainer, loss, output, label)
