"""ImageNet-A: 200 wnid folders (README.txt ignored), relabelled 0..199, 200-way classifier."""
from dassl.data.datasets import DATASET_REGISTRY

from .common import ImageNetVariant


@DATASET_REGISTRY.register()
class ImageNetA(ImageNetVariant):
    dataset_dir = "imagenet-adversarial"
    image_dir = "imagenet-a"
    anchor = "imageneta"
    expected = {"test": 7500}

    def class_folders(self, classnames):
        return self.wnid_folders(classnames)
