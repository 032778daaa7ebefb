"""Builds the dataset, the transforms and the train/val/test loaders from a config."""
import hashlib
import random
import warnings

import numpy as np
import torch
from tabulate import tabulate
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import default_collate

from dassl.utils import read_image

from .datasets import build_dataset
from .samplers import build_sampler
from .transforms import INTERPOLATION_MODES, build_transform

__all__ = ["DataManager", "DatasetWrapper", "build_data_loader"]


def _collate_skipping_bad_images(batch):
    """Default collate after dropping items the wrapper marked unreadable (``None``)."""
    batch = [item for item in batch if item is not None]
    if not batch:
        return None
    return default_collate(batch)


def build_data_loader(cfg, sampler_type="SequentialSampler", data_source=None, batch_size=64,
                      n_domain=0, n_ins=2, tfm=None, is_train=True, dataset_wrapper=None):
    sampler = build_sampler(sampler_type, cfg=cfg, data_source=data_source, batch_size=batch_size,
                            n_domain=n_domain, n_ins=n_ins)
    if dataset_wrapper is None:
        dataset_wrapper = DatasetWrapper
    num_workers = cfg.DATALOADER.NUM_WORKERS
    loader = torch.utils.data.DataLoader(
        dataset_wrapper(cfg, data_source, transform=tfm, is_train=is_train),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        # A training set smaller than one batch is kept whole instead of yielding no batch.
        drop_last=is_train and len(data_source) >= batch_size,
        pin_memory=(torch.cuda.is_available() and cfg.USE_CUDA),
        collate_fn=_collate_skipping_bad_images,
        # Workers are started anew each epoch and seeded from the global RNG (which a resumed run
        # restores), so an interrupted run resumes exactly; persistent workers would carry their
        # random streams across epochs.
        persistent_workers=False,
    )
    assert len(loader) > 0
    return loader


class DataManager:
    """Dataset plus ``train_loader_x``, ``train_loader_u`` (None), ``val_loader`` and ``test_loader``."""

    def __init__(self, cfg, custom_tfm_train=None, custom_tfm_test=None, dataset_wrapper=None):
        dataset = build_dataset(cfg)

        if custom_tfm_train is None:
            tfm_train = build_transform(cfg, is_train=True)
        else:
            print("* Using custom transform for training")
            tfm_train = custom_tfm_train
        if custom_tfm_test is None:
            tfm_test = build_transform(cfg, is_train=False)
        else:
            print("* Using custom transform for testing")
            tfm_test = custom_tfm_test

        self.train_loader_x = build_data_loader(
            cfg, sampler_type=cfg.DATALOADER.TRAIN_X.SAMPLER, data_source=dataset.train_x,
            batch_size=cfg.DATALOADER.TRAIN_X.BATCH_SIZE, n_domain=cfg.DATALOADER.TRAIN_X.N_DOMAIN,
            n_ins=cfg.DATALOADER.TRAIN_X.N_INS, tfm=tfm_train, is_train=True,
            dataset_wrapper=dataset_wrapper,
        )
        self.train_loader_u = None
        if dataset.train_u:
            u = cfg.DATALOADER.TRAIN_U
            same = u.SAME_AS_X
            x = cfg.DATALOADER.TRAIN_X
            self.train_loader_u = build_data_loader(
                cfg, sampler_type=x.SAMPLER if same else u.SAMPLER, data_source=dataset.train_u,
                batch_size=x.BATCH_SIZE if same else u.BATCH_SIZE, n_domain=x.N_DOMAIN if same else u.N_DOMAIN,
                n_ins=x.N_INS if same else u.N_INS, tfm=tfm_train, is_train=True,
                dataset_wrapper=dataset_wrapper,
            )
        self.val_loader = None
        if dataset.val:
            self.val_loader = build_data_loader(
                cfg, sampler_type=cfg.DATALOADER.TEST.SAMPLER, data_source=dataset.val,
                batch_size=cfg.DATALOADER.TEST.BATCH_SIZE, tfm=tfm_test, is_train=False,
                dataset_wrapper=dataset_wrapper,
            )
        self.test_loader = build_data_loader(
            cfg, sampler_type=cfg.DATALOADER.TEST.SAMPLER, data_source=dataset.test,
            batch_size=cfg.DATALOADER.TEST.BATCH_SIZE, tfm=tfm_test, is_train=False,
            dataset_wrapper=dataset_wrapper,
        )

        self._num_classes = dataset.num_classes
        self._num_source_domains = len(cfg.DATASET.SOURCE_DOMAINS)
        self._lab2cname = dataset.lab2cname
        self.dataset = dataset
        self.tfm_train = tfm_train
        self.tfm_test = tfm_test
        if cfg.VERBOSE:
            self.show_dataset_summary(cfg)

    @property
    def num_classes(self):
        return self._num_classes

    @property
    def num_source_domains(self):
        return self._num_source_domains

    @property
    def lab2cname(self):
        return self._lab2cname

    def show_dataset_summary(self, cfg):
        dataset_name = cfg.DATASET.NAME
        source_domains = cfg.DATASET.SOURCE_DOMAINS
        target_domains = cfg.DATASET.TARGET_DOMAINS
        table = [["Dataset", dataset_name]]
        if source_domains:
            table.append(["Source", source_domains])
        if target_domains:
            table.append(["Target", target_domains])
        table.append(["# classes", f"{self.num_classes:,}"])
        table.append(["# train_x", f"{len(self.dataset.train_x):,}"])
        if self.dataset.train_u:
            table.append(["# train_u", f"{len(self.dataset.train_u):,}"])
        if self.dataset.val:
            table.append(["# val", f"{len(self.dataset.val):,}"])
        table.append(["# test", f"{len(self.dataset.test):,}"])
        print(tabulate(table))


