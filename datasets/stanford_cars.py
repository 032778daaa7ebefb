"""StanfordCars: 196 car models; split paths are relative to the dataset folder."""
import os.path as osp

from dassl.data.datasets import DATASET_REGISTRY, Datum

from .common import SplitDataset, load_mat, split_trainval


def year_first(name):
    """``AM General Hummer SUV 2000`` -> ``2000 AM General Hummer SUV``."""
    words = name.split(" ")
    return " ".join([words[-1]] + words[:-1])


@DATASET_REGISTRY.register()
class StanfordCars(SplitDataset):
    dataset_dir = "stanford_cars"
    image_dir = ""  # images live in cars_train/ and cars_test/ directly under dataset_dir
    split_file = "split_zhou_StanfordCars.json"
    paths_relative_to_dataset_dir = True
    fallback_files = (
        "cars_train", "cars_test", "devkit/cars_train_annos.mat", "devkit/cars_meta.mat",
        "cars_test_annos_withlabels.mat",
    )
    anchor = "stanfordcars"
    expected = {"train": 6509, "val": 1635, "test": 8041}

    def read_annotations(self, folder, anno_file, meta_file):
        """One ``Datum`` per entry of a ``*_annos*.mat`` file (``fname``, 1-based ``class``)."""
        annos = load_mat(anno_file)["annotations"][0]
        names = load_mat(meta_file)["class_names"][0]
        items = []
        for anno in annos:
            fname = str(anno["fname"][0])
            label = int(anno["class"][0, 0]) - 1
            impath = osp.join(self.dataset_dir, folder, fname)
            items.append(Datum(impath=impath, label=label, classname=year_first(str(names[label][0]))))
        return items

    def generate_split(self):
        meta = osp.join(self.dataset_dir, "devkit", "cars_meta.mat")
        trainval = self.read_annotations(
            "cars_train", osp.join(self.dataset_dir, "devkit", "cars_train_annos.mat"), meta
        )
        test = self.read_annotations(
            "cars_test", osp.join(self.dataset_dir, "cars_test_annos_withlabels.mat"), meta
        )
        train, val = split_trainval(trainval)
        return train, val, test
