"""ImageNetV2 (matched frequency): folder ``str(i)`` holds class ``i`` of classnames.txt."""
from dassl.data.datasets import DATASET_REGISTRY

from .common import ImageNetVariant


@DATASET_REGISTRY.register()
class ImageNetV2(ImageNetVariant):
    dataset_dir = "imagenetv2"
    image_dir = "imagenetv2-matched-frequency-format-val"
    anchor = "imagenetv2"
    expected = {"test": 10000}

    def class_folders(self, classnames):
        return [(str(label), name) for label, name in enumerate(classnames.values())]
