"""SUN397: 397 scene categories; names reverse the path components (``outdoor apartment_building``)."""
import os.path as osp

from dassl.data.datasets import DATASET_REGISTRY, Datum

from .common import SplitDataset, read_lines, split_trainval


def scene_name(key):
    """``a/apartment_building/outdoor`` -> ``outdoor apartment_building`` (first letter dropped)."""
    return " ".join(key.split("/")[1:][::-1])


@DATASET_REGISTRY.register()
class SUN397(SplitDataset):
    dataset_dir = "sun397"
    image_dir = "SUN397"
    split_file = "split_zhou_SUN397.json"
    fallback_files = ("ClassName.txt", "Training_01.txt", "Testing_01.txt")
    anchor = "sun397"
    expected = {"train": 15880, "val": 3970, "test": 19850}

    def read_data(self, cname2lab, list_file):
        """Lines ``/a/abbey/sun_xxx.jpg``; the class key is the folder part."""
        items = []
        for line in read_lines(osp.join(self.dataset_dir, list_file)):
            imname = line.lstrip("/")
            key = osp.dirname(imname)
            impath = osp.join(self.image_dir, imname)
            items.append(Datum(impath=impath, label=cname2lab[key], classname=scene_name(key)))
        return items

    def generate_split(self):
        keys = [line.lstrip("/") for line in read_lines(osp.join(self.dataset_dir, "ClassName.txt"))]
        cname2lab = {key: label for label, key in enumerate(keys)}
        trainval = self.read_data(cname2lab, "Training_01.txt")
        test = self.read_data(cname2lab, "Testing_01.txt")
        train, val = split_trainval(trainval)
        return train, val, test
