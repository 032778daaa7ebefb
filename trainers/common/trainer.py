"""The trainer of a model that maps images to logits and learns with plain cross-entropy."""
from dassl.engine import TrainerX

from .eval_inputs import eval_batch
from .utils import cross_entropy_step

__all__ = ["CrossEntropyTrainer"]


class CrossEntropyTrainer(TrainerX):
    """``self.model(images) -> logits``, trained with ``cross_entropy_step`` (``self.prec``,
    ``self.scaler``); evaluation batches may hold cached image features instead of images
    (``eval_inputs.eval_batch``). CLIP-Adapter, CoOp and CoCoOp."""

    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def parse_batch_test(self, batch):
        return eval_batch(batch, self.device)

    def forward_backward(self, batch):
        image, label = self.parse_batch_train(batch)
        return cross_entropy_step(self, image, label)
