"""ImageNet (ILSVRC-2012): 1000 wnid folders; the official val set is the test set."""
import os.path as osp

from dassl.data.datasets import DATASET_REGISTRY, Datum
from dassl.utils import listdir_nohidden

from .common import (
    CoOpDataset, count_images_in_subfolders, encode_items, load_plain_pickle, read_imagenet_classnames,
    require_dir, require_file, save_plain_pickle, sorted_subfolders, subsample_classes,
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
        self.preprocessed = osp.join(self.dataset_dir, "preprocessed.pkl")
        classnames = read_imagenet_classnames(classnames_path)

        train, test = self.load_preprocessed(classnames)
        train, _ = self.fewshot(cfg, train)
        train, test = subsample_classes(train, test, subsample=self.subsample_mode(cfg))
        super().__init__(train_x=train, val=test, test=test)

    def load_preprocessed(self, classnames):
        """Train/test lists from ``preprocessed.pkl`` (checked against the folders), else from the folders."""
        if osp.exists(self.preprocessed):
            try:
                payload = load_plain_pickle(self.preprocessed)
                if payload.get("format") != PREPROCESSED_FORMAT:
                    raise ValueError("unknown or old cache format")
                train = self.decode(payload["train"], "train", classnames)
                test = self.decode(payload["test"], "val", classnames)
                print(f"Loading preprocessed data from {self.preprocessed}")
                return train, test
            except Exception as e:  # stale or foreign cache: rebuild from the folders
                print(f"WARNING: {self.preprocessed} does not match the data ({e}); rebuilding it")
        classnames_path = osp.join(self.dataset_dir, "classnames.txt")
        train = read_wnid_folders(osp.join(self.image_dir, "train"), classnames, "ImageNet", classnames_path)
        test = read_wnid_folders(osp.join(self.image_dir, "val"), classnames, "ImageNet", classnames_path)
        payload = {
            "format": PREPROCESSED_FORMAT,
            "train": encode_items(train, self.dataset_dir),
            "test": encode_items(test, self.dataset_dir),
        }
        print(f"Saving preprocessed data to {self.preprocessed}")
        save_plain_pickle(payload, self.preprocessed)
        return train, test

    def decode(self, entries, split, classnames):
        """Cached ``[rel, label, classname]`` entries -> Datum list, checking labels and names."""
        split_dir = osp.join(self.image_dir, split)
        wnids = sorted_subfolders(split_dir)
        label_of = {wnid: label for label, wnid in enumerate(wnids)}
        items = []
        for rel, label, classname in entries:
            wnid = rel.split("/")[-2]
            if label_of.get(wnid) != label or classnames.get(wnid) != classname:
                raise ValueError(f"{rel}: label/class name differ from the folders and classnames.txt")
            items.append(Datum(impath=osp.join(self.dataset_dir, rel), label=label, classname=classname))
        if {item.label for item in items} != set(label_of.values()):
            raise ValueError(f"the class folders under {split_dir} changed")
        return items
