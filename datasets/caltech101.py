"""Caltech101: 100 object categories (``BACKGROUND_Google`` and ``Faces_easy`` are ignored)."""
from dassl.data.datasets import DATASET_REGISTRY

from .common import SplitDataset, read_and_split_data

IGNORED = ("BACKGROUND_Google", "Faces_easy")
NEW_CNAMES = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}


@DATASET_REGISTRY.register()
class Caltech101(SplitDataset):
    dataset_dir = "caltech-101"
    image_dir = "101_ObjectCategories"
    split_file = "split_zhou_Caltech101.json"
    anchor = "caltech101"
    expected = {"train": 4128, "val": 1649, "test": 2465}

    def generate_split(self):
        return read_and_split_data(self.image_dir, ignored=IGNORED, new_cnames=NEW_CNAMES)
