"""Trainer lifecycle: TrainerBase (model registry, checkpoints, hooks), SimpleTrainer, TrainerX."""
import copy
import datetime
import os.path as osp
import time
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn

from dassl.data import DataManager
from dassl.evaluation import build_evaluator
from dassl.modeling import build_backbone, build_head
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils import (
    AverageMeter, MetricMeter, atomic_write, count_num_param, load_checkpoint, load_pretrained_weights,
    mkdir_if_missing, restore_rng_state, resume_from_checkpoint, rng_state, save_checkpoint, tolist_if_not,
)
from harness.console import Progress, interactive, log_only

__all__ = ["SimpleNet", "TrainerBase", "SimpleTrainer", "TrainerX", "TrainerXU", "show_progress",
           "RESUME_STATE_FILE"]

# Written at the end of every epoch (whatever TRAIN.CHECKPOINT_FREQ says), so that a run resumes
# from its last finished epoch exactly as if it had not been interrupted.
RESUME_STATE_FILE = "resume_state.pth.tar"


def show_progress():
    """Progress bars only on an interactive terminal (they go to stderr, never into log.txt)."""
    return interactive()


class SimpleNet(nn.Module):
    """Backbone [-> head] [-> linear classifier], built through the registries of ``dassl.modeling``.

    ``MODEL.BACKBONE.NAME`` names a ``BACKBONE_REGISTRY`` entry (called with ``pretrained`` =
    ``MODEL.BACKBONE.PRETRAINED``); a head is added when ``MODEL.HEAD.NAME`` and ``HIDDEN_LAYERS``
    are both set; no classifier when ``num_classes`` <= 0. CLIP trainers do not use it.
    """

    def __init__(self, cfg, model_cfg, num_classes, **kwargs):
        super().__init__()
        self.backbone = build_backbone(model_cfg.BACKBONE.NAME, verbose=cfg.VERBOSE,
                                       pretrained=model_cfg.BACKBONE.PRETRAINED, **kwargs)
        fdim = self.backbone.out_features
        self.head = None
        if model_cfg.HEAD.NAME and model_cfg.HEAD.HIDDEN_LAYERS:
            self.head = build_head(model_cfg.HEAD.NAME, verbose=cfg.VERBOSE, in_features=fdim,
                                   hidden_layers=model_cfg.HEAD.HIDDEN_LAYERS, activation=model_cfg.HEAD.ACTIVATION,
                                   bn=model_cfg.HEAD.BN, dropout=model_cfg.HEAD.DROPOUT, **kwargs)
            fdim = self.head.out_features
        self.classifier = nn.Linear(fdim, num_classes) if num_classes > 0 else None
        self._fdim = fdim

    @property
    def fdim(self):
        return self._fdim

    def forward(self, x, return_feature=False):
        f = self.backbone(x)
        if self.head is not None:
            f = self.head(f)
        if self.classifier is None:
            return f
        y = self.classifier(f)
        return (y, f) if return_feature else y


