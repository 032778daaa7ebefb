"""Cheap checks of the files a dataset reader will read, made before a run builds or writes anything.

``check_dataset_files(cfg)`` raises ``harness.preflight.ConfigError`` (one line naming the path and
the fix) when the data root, the dataset folder, its split file (parsed, shape checked) or its
class folders are missing or damaged. Images are not opened; the reader checks that each listed
image exists, and ``python -m datasets.check`` checks a whole data root.
"""
import os
import os.path as osp

from dassl.data.datasets import DATASET_REGISTRY
from harness.preflight import ConfigError

from .common import DOCS, CoOpDataset, ImageNetVariant, SplitDataset, data_root, load_split_json
from .imagenet import ImageNet

__all__ = ["check_dataset_files"]


def _first_empty_class_folder(folder):
    """The first (sorted) non-hidden sub-folder of ``folder`` that holds no non-hidden file, or None."""
    with os.scandir(folder) as entries:
        classes = sorted(e.path for e in entries if e.is_dir() and not e.name.startswith("."))
    for path in classes:
        with os.scandir(path) as entries:
            if not any(not e.name.startswith(".") for e in entries):
                return path
    return None


class _Checker:
    def __init__(self, cls, root):
        self.cls = cls
        self.name = cls.__name__
        self.root = root
        self.dataset_dir = osp.join(root, cls.dataset_dir)
        self.image_dir = osp.join(self.dataset_dir, cls.image_dir)
        self.hint = f"see {DOCS}#{cls.anchor} (python -m datasets.check --root {root} lists what is missing)"

    def fail(self, problem):
        raise ConfigError(f"{self.name}: {problem}: {self.hint}")

    def need_dir(self, path, what):
        if not osp.isdir(path):
            self.fail(f"{what} not found: {path}")

    def need_file(self, path, what):
        if not osp.isfile(path):
            self.fail(f"{what} not found: {path}")

    def need_full_class_folders(self, folder):
        empty = _first_empty_class_folder(folder)
        if empty:
            self.fail(f"class folder {empty} is empty (an incomplete download or extraction?); copy its "
                      "images again")

    def check(self):
        cls = self.cls
        self.need_dir(self.dataset_dir, "dataset folder")
        if issubclass(cls, SplitDataset):
            self.check_split_dataset()
        elif issubclass(cls, ImageNet):
            self.need_file(osp.join(self.dataset_dir, "classnames.txt"), "class-name file")
            for split in ("train", "val"):
                self.need_dir(osp.join(self.image_dir, split), "image folder")
                self.need_full_class_folders(osp.join(self.image_dir, split))
        elif issubclass(cls, ImageNetVariant):
            self.need_file(osp.join(self.dataset_dir, "classnames.txt"), "class-name file (a copy of ImageNet's)")
            self.need_dir(self.image_dir, "image folder")
            self.need_full_class_folders(self.image_dir)
        else:
            for rel in cls.required_files():
                self.need_file(osp.join(self.dataset_dir, rel), "file")
            self.need_dir(self.image_dir, "image folder")

    def check_split_dataset(self):
        cls = self.cls
        split_path = osp.join(self.dataset_dir, cls.split_file)
        if osp.isfile(split_path):
            try:
                load_split_json(split_path, cls.split_fix())
            except ValueError as e:
                raise ConfigError(f"{self.name}: {e}") from None
            except OSError as e:
                self.fail(f"cannot read the split file {split_path} ({e.strerror or e})")
            self.need_dir(self.image_dir, "image folder")
            return
        # No split file: the reader generates a random split from the images (and annotation files).
        needed = [self.image_dir] + [osp.join(self.dataset_dir, rel) for rel in cls.fallback_files]
        missing = [path for path in needed if not osp.exists(path)]
        if missing or not cls.supports_random_split():
            self.fail(f"split file not found: {split_path}" + (f" (and {', '.join(missing)}, which a random "
                                                              "split would need)" if missing else ""))
        if not cls.fallback_files:  # one folder per class
            self.need_full_class_folders(self.image_dir)


def check_dataset_files(cfg):
    """Check ``DATASET.ROOT`` and the files the reader of ``DATASET.NAME`` needs (see the module docstring)."""
    if not cfg.DATASET.ROOT:
        raise ConfigError(f"no data root: pass --root DIR, the folder that holds the datasets (see {DOCS})")
    root = data_root(cfg)
    if not osp.isdir(root):
        raise ConfigError(f"data root not found: {root} (--root): pass the folder that holds the datasets "
                          f"(see {DOCS}; python -m datasets.mini --root DIR writes miniature ones)")
    cls = DATASET_REGISTRY.get(cfg.DATASET.NAME)
    if isinstance(cls, type) and issubclass(cls, (CoOpDataset, ImageNetVariant)):
        _Checker(cls, root).check()
