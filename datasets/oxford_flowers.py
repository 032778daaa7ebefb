"""OxfordFlowers (Flowers102): 102 flower species, images ``jpg/image_00001.jpg`` ..."""
import os.path as osp
from collections import OrderedDict

from dassl.utils import read_json
from dassl.data.datasets import DATASET_REGISTRY

from .common import SplitDataset, load_mat, split_per_class


@DATASET_REGISTRY.register()
class OxfordFlowers(SplitDataset):
    dataset_dir = "oxford_flowers"
    image_dir = "jpg"
    split_file = "split_zhou_OxfordFlowers.json"
    fallback_files = ("imagelabels.mat", "cat_to_name.json")
    anchor = "oxfordflowers"
    expected = {"train": 4093, "val": 1633, "test": 2463}

    def generate_split(self):
        """``imagelabels.mat``: image ``i`` (1-based) has label value ``v``; label = v - 1."""
        values = load_mat(osp.join(self.dataset_dir, "imagelabels.mat"))["labels"][0]
        lab2cname = read_json(osp.join(self.dataset_dir, "cat_to_name.json"))
        by_value = OrderedDict()
        for i, value in enumerate(values):
            impath = osp.join(self.image_dir, f"image_{i + 1:05d}.jpg")
            by_value.setdefault(int(value), []).append(impath)
        groups = [(value - 1, lab2cname[str(value)], impaths) for value, impaths in by_value.items()]
        return split_per_class(groups)
