"""OxfordPets: 37 cat and dog breeds; class names come from the image file names."""
import os.path as osp

from dassl.data.datasets import DATASET_REGISTRY, Datum

from .common import SplitDataset, read_lines, split_trainval


def breed_from_filename(imname):
    """``great_pyrenees_12`` -> ``great_pyrenees``; ``Abyssinian_1`` -> ``abyssinian``."""
    return "_".join(imname.split("_")[:-1]).lower()


@DATASET_REGISTRY.register()
class OxfordPets(SplitDataset):
    dataset_dir = "oxford_pets"
    image_dir = "images"
    split_file = "split_zhou_OxfordPets.json"
    fallback_files = ("annotations/trainval.txt", "annotations/test.txt")
    anchor = "oxfordpets"
    expected = {"train": 2944, "val": 736, "test": 3669}

    def read_annotations(self, name):
        """Lines ``<image name> <CLASS-ID> <SPECIES> <BREED ID>``; label = CLASS-ID - 1."""
        items = []
        for line in read_lines(osp.join(self.dataset_dir, "annotations", name)):
            if line.startswith("#"):
                continue
            imname, class_id = line.split()[:2]
            impath = osp.join(self.image_dir, imname + ".jpg")
            items.append(Datum(impath=impath, label=int(class_id) - 1, classname=breed_from_filename(imname)))
        return items

    def generate_split(self):
        trainval = self.read_annotations("trainval.txt")
        test = self.read_annotations("test.txt")
        train, val = split_trainval(trainval)
        return train, val, test