def seed_worker_for_item(index):
    """In a data-loader worker, seed the random streams from (the epoch's base seed, item index).

    The augmentation of an item then depends on neither the number of workers nor which worker
    loads it, and a resumed run (which restores the global RNG the base seed is drawn from)
    augments exactly like an uninterrupted one. Without workers (``NUM_WORKERS 0``) nothing is
    seeded: augmentation draws from the main process's streams, as in upstream Dassl.
    """
    info = torch.utils.data.get_worker_info()
    if info is None:
        return
    base_seed = info.seed - info.id  # the DataLoader seeds worker i with base_seed + i
    digest = hashlib.blake2b(f"{base_seed}:{index}".encode(), digest_size=8).digest()
    seed = int.from_bytes(digest, "little") >> 1
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class DatasetWrapper(TorchDataset):
    """Reads one ``Datum`` into a dict with ``img``, ``label``, ``domain``, ``impath`` and ``index``.

    An unreadable image raises an error naming the file; with ``DATASET.SKIP_BAD_IMAGES`` it is
    dropped from its batch with a warning instead.
    """

    def __init__(self, cfg, data_source, transform=None, is_train=False):
        self.cfg = cfg
        self.data_source = data_source
        self.transform = transform
        self.is_train = is_train
        self.k_tfm = cfg.DATALOADER.K_TRANSFORMS if is_train else 1
        self.return_img0 = cfg.DATALOADER.RETURN_IMG0
        self.skip_bad_images = bool(cfg.DATASET.get("SKIP_BAD_IMAGES", False))
        if self.k_tfm > 1 and transform is None:
            raise ValueError(f"Cannot augment the image {self.k_tfm} times because transform is None")
        interp = INTERPOLATION_MODES[cfg.INPUT.INTERPOLATION]
        import torchvision.transforms as T
        to_tensor = [T.Resize(tuple(cfg.INPUT.SIZE), interpolation=interp), T.ToTensor()]
        if "normalize" in cfg.INPUT.TRANSFORMS:
            to_tensor.append(T.Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD))
        self.to_tensor = T.Compose(to_tensor)

    def __len__(self):
        return len(self.data_source)

    def __getitem__(self, idx):
        if self.is_train:
            seed_worker_for_item(idx)
        item = self.data_source[idx]
        output = {"label": item.label, "domain": item.domain, "impath": item.impath, "index": idx}
        try:
            img0 = read_image(item.impath)
        except Exception as e:
            if self.skip_bad_images:
                warnings.warn(f'Skipping unreadable image "{item.impath}" ({type(e).__name__}: {e})')
                return None
            raise RuntimeError(
                f'Cannot read image "{item.impath}" ({type(e).__name__}: {e}). Replace the file, or '
                "rerun with DATASET.SKIP_BAD_IMAGES True to skip unreadable images with a warning."
            ) from None

        if self.transform is not None:
            if isinstance(self.transform, (list, tuple)):
                for i, tfm in enumerate(self.transform):
                    key = "img" if i == 0 else f"img{i + 1}"
                    output[key] = self._transform_image(tfm, img0)
            else:
                output["img"] = self._transform_image(self.transform, img0)
        else:
            output["img"] = img0
        if self.return_img0:
            output["img0"] = self.to_tensor(img0)
        return output

    def _transform_image(self, tfm, img0):
        views = [tfm(img0) for _ in range(self.k_tfm)]
        return views[0] if len(views) == 1 else views
