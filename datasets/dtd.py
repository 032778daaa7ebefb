"""DescribableTextures (DTD): 47 texture classes, one folder per class under ``images/``."""
from dassl.data.datasets import DATASET_REGISTRY

from .common import SplitDataset, read_and_split_data


@DATASET_REGISTRY.register()
class DescribableTextures(SplitDataset):
    dataset_dir = "dtd"
    image_dir = "images"
    split_file = "split_zhou_DescribableTextures.json"
    anchor = "describabletextures"
    expected = {"train": 2820, "val": 1128, "test": 1692}

    def generate_split(self):
        return read_and_split_data(self.image_dir)
