"""RAdam (Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020).

The names of upstream Dassl's ``dassl.optim.radam``: ``RAdam``, ``PlainRAdam`` and an ``AdamW`` with
an optional linear warmup. Weight decay is decoupled (``p -= lr * wd * p``) in all three. Moments are
kept in fp32, also for fp16 parameters.

RAdam step t (rho_inf = 2 / (1 - beta2) - 1, rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)):
  rho_t >= 5: p -= lr * r_t * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps), with
              r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t));
  otherwise:  p -= lr / (1 - beta1^t) * m (SGD with momentum) if ``degenerated_to_sgd``, else no step.
"""
import math

import torch
from torch.optim import Optimizer

__all__ = ["RAdam", "PlainRAdam", "AdamW"]


def _check_hparams(lr, betas, eps):
    if lr < 0.0:
        raise ValueError(f"Invalid learning rate: {lr}")
    if eps < 0.0:
        raise ValueError(f"Invalid epsilon value: {eps}")
    for i, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Invalid beta parameter at index {i}: {beta}")


class _AdamFamily(Optimizer):
    """Shared loop: fp32 moments, decoupled weight decay; subclasses give the step rule."""

    def _moments(self, p, grad, beta1, beta2):
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
            state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
        state["step"] += 1
        state["exp_avg"].mul_(beta1).add_(grad, alpha=1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        return state["step"], state["exp_avg"], state["exp_avg_sq"]

    def _update(self, group, step, exp_avg, exp_avg_sq, param_fp32):
        """Apply one step to ``param_fp32`` in place."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                grad = p.grad.float()
                step, exp_avg, exp_avg_sq = self._moments(p, grad, beta1, beta2)
                param_fp32 = p if p.dtype == torch.float32 else p.float()
                self._update(group, step, exp_avg, exp_avg_sq, param_fp32)
                if param_fp32 is not p:
                    p.copy_(param_fp32)
        return loss


class RAdam(_AdamFamily):
    """Rectified Adam; upstream's defaults. ``build_optimizer`` uses it for ``OPTIM.NAME radam``."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 degenerated_to_sgd=True):
        _check_hparams(lr, betas, eps)
        self.degenerated_to_sgd = degenerated_to_sgd
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @staticmethod
    def rectified_step_size(step, beta1, beta2, degenerated_to_sgd=True):
        """(use the adaptive term, step size without lr) for step ``step`` (1-based)."""
        beta2_t = beta2 ** step
        rho_inf = 2.0 / (1.0 - beta2) - 1.0
        rho_t = rho_inf - 2.0 * step * beta2_t / (1.0 - beta2_t)
        bias1 = 1.0 - beta1 ** step
        if rho_t >= 5:
            r_t = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
            return True, r_t * math.sqrt(1.0 - beta2_t) / bias1
        return False, (1.0 / bias1 if degenerated_to_sgd else 0.0)

    def _update(self, group, step, exp_avg, exp_avg_sq, param_fp32):
        beta1, beta2 = group["betas"]
        adaptive, step_size = self.rectified_step_size(step, beta1, beta2, self.degenerated_to_sgd)
        if step_size <= 0:
            return  # variance not yet tractable and no SGD fallback: no update, no decay
        lr = group["lr"]
        if group["weight_decay"] != 0:
            param_fp32.mul_(1 - lr * group["weight_decay"])
        if adaptive:
            param_fp32.addcdiv_(exp_avg, exp_avg_sq.sqrt().add_(group["eps"]), value=-lr * step_size)
        else:
            param_fp32.add_(exp_avg, alpha=-lr * step_size)


class PlainRAdam(RAdam):
    """Upstream's uncached variant of RAdam; the update rule is the same (this RAdam caches nothing)."""


class AdamW(_AdamFamily):
    """Adam with decoupled weight decay; during the first ``warmup`` steps the lr rises linearly
    (``1e-8 + step * lr / warmup``)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, warmup=0):
        _check_hparams(lr, betas, eps)
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, warmup=warmup))

    def _update(self, group, step, exp_avg, exp_avg_sq, param_fp32):
        beta1, beta2 = group["betas"]
        lr = group["lr"]
        if group["warmup"] > step:
            lr = 1e-8 + step * lr / group["warmup"]
        if group["weight_decay"] != 0:
            param_fp32.mul_(1 - lr * group["weight_decay"])
        step_size = lr * math.sqrt(1.0 - beta2 ** step) / (1.0 - beta1 ** step)
        param_fp32.addcdiv_(exp_avg, exp_avg_sq.sqrt().add_(group["eps"]), value=-step_size)