class TrainerBase:
    """Registered models/optimizers/schedulers, checkpointing and the epoch loop."""

    def __init__(self):
        self._models = OrderedDict()
        self._optims = OrderedDict()
        self._scheds = OrderedDict()
        self._writer = None
        self.stop_training = False  # set by a trainer (e.g. early stopping); the epoch loop then ends

    def register_model(self, name="model", model=None, optim=None, sched=None):
        if self.__dict__.get("_models") is None:
            raise AttributeError("Cannot assign model before super().__init__() call")
        if self.__dict__.get("_optims") is None:
            raise AttributeError("Cannot assign optim before super().__init__() call")
        if self.__dict__.get("_scheds") is None:
            raise AttributeError("Cannot assign sched before super().__init__() call")
        assert name not in self._models, f'Found duplicate model name "{name}"'
        self._models[name] = model
        self._optims[name] = optim
        self._scheds[name] = sched

    def get_model_names(self, names=None):
        names_real = list(self._models.keys())
        if names is not None:
            names = tolist_if_not(names)
            for name in names:
                assert name in names_real, f'Unknown model name "{name}"; registered: {names_real}'
            return names
        return names_real

    def _checkpoint(self, name, epoch, val_result=None):
        """The checkpoint dict of one registered model (section 7 of the engine spec)."""
        optim, sched = self._optims[name], self._scheds[name]
        return {
            "state_dict": self._models[name].state_dict(),
            "epoch": epoch + 1,
            "optimizer": optim.state_dict() if optim is not None else None,
            "scheduler": sched.state_dict() if sched is not None else None,
            "val_result": val_result,
            "rng_state": rng_state(),
        }

    def save_model(self, epoch, directory, is_best=False, val_result=None, model_name=""):
        for name in self.get_model_names():
            save_checkpoint(self._checkpoint(name, epoch, val_result), osp.join(directory, name),
                            is_best=is_best, model_name=model_name)

    def resume_model_if_exist(self, directory):
        """Restore the newest resume state (or, for older folders, the ``checkpoint`` pointers); returns
        the epoch to continue from (0: train from scratch)."""
        names = self.get_model_names()
        state_path = osp.join(directory, RESUME_STATE_FILE)
        if names and osp.exists(state_path):
            return self.load_resume_state(state_path)
        file_missing = any(not osp.exists(osp.join(directory, name, "checkpoint")) for name in names)
        if not names or file_missing:
            with log_only():
                print("No checkpoint found, train from scratch")
            return 0
        print(f"Found checkpoint at {directory} (will resume training)")
        start_epoch = 0
        for name in names:
            path = osp.join(directory, name)
            start_epoch = resume_from_checkpoint(path, self._models[name], self._optims[name], self._scheds[name])
        return start_epoch

    # --- exact resume -----------------------------------------------------------------------

    def resume_state(self):
        """Everything a resumed run needs to continue exactly: weights, optimisers, schedulers, random
        states, the best-validation bookkeeping (with the best model's checkpoints) and the trainer's
        own state (``extra_resume_state``)."""
        return {
            "format": 1,
            "epoch": self.epoch + 1,
            "models": {name: {k: v for k, v in self._checkpoint(name, self.epoch).items() if k != "rng_state"}
                       for name in self.get_model_names()},
            "rng_state": rng_state(),
            "best_result": float(getattr(self, "best_result", -np.inf)),
            "best_epoch": getattr(self, "best_epoch", None),
            "best_checkpoints": getattr(self, "best_checkpoints", None),
            "stop_training": self.stop_training,
            "extra": self.extra_resume_state(),
        }

    def save_resume_state(self, directory):
        """Write ``directory/resume_state.pth.tar`` atomically (called after every epoch)."""
        if not self.get_model_names():
            return
        with atomic_write(osp.join(directory, RESUME_STATE_FILE), "wb") as f:
            torch.save(self.resume_state(), f)

    def load_resume_state(self, path):
        """Inverse of ``save_resume_state``; rewrites the best model's file from the state. Returns the epoch."""
        state = load_checkpoint(path)
        print(f"Found a resume state at {path}: continuing after epoch {state['epoch']}")
        for name in self.get_model_names():
            saved = state["models"][name]
            self._models[name].load_state_dict(saved["state_dict"])
            if self._optims[name] is not None and saved["optimizer"] is not None:
                self._optims[name].load_state_dict(saved["optimizer"])
            if self._scheds[name] is not None and saved["scheduler"] is not None:
                self._scheds[name].load_state_dict(saved["scheduler"])
        restore_rng_state(state["rng_state"])
        self.best_result = state["best_result"]
        self.best_epoch = state["best_epoch"]
        self.best_checkpoints = state["best_checkpoints"]
        self.stop_training = state["stop_training"]
        if self.best_checkpoints:  # the file on disk may come from the interrupted epoch: restore it
            for name, checkpoint in self.best_checkpoints.items():
                save_checkpoint(dict(checkpoint), osp.join(self.output_dir, name), model_name="model-best.pth.tar")
        self.load_extra_resume_state(state["extra"])
        return state["epoch"]

    def extra_resume_state(self):
        """Hook: a trainer's own state that a resumed run needs (plain data or tensors)."""
        return {}

    def load_extra_resume_state(self, state):
        """Hook: restore what ``extra_resume_state`` returned."""

    def load_model(self, directory, epoch=None):
        if not directory:
            print("Note that load_model() is skipped as no pretrained model is given "
                  "(ignore this if it's done on purpose)")
            return
        names = self.get_model_names()
        model_file = "model-best.pth.tar" if epoch is None else f"model.pth.tar-{epoch}"
        for name in names:
            model_path = osp.join(directory, name, model_file)
            if not osp.exists(model_path):
                raise FileNotFoundError(f'Model not found at "{model_path}"')
            checkpoint = load_checkpoint(model_path)
            val_result = checkpoint.get("val_result")
            shown = f"{val_result:.1f}" if isinstance(val_result, (int, float)) else "None"
            print(f"Load {model_path} to {name} (epoch={checkpoint['epoch']}, val_result={shown})")
            self._models[name].load_state_dict(checkpoint["state_dict"])

    def set_model_mode(self, mode="train", names=None):
        names = self.get_model_names(names)
        for name in names:
            if mode == "train":
                self._models[name].train()
            elif mode in ("test", "eval"):
                self._models[name].eval()
            else:
                raise KeyError(f'Unknown model mode "{mode}"; use "train", "test" or "eval"')

    def update_lr(self, names=None):
        names = self.get_model_names(names)
        for name in names:
            if self._scheds[name] is not None:
                self._scheds[name].step()

    def detect_anomaly(self, loss):
        if not torch.isfinite(loss).all():
            raise FloatingPointError("Loss is infinite or NaN!")

    def init_writer(self, log_dir):
        if self.__dict__.get("_writer") is None or self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                print("TensorBoard is not installed; training curves are not written")
                return
            with log_only():
                print(f"Initialize tensorboard (log_dir={log_dir})")
            self._writer = SummaryWriter(log_dir=log_dir)

    def close_writer(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def write_scalar(self, tag, scalar_value, global_step=None):
        if self._writer is not None:
            self._writer.add_scalar(tag, scalar_value, global_step)

    def train(self, start_epoch, max_epoch):
        """The generic epoch loop."""
        self.start_epoch = start_epoch
        self.max_epoch = max_epoch
        self.before_train()
        for self.epoch in range(self.start_epoch, self.max_epoch):
            if self.stop_training:
                break
            self.before_epoch()
            self.run_epoch()
            self.after_epoch()
            self.epoch_finished()
        progress = self.__dict__.pop("_train_progress", None)
        if progress is not None:
            progress.close()
        self.after_train()

    def train_progress(self):
        """The progress report of this training: one over all remaining epochs (``harness.console``).

        Created at the first ``run_epoch`` (which knows the epoch length), closed after the last epoch.
        """
        if self.__dict__.get("_train_progress") is None:
            total = (self.max_epoch - self.start_epoch) * self.num_batches
            self._train_progress = Progress(total, "train", unit="batches")
        return self._train_progress

    def epoch_finished(self):
        """After ``after_epoch``: the point a resumed run continues from (see ``SimpleTrainer``)."""

    def before_train(self):
        pass

    def after_train(self):
        pass

    def before_epoch(self):
        pass

    def after_epoch(self):
        pass

    def run_epoch(self):
        raise NotImplementedError

    def test(self):
        raise NotImplementedError

    def parse_batch_train(self, batch):
        raise NotImplementedError

    def parse_batch_test(self, batch):
        raise NotImplementedError

    def forward_backward(self, batch):
        raise NotImplementedError

    def model_inference(self, input):
        raise NotImplementedError

    def model_zero_grad(self, names=None):
        names = self.get_model_names(names)
        for name in names:
            if self._optims[name] is not None:
                self._optims[name].zero_grad()

    def model_backward(self, loss, scaler=None):
        """``loss.backward()``, scaled by ``scaler`` (a ``torch.amp.GradScaler``) when given."""
        self.detect_anomaly(loss)
        (loss if scaler is None else scaler.scale(loss)).backward()

    def model_update(self, names=None, scaler=None):
        """Step the optimisers of ``names``; through ``scaler`` (then its update) when given."""
        names = self.get_model_names(names)
        for name in names:
            if self._optims[name] is not None:
                if scaler is None:
                    self._optims[name].step()
                else:
                    scaler.step(self._optims[name])
        if scaler is not None:
            scaler.update()

    def model_backward_and_update(self, loss, names=None, scaler=None):
        """zero_grad, backward and optimiser step of the models ``names`` (all by default).

        ``scaler``: a GradScaler for fp16 autocast (an addition to upstream Dassl, whose methods take
        no scaler; without it the calls are upstream's).
        """
        self.model_zero_grad(names)
        self.model_backward(loss, scaler)
        self.model_update(names, scaler)


class SimpleTrainer(TrainerBase):
    """Builds data, model and evaluator from the config; evaluation and checkpoint policy."""

    def __init__(self, cfg):
        super().__init__()
        self.check_cfg(cfg)
        if torch.cuda.is_available() and cfg.USE_CUDA:
            self.device = torch.device("cuda")
        else:
            self.device = torch.device("cpu")
        self.start_epoch = self.epoch = 0
        self.max_epoch = cfg.OPTIM.MAX_EPOCH
        self.output_dir = cfg.OUTPUT_DIR
        self.cfg = cfg
        self.build_data_loader()
        self.build_model()
        self.evaluator = build_evaluator(cfg, lab2cname=self.lab2cname)
        self.best_result = -np.inf
        self.best_epoch = None  # 1-based epoch of the best validation result
        self.best_checkpoints = None  # {name: checkpoint dict} of that epoch, for the resume state
        self.final_result = None  # the accuracy of the final test (after_train)

    def check_cfg(self, cfg):
        """Check whether some variables in the config are set correctly.

        Called first, before anything is built: raise on a bad value. For example, a trainer that
        needs a class sampler checks ``DATALOADER.TRAIN_X.SAMPLER`` here.
        """
        pass

    def build_train_transform(self):
        """The transform of the training images, or None for Dassl's (``build_transform(cfg, is_train=True)``).

        An addition to upstream Dassl's engine, whose ``build_data_loader`` does not call it: a
        trainer that overrides it and must also run on upstream checks ``uses_train_transform``.
        """
        return None

    def build_data_loader(self):
        """Create essential data-related attributes.

        A re-implementation of this method must create the same attributes (self.dm is optional):
        ``train_loader_x``, ``train_loader_u``, ``val_loader``, ``test_loader``, ``num_classes``,
        ``num_source_domains``, ``lab2cname``.
        """
        dm = DataManager(self.cfg, custom_tfm_train=self.build_train_transform())
        self.train_loader_x = dm.train_loader_x
        self.train_loader_u = dm.train_loader_u
        self.val_loader = dm.val_loader
        self.test_loader = dm.test_loader
        self.num_classes = dm.num_classes
        self.num_source_domains = dm.num_source_domains
        self.lab2cname = dm.lab2cname
        self.dm = dm

    def build_model(self):
        """Build and register the model.

        The default builds a classification network made of a backbone, an optional head and a
        linear classifier; a trainer that builds its own registers every trainable part with
        ``register_model(name, model, optim, sched)``.
        """
        cfg = self.cfg
        print("Building model")
        self.model = SimpleNet(cfg, cfg.MODEL, self.num_classes)
        if cfg.MODEL.INIT_WEIGHTS:
            load_pretrained_weights(self.model, cfg.MODEL.INIT_WEIGHTS)
        self.model.to(self.device)
        print(f"# params: {count_num_param(self.model):,}")
        self.optim = build_optimizer(self.model, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model("model", self.model, self.optim, self.sched)

    def train(self):
        super().train(self.start_epoch, self.max_epoch)

    def before_train(self):
        directory = self.cfg.OUTPUT_DIR
        if self.cfg.RESUME:
            directory = self.cfg.RESUME
        self.start_epoch = self.resume_model_if_exist(directory)
        writer_dir = osp.join(self.output_dir, "tensorboard")
        mkdir_if_missing(writer_dir)
        self.init_writer(writer_dir)
        self.time_start = time.time()

    def after_train(self):
        print("Finish training")
        do_test = not self.cfg.TEST.NO_TEST
        if do_test:
            if self.cfg.TEST.FINAL_MODEL == "best_val":
                print("Deploy the model with the best val performance")
                self.load_model(self.output_dir)
            else:
                with log_only():
                    print("Deploy the last-epoch model")
            self.final_result = self.test()
        elapsed = round(time.time() - self.time_start)
        print(f"Elapsed: {datetime.timedelta(seconds=elapsed)}")
        self.close_writer()

    def after_epoch(self):
        last_epoch = (self.epoch + 1) == self.max_epoch
        do_test = not self.cfg.TEST.NO_TEST
        meet_checkpoint_freq = (
            (self.epoch + 1) % self.cfg.TRAIN.CHECKPOINT_FREQ == 0
            if self.cfg.TRAIN.CHECKPOINT_FREQ > 0 else False
        )
        if do_test and self.cfg.TEST.FINAL_MODEL == "best_val":
            with log_only():  # every epoch's val result goes to log.txt; the console shows progress
                curr_result = self.test(split="val")
            is_best = curr_result > self.best_result
            if is_best:
                self.best_result = curr_result
                self.best_epoch = self.epoch + 1
                self.best_checkpoints = {
                    name: copy.deepcopy(self._checkpoint(name, self.epoch, curr_result))
                    for name in self.get_model_names()
                }
                for name, checkpoint in self.best_checkpoints.items():
                    save_checkpoint(dict(checkpoint), osp.join(self.output_dir, name),
                                    model_name="model-best.pth.tar")
        if meet_checkpoint_freq or last_epoch:
            self.save_model(self.epoch, self.output_dir)

    def epoch_finished(self):
        self.save_resume_state(self.output_dir)

    @torch.no_grad()
    def test(self, split=None):
        """Evaluate on ``split`` (default ``TEST.SPLIT``); returns the accuracy."""
        self.set_model_mode("eval")
        self.evaluator.reset()
        if split is None:
            split = self.cfg.TEST.SPLIT
        if split == "val" and self.val_loader is not None:
            data_loader = self.val_loader
        else:
            split = "test"
            data_loader = self.test_loader
        print(f"Evaluate on the *{split}* set")
        progress = Progress(len(data_loader.dataset), f"eval {split}", unit="images")
        for batch in data_loader:
            if batch is None:
                continue
            input, label = self.parse_batch_test(batch)
            output = self.model_inference(input)
            self.evaluator.process(output, label)
            progress.update(len(label))
        progress.close()
        results = self.evaluator.evaluate()
        for k, v in results.items():
            self.write_scalar(f"{split}/{k}", v, self.epoch)
        return list(results.values())[0]

    def model_inference(self, input):
        return self.model(input)

    def parse_batch_test(self, batch):
        input = batch["img"].to(self.device)
        label = batch["label"].to(self.device)
        return input, label

    def get_current_lr(self, names=None):
        names = self.get_model_names(names)
        return self._optims[names[0]].param_groups[0]["lr"]


class TrainerX(SimpleTrainer):
    """Trains on labelled data only (every CLIP trainer of this project)."""

    def run_epoch(self):
        self.set_model_mode("train")
        losses = MetricMeter()
        batch_time = AverageMeter()
        data_time = AverageMeter()
        self.num_batches = len(self.train_loader_x)
        progress = self.train_progress()
        end = time.time()
        for self.batch_idx, batch in enumerate(self.train_loader_x):
            data_time.update(time.time() - end)
            if batch is None:  # every image of the batch was unreadable and skipped
                progress.update(1)
                continue
            loss_summary = self.forward_backward(batch)
            batch_time.update(time.time() - end)
            losses.update(loss_summary)
            report_train_step(self, losses, batch_time, data_time, progress)
            end = time.time()
        write_pending_train_scalars(self)

    def parse_batch_train(self, batch):
        input = batch["img"].to(self.device)
        label = batch["label"].to(self.device)
        domain = batch["domain"].to(self.device)
        return input, label, domain


def report_train_step(trainer, losses, batch_time, data_time, progress=None):
    """After batch ``trainer.batch_idx``: advance ``progress``; log the upstream progress line every
    ``TRAIN.PRINT_FREQ`` batches (every batch when the epoch is shorter; to the log file only, the
    console shows ``progress``) and write ``train/<loss>`` and ``train/lr`` scalars.

    The losses may be device tensors: they are read only on a printing step or at the epoch's last
    batch (one transfer), and the scalars of the steps in between are written then, with their own
    step numbers and values. ``progress`` shows the losses as of the last printing step.
    """
    num_batches = trainer.num_batches
    print_freq = trainer.cfg.TRAIN.PRINT_FREQ
    printing = (trainer.batch_idx + 1) % print_freq == 0 or num_batches < print_freq
    if printing:
        nb_remain = num_batches - trainer.batch_idx - 1
        nb_remain += (trainer.max_epoch - trainer.epoch - 1) * num_batches
        eta = str(datetime.timedelta(seconds=int(batch_time.avg * nb_remain)))
        line = " ".join([
            f"epoch [{trainer.epoch + 1}/{trainer.max_epoch}]",
            f"batch [{trainer.batch_idx + 1}/{num_batches}]",
            f"time {batch_time.val:.3f} ({batch_time.avg:.3f})",
            f"data {data_time.val:.3f} ({data_time.avg:.3f})",
            f"{losses}",
            f"lr {trainer.get_current_lr():.4e}",
            f"eta {eta}",
        ])
        with log_only():
            print(line)
        trainer._loss_note = " ".join(f"{name} {meter.avg:.4f}" for name, meter in losses.meters.items())
    if progress is not None:
        note = f"epoch {trainer.epoch + 1}/{trainer.max_epoch} {trainer.__dict__.get('_loss_note', '')}"
        progress.update(1, note=note.rstrip())
    if getattr(trainer, "_writer", None) is None:
        return
    # Per step: its number, the lr, and how many updates each loss meter had (its average after them).
    pending = trainer.__dict__.setdefault("_pending_train_scalars", [])
    n_iter = trainer.epoch * num_batches + trainer.batch_idx
    pending.append((n_iter, trainer.get_current_lr(), losses, {k: m.updates for k, m in losses.meters.items()}))
    if printing or trainer.batch_idx + 1 == num_batches:
        write_pending_train_scalars(trainer)


def write_pending_train_scalars(trainer):
    """Write the ``train/*`` scalars queued by ``report_train_step`` (reads the losses once)."""
    pending = trainer.__dict__.get("_pending_train_scalars")
    if not pending:
        return
    for losses in {id(p[2]): p[2] for p in pending}.values():
        losses.settle()
    for n_iter, lr, losses, updates in pending:
        for name, count in updates.items():
            trainer.write_scalar("train/" + name, losses.meters[name].history[count - 1], n_iter)
        trainer.write_scalar("train/lr", lr, n_iter)
    pending.clear()


def _endless(loader):
    """The loader's batches, starting a new pass (a new shuffle) whenever one ends."""
    while True:
        yield from loader


COUNT_ITER_CHOICES = ("train_x", "train_u", "smaller_one")


class TrainerXU(SimpleTrainer):
    """Trains on labelled and unlabelled batches side by side: ``forward_backward(batch_x, batch_u)``.

    ``TRAIN.COUNT_ITER`` sets the batches per epoch: ``len(train_loader_x)`` ("train_x"),
    ``len(train_loader_u)`` ("train_u") or the smaller of the two ("smaller_one"); the other loader
    starts a new pass whenever it runs out. Printing and scalars follow ``TrainerX``.
    """

    def epoch_length(self):
        """Batches per epoch under ``TRAIN.COUNT_ITER``."""
        count_iter = self.cfg.TRAIN.COUNT_ITER
        if count_iter not in COUNT_ITER_CHOICES:
            raise ValueError(f'TRAIN.COUNT_ITER "{count_iter}" is not one of {list(COUNT_ITER_CHOICES)}')
        if self.train_loader_u is None:
            raise ValueError(f'{type(self).__name__} needs unlabelled data, but dataset "{self.cfg.DATASET.NAME}" '
                             "has no train_u split")
        len_x, len_u = len(self.train_loader_x), len(self.train_loader_u)
        return {"train_x": len_x, "train_u": len_u, "smaller_one": min(len_x, len_u)}[count_iter]

    def run_epoch(self):
        self.set_model_mode("train")
        losses = MetricMeter()
        batch_time = AverageMeter()
        data_time = AverageMeter()
        self.num_batches = self.epoch_length()
        batches_x = _endless(self.train_loader_x)
        batches_u = _endless(self.train_loader_u)
        progress = self.train_progress()
        end = time.time()
        for self.batch_idx in range(self.num_batches):
            batch_x, batch_u = next(batches_x), next(batches_u)
            data_time.update(time.time() - end)
            if batch_x is None or batch_u is None:  # every image of a batch was unreadable and skipped
                progress.update(1)
                continue
            loss_summary = self.forward_backward(batch_x, batch_u)
            batch_time.update(time.time() - end)
            losses.update(loss_summary)
            report_train_step(self, losses, batch_time, data_time, progress)
            end = time.time()
        write_pending_train_scalars(self)

    def parse_batch_train(self, batch_x, batch_u):
        input_x = batch_x["img"].to(self.device)
        label_x = batch_x["label"].to(self.device)
        input_u = batch_u["img"].to(self.device)
        return input_x, label_x, input_u
