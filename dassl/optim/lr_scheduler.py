"""Learning-rate schedules; schedulers are stepped once per epoch by the trainers."""
import torch
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["build_lr_scheduler", "ConstantWarmupScheduler", "LinearWarmupScheduler"]

AVAI_SCHEDS = ["single_step", "multi_step", "cosine"]


class _BaseWarmupScheduler(LRScheduler):
    """Runs its own warmup for ``warmup_epoch`` steps, then steps ``successor`` and copies its LR."""

    def __init__(self, optimizer, successor, warmup_epoch, last_epoch=-1):
        self.successor = successor
        self.warmup_epoch = warmup_epoch
        super().__init__(optimizer, last_epoch)

    def step(self, epoch=None):
        if self.last_epoch >= self.warmup_epoch:
            self.successor.step(epoch)
            self._last_lr = self.successor.get_last_lr()
        else:
            super().step(epoch)

    def state_dict(self):
        # The successor is stored as plain data (upstream pickles the object), so checkpoints load
        # with torch.load(weights_only=True).
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "successor")}
        state["successor"] = self.successor.state_dict()
        return state

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        successor_state = state_dict.pop("successor")
        if isinstance(successor_state, LRScheduler):  # file written by upstream Dassl
            successor_state = successor_state.state_dict()
        self.__dict__.update(state_dict)
        self.successor.load_state_dict(successor_state)


class ConstantWarmupScheduler(_BaseWarmupScheduler):
    """LR = ``cons_lr`` during warmup."""

    def __init__(self, optimizer, successor, warmup_epoch, cons_lr, last_epoch=-1):
        self.cons_lr = cons_lr
        super().__init__(optimizer, successor, warmup_epoch, last_epoch)

    def get_lr(self):
        if self.last_epoch >= self.warmup_epoch:
            return self.successor.get_last_lr()
        return [self.cons_lr for _ in self.base_lrs]


class LinearWarmupScheduler(_BaseWarmupScheduler):
    """LR = ``min_lr`` at step 0, then ``base_lr * step / warmup_epoch`` during warmup."""

    def __init__(self, optimizer, successor, warmup_epoch, min_lr, last_epoch=-1):
        self.min_lr = min_lr
        super().__init__(optimizer, successor, warmup_epoch, last_epoch)

    def get_lr(self):
        if self.last_epoch >= self.warmup_epoch:
            return self.successor.get_last_lr()
        if self.last_epoch == 0:
            return [self.min_lr for _ in self.base_lrs]
        return [lr * self.last_epoch / self.warmup_epoch for lr in self.base_lrs]


def build_lr_scheduler(optimizer, optim_cfg):
    """The scheduler of ``OPTIM.LR_SCHEDULER``, wrapped in a warmup when ``WARMUP_EPOCH > 0``."""
    name = optim_cfg.LR_SCHEDULER
    stepsize = optim_cfg.STEPSIZE
    gamma = optim_cfg.GAMMA
    max_epoch = optim_cfg.MAX_EPOCH
    if name not in AVAI_SCHEDS:
        raise ValueError(f"OPTIM.LR_SCHEDULER must be one of {AVAI_SCHEDS}, but got {name}")

    if name == "single_step":
        if isinstance(stepsize, (list, tuple)):
            stepsize = stepsize[-1]
        if not isinstance(stepsize, int):
            raise TypeError(f"For single_step lr_scheduler, stepsize must be an integer, but got {type(stepsize)}")
        if stepsize <= 0:
            stepsize = max_epoch
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=stepsize, gamma=gamma)
    elif name == "multi_step":
        if not isinstance(stepsize, (list, tuple)):
            raise TypeError(f"For multi_step lr_scheduler, stepsize must be a list, but got {type(stepsize)}")
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(stepsize), gamma=gamma)
    else:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=float(max_epoch))

    if optim_cfg.WARMUP_EPOCH > 0:
        if not optim_cfg.WARMUP_RECOUNT:
            scheduler.last_epoch = optim_cfg.WARMUP_EPOCH
        if optim_cfg.WARMUP_TYPE == "constant":
            scheduler = ConstantWarmupScheduler(optimizer, scheduler, optim_cfg.WARMUP_EPOCH,
                                                optim_cfg.WARMUP_CONS_LR)
        elif optim_cfg.WARMUP_TYPE == "linear":
            scheduler = LinearWarmupScheduler(optimizer, scheduler, optim_cfg.WARMUP_EPOCH,
                                              optim_cfg.WARMUP_MIN_LR)
        else:
            raise ValueError(f'OPTIM.WARMUP_TYPE must be "constant" or "linear", got "{optim_cfg.WARMUP_TYPE}"')
    return scheduler
