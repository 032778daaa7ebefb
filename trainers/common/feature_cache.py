"""Frozen-encoder image features computed once per split, and loaders that iterate them (kept in
memory for one run; ``eval_inputs.py`` keeps evaluation splits on disk for many runs).

When the image encoder is frozen and a split's transform is deterministic (the test transform, or
a training transform without augmentation), the features of that split are the same in every
epoch. Computing them once and iterating the cached features gives the numbers of the direct path
(decode, transform, encode at every step) at a fraction of the cost:

    cache = compute_image_features(encode, sequential_loader(cfg, items, transform), device)
    loader = feature_loader_like(image_loader, cache)  # same shuffling, batch size and drop_last

A feature loader yields dicts with ``FEATURE_KEY`` ([B, D], the encoder's dtype), ``label``, ``domain`` and
``index`` (the item's position in its data source, as in the image loader's batches), so a
trainer's ``parse_batch_*`` can accept either kind of batch.

Random streams: computing a cache restores the global RNG state afterwards, and a shuffled feature
loader draws from the global RNG exactly like the image loader it replaces (with
``DATALOADER.NUM_WORKERS 0``), so cached and direct training see the same batches in the same order.
"""
from dataclasses import dataclass

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from dassl.data.data_manager import build_data_loader
from harness.console import Progress

__all__ = [
    "FEATURE_KEY", "FeatureCache", "FeatureDataset", "sequential_loader", "compute_image_features",
    "feature_loader", "feature_loader_like", "cache_epoch_features",
]

FEATURE_KEY = "image_features"


@dataclass
class FeatureCache:
    """Features of one split; row r belongs to item ``indices[r]`` of the data source."""

    features: torch.Tensor  # [N, D] in the encoder's output dtype, on the CPU
    labels: torch.Tensor  # [N] int64
    domains: torch.Tensor  # [N] int64
    indices: torch.Tensor  # [N] int64, ascending (unreadable images skipped by the loader are absent)

    def __len__(self):
        return self.features.shape[0]


def sequential_loader(cfg, data_source, transform, batch_size=None):
    """Every item of ``data_source`` once, in order, nothing dropped: the loader to compute features with."""
    return build_data_loader(
        cfg, sampler_type="SequentialSampler", data_source=data_source,
        batch_size=batch_size or cfg.DATALOADER.TEST.BATCH_SIZE, tfm=transform, is_train=False,
    )


@torch.no_grad()
def compute_image_features(encode, loader, device):
    """Run ``encode(images [B, 3, H, W]) -> [B, D]`` over ``loader`` once and collect the rows by item index.

    ``loader`` must visit each item at most once (a sequential loader). The global random state is
    restored afterwards, so building a cache does not change the rest of the run.
    """
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    features, labels, domains, indices = [], [], [], []
    progress = Progress(len(loader.dataset), "encode images", unit="images")
    with torch.random.fork_rng(devices=cuda_devices):
        for batch in loader:
            if batch is None:  # every image of the batch was unreadable (DATASET.SKIP_BAD_IMAGES)
                continue
            features.append(encode(batch["img"].to(device)).cpu())  # its own dtype: cached = direct
            labels.append(batch["label"])
            domains.append(batch["domain"])
            indices.append(batch["index"])
            progress.update(len(batch["label"]))
    progress.close()
    if not features:
        raise RuntimeError("compute_image_features: the loader yielded no images")
    indices = torch.cat(indices).long()
    order = torch.argsort(indices)
    if len(torch.unique(indices)) != len(indices):
        raise ValueError("compute_image_features: the loader visited an item twice; use a sequential loader")
    return FeatureCache(
        features=torch.cat(features)[order], labels=torch.cat(labels).long()[order],
        domains=torch.cat(domains).long()[order], indices=indices[order],
    )


class FeatureDataset(Dataset):
    """Cached features, fetched a whole batch at a time: ``dataset[rows]`` -> batch dict."""

    def __init__(self, cache):
        self.cache = cache

    def __len__(self):
        return len(self.cache)

    def __getitem__(self, rows):
        rows = torch.as_tensor(rows, dtype=torch.long)
        c = self.cache
        return {FEATURE_KEY: c.features[rows], "label": c.labels[rows], "domain": c.domains[rows],
                "index": c.indices[rows]}


def feature_loader(cache, batch_size, shuffle, drop_last):
    """Batches of cached features; ``shuffle`` draws a permutation per epoch from the global RNG."""
    rows = range(len(cache))
    sampler = RandomSampler(rows) if shuffle else SequentialSampler(rows)
    # The batch sampler hands whole index lists to the dataset (batch_size=None disables collation),
    # so a batch is one tensor gather instead of B item lookups.
    return DataLoader(FeatureDataset(cache), sampler=BatchSampler(sampler, batch_size, drop_last), batch_size=None)


def feature_loader_like(image_loader, cache):
    """A loader over ``cache`` that batches like ``image_loader``: same sampler kind, batch size, drop_last."""
    shuffle = isinstance(image_loader.sampler, RandomSampler)
    return feature_loader(cache, image_loader.batch_size, shuffle, image_loader.drop_last)


def cache_epoch_features(trainer, encode, train_transform=None, val_cached=False):
    """Before training: replace the loaders whose images are the same in every epoch by loaders of
    their features, encoded once with ``encode``.

    ``train_transform``: the deterministic transform of the training images, or None when they
    change between epochs (augmentation, noise). The val split (test transform) is cached when it
    is evaluated every epoch (``TEST.FINAL_MODEL best_val``), unless ``val_cached`` (already features).
    """
    cfg = trainer.cfg
    if train_transform is not None:
        loader = sequential_loader(cfg, trainer.dm.dataset.train_x, train_transform)
        cache = compute_image_features(encode, loader, trainer.device)
        trainer.train_loader_x = feature_loader_like(trainer.train_loader_x, cache)
        print(f"Training on cached image features ({len(cache):,} images, encoded once)")
    evaluates_val = cfg.TEST.FINAL_MODEL == "best_val" and not cfg.TEST.NO_TEST
    if evaluates_val and trainer.val_loader is not None and not val_cached:
        cache = compute_image_features(encode, trainer.val_loader, trainer.device)
        trainer.val_loader = feature_loader_like(trainer.val_loader, cache)
        print(f"Validating on cached image features ({len(cache):,} images, encoded once)")
