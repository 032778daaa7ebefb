"""Food101: 101 dishes, one folder per class under ``images/``."""
from dassl.data.datasets import DATASET_REGISTRY

from .common import SplitDataset, read_and_split_data


@DATASET_REGISTRY.register()
class Food101(SplitDataset):
    dataset_dir = "food-101"
    image_dir = "images"
    split_file = "split_zhou_Food101.json"
    anchor = "food101"
    expected = {"train": 50500, "val": 20200, "test": 30300}

    def generate_split(self):
        return read_and_split_data(self.image_dir)
