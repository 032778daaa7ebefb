"""A toy on-disk dataset and a tiny trainable trainer, for engine tests that need no real dataset."""
import os
import os.path as osp

import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from dassl.data.datasets import DATASET_REGISTRY, Datum, DatasetBase
from dassl.engine import TRAINER_REGISTRY, TrainerX
from dassl.metrics import compute_accuracy
from dassl.optim import build_lr_scheduler, build_optimizer

TOY_CLASSES = ["red_square", "green_thing", "blue_sky", "grey_wall"]


def toy_classnames(num_classes=4):
    return TOY_CLASSES[:num_classes] + [f"toy_class_{i}" for i in range(len(TOY_CLASSES), num_classes)]


def make_toy_root(root, per_class=6, num_classes=4):
    """Write ``root/toy/<class>/<i>.png``: small images whose colour depends on the class."""
    colours = [(220, 30, 30), (30, 200, 40), (30, 40, 220), (128, 128, 128)]
    colours += [((37 * i) % 256, (91 * i) % 256, (53 * i) % 256) for i in range(4, num_classes)]
    for label, name in enumerate(toy_classnames(num_classes)):
        d = osp.join(root, "toy", name)
        os.makedirs(d, exist_ok=True)
        for i in range(per_class):
            c = tuple(min(255, v + 7 * i) for v in colours[label])
            Image.new("RGB", (12, 10), c).save(osp.join(d, f"{i}.png"))
    return root


def toy_order(name):
    return TOY_CLASSES.index(name) if name in TOY_CLASSES else len(TOY_CLASSES) + int(name.rsplit("_", 1)[1])


@DATASET_REGISTRY.register(force=True)
class ToyColours(DatasetBase):
    """Half of each class for training, the rest for testing; few-shot sampling on train."""

    dataset_dir = "toy"

    def __init__(self, cfg):
        root = osp.join(osp.abspath(osp.expanduser(cfg.DATASET.ROOT)), self.dataset_dir)
        train, test = [], []
        names = sorted(os.listdir(root), key=lambda n: toy_order(n))
        for label, name in enumerate(names):
            files = sorted(os.listdir(osp.join(root, name)))
            for i, f in enumerate(files):
                item = Datum(impath=osp.join(root, name, f), label=label, classname=name)
                (train if i % 2 == 0 else test).append(item)
        train = self.generate_fewshot_dataset(train, num_shots=cfg.DATASET.NUM_SHOTS)
        super().__init__(train_x=train, val=test, test=test)


class _Probe(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, num_classes)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(x, 8).flatten(1))


@TRAINER_REGISTRY.register(force=True)
class ToyProbe(TrainerX):
    """A linear classifier on 8x8-pooled pixels, trained with the CoOp-family step conventions."""

    def build_model(self):
        self.model = _Probe(self.num_classes).to(self.device)
        self.optim = build_optimizer(self.model, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model("probe", self.model, self.optim, self.sched)

    def forward_backward(self, batch):
        image, label = batch["img"].to(self.device), batch["label"].to(self.device)
        output = self.model(image)
        loss = F.cross_entropy(output, label)
        self.model_backward_and_update(loss)
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {"loss": loss.item(), "acc": compute_accuracy(output, label)[0].item()}
