"""ImageNet-Sketch: 1000 sorted wnid folders under ``images/``."""
from dassl.data.datasets import DATASET_REGISTRY

from .common import ImageNetVariant


@DATASET_REGISTRY.register()
class ImageNetSketch(ImageNetVariant):
    dataset_dir = "imagenet-sketch"
    image_dir = "images"
    anchor = "imagenetsketch"
    expected = {"test": 50889}

    def class_folders(self, classnames):
        return self.wnid_folders(classnames)
