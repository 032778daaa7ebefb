"""Early stopping on validation accuracy (``PATIENCE`` epochs without a strict improvement)."""

__all__ = ["EarlyStopping"]


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
