"""ImageNet (ILSVRC-2012): 1000 wnid folders; the official val set is the test set."""
import os.path as osp

from dassl.data.datasets import DATASET_REGISTRY, Datum
from dassl.utils import listdir_nohidden

from .common import (
    CoOpDataset, count_images_in_subfolders, encode_items, mapped_entries, open_shared_cache, own_cache_path,
    read_cache, read_imagenet_classnames, require_dir, require_file, save_plain_pickle, shared_cache_error,
    sorted_subfolders, subsample_classes, to_posix_relpath,
)

PREPROCESSED_FORMAT = "portable-imagenet/1"


def read_wnid_folders(split_dir, classnames, dataset, classnames_path):
    """Datum list of a folder of wnid sub-folders; label = index of the sorted wnid."""
    items = []
    for label, wnid in enumerate(sorted_subfolders(split_dir)):
        folder = osp.join(split_dir, wnid)
        if wnid not in classnames:
            raise KeyError(f"{dataset}: folder {folder} has no entry in {classnames_path}")
        for imname in sorted(listdir_nohidden(folder)):
            items.append(Datum(impath=osp.join(folder, imname), label=label, classname=classnames[wnid]))
    return items


@DATASET_REGISTRY.register()
class ImageNet(CoOpDataset):
    dataset_dir = "imagenet"
    image_dir = "images"
    anchor = "imagenet"
    expected = {"train": 1281167, "test": 50000}

    @classmethod
    def required_files(cls):
        return ["classnames.txt"]

    @classmethod
    def listed_images(cls, dataset_dir):
        """``{"train": n, "test": n}`` images found in the wnid folders (for ``datasets.check``)."""
        image_dir = osp.join(dataset_dir, cls.image_dir)
        return {key: count_images_in_subfolders(osp.join(image_dir, split))
                for key, split in (("train", "train"), ("test", "val"))}

    def __init__(self, cfg):
        self.resolve_dirs(cfg)
        classnames_path = osp.join(self.dataset_dir, "classnames.txt")
        require_file(classnames_path, "ImageNet", self.anchor, what="class-name file")
        for split in ("train", "val"):
            require_dir(osp.join(self.image_dir, split), "ImageNet", self.anchor, what="image folder")
        self.preprocessed = osp.join(self.dataset_dir, "preprocessed.pkl")  # Dassl/CoOp's cache
        classnames = read_imagenet_classnames(classnames_path)

        train, test = self.load_preprocessed(classnames)
        train, _ = self.fewshot(cfg, train)
        train, test = subsample_classes(train, test, subsample=self.subsample_mode(cfg))
        super().__init__(train_x=train, val=test, test=test)

    def load_preprocessed(self, classnames):
        """Train/test lists, checked against the folders and ``classnames.txt``.

        From this project's ``preprocessed.portable.pkl``, else from Dassl/CoOp's ``preprocessed.pkl``
        (read without running code, its order kept, never written), else by listing the folders
        (then cached under this project's name).
        """
        shared, own = self.preprocessed, own_cache_path(self.preprocessed)
        records, problem = open_shared_cache(shared, own, PREPROCESSED_FORMAT)
        lists = self.checked_lists(own, classnames, self.own_entries) if osp.exists(own) else None
        if lists is None and records is not None:
            def mapped(_path):
                return {key: mapped_entries(records[key], self.dataset_dir) for key in ("train", "test")}

            lists = self.checked_lists(shared, classnames, mapped, shared=True)
        elif lists is None and problem is not None:
            raise shared_cache_error(shared, problem)
        if lists is not None:
            return lists
        classnames_path = osp.join(self.dataset_dir, "classnames.txt")
        train = read_wnid_folders(osp.join(self.image_dir, "train"), classnames, "ImageNet", classnames_path)
        test = read_wnid_folders(osp.join(self.image_dir, "val"), classnames, "ImageNet", classnames_path)
        payload = {
            "format": PREPROCESSED_FORMAT,
            "train": encode_items(train, self.dataset_dir),
            "test": encode_items(test, self.dataset_dir),
        }
        print(f"Saving preprocessed data to {own}")
        save_plain_pickle(payload, own)
        return train, test

    @staticmethod
    def own_entries(path):
        kind, payload = read_cache(path, PREPROCESSED_FORMAT)
        if kind != "own":
            raise ValueError("not this project's format")
        return payload

    def checked_lists(self, path, classnames, read_entries, shared=False):
        """``(train, test)`` from the ``{"train": entries, "test": entries}`` of ``read_entries(path)``,
        or None (with a warning) when they do not match the folders."""
        try:
            entries = read_entries(path)
            train = self.decode(entries["train"], "train", classnames)
            test = self.decode(entries["test"], "val", classnames)
        except Exception as e:  # stale or foreign cache: list the folders instead
            untouched = " (the file is left untouched)" if shared else ""
            print(f"WARNING: {path} does not match the data ({e}); listing the image folders instead{untouched}")
            return None
        print(f"Loading preprocessed data from {path}")
        return train, test

    def decode(self, entries, split, classnames):
        """Cached ``[rel, label, classname]`` entries -> Datum list, checking labels and names."""
        split_dir = osp.join(self.image_dir, split)
        wnids = sorted_subfolders(split_dir)
        label_of = {wnid: label for label, wnid in enumerate(wnids)}
        prefix = to_posix_relpath(split_dir, self.dataset_dir) + "/"
        items = []
        for rel, label, classname in entries:
            if not rel.startswith(prefix):
                raise ValueError(f"{rel} is not under {prefix}")
            wnid = rel.split("/")[-2]
            if label_of.get(wnid) != label or classnames.get(wnid) != classname:
                raise ValueError(f"{rel}: label/class name differ from the folders and classnames.txt")
            items.append(Datum(impath=osp.join(self.dataset_dir, rel), label=label, classname=classname))
        if {item.label for item in items} != set(label_of.values()):
            raise ValueError(f"the class folders under {split_dir} changed")
        return items
