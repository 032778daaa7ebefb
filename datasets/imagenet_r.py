"""ImageNet-R: 200 wnid folders (README.txt ignored), relabelled 0..199, 200-way classifier."""
from dassl.data.datasets import DATASET_REGISTRY

from .common import ImageNetVariant


@DATASET_REGISTRY.register()
class ImageNetR(ImageNetVariant):
    dataset_dir = "imagenet-rendition"
    image_dir = "imagenet-r"
    anchor = "imagenetr"
    expected = {"test": 30000}

    def class_folders(self, classnames):
        return self.wnid_folders(classnames)
