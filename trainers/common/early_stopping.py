"""Early stopping on validation accuracy (``PATIENCE`` epochs without a strict improvement)."""

__all__ = ["EarlyStopping", "EarlyStoppingTrainerMixin"]


class EarlyStopping:
    """Counts the epochs since the best val result; ``patience`` 0 never stops.

    The count is part of a run's resume state (``epochs_without_improvement``), so a resumed run
    stops after the same epoch as an uninterrupted one.
    """

    def __init__(self, patience):
        self.patience = patience
        self.epochs_without_improvement = 0

    def should_stop(self, improved, last_epoch):
        """After an epoch's val evaluation: True when training should end before the last epoch."""
        if self.patience <= 0:
            return False
        self.epochs_without_improvement = 0 if improved else self.epochs_without_improvement + 1
        return self.epochs_without_improvement >= self.patience and not last_epoch


class EarlyStoppingTrainerMixin:
    """Trainer hooks for early stopping: list it before ``TrainerX`` and set ``self.early_stopping``
    (an ``EarlyStopping``) in ``build_model``. Needs ``TEST.FINAL_MODEL best_val`` (val accuracy)."""

    def run_epoch(self):
        # Our engine ends its epoch loop once stop_training is set; upstream Dassl's loop runs on,
        # so the epochs after an early stop do nothing there (no training, evaluation or checkpoint).
        if not getattr(self, "stop_training", False):
            super().run_epoch()

    def after_epoch(self):
        """The engine's val evaluation and checkpoints, then the early-stopping check."""
        if getattr(self, "stop_training", False):
            return
        best_before = self.best_result
        super().after_epoch()
        # A strict improvement is what wrote model-best.pth.tar.
        if self.early_stopping.should_stop(self.best_result > best_before, (self.epoch + 1) == self.max_epoch):
            print(f"Early stopping after epoch {self.epoch + 1}: no val improvement in the last "
                  f"{self.early_stopping.patience} epoch(s) (best {self.best_result:.1f}% after epoch "
                  f"{getattr(self, 'best_epoch', '?')})")
            self.save_model(self.epoch, self.output_dir)  # the last trained epoch, as after a full run
            self.stop_training = True  # our engine's epoch loop ends here (upstream's: see run_epoch)

    def extra_resume_state(self):
        return {"epochs_without_improvement": self.early_stopping.epochs_without_improvement}

    def load_extra_resume_state(self, state):
        self.early_stopping.epochs_without_improvement = state["epochs_without_improvement"]
