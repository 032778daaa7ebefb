"""FGVCAircraft: 100 aircraft variants with the official train/val/test lists (no JSON)."""
import os.path as osp

from dassl.data.datasets import DATASET_REGISTRY, Datum

from .common import CoOpDataset, read_lines, require_file, subsample_classes

LIST_FILES = {
    "train": "images_variant_train.txt",
    "val": "images_variant_val.txt",
    "test": "images_variant_test.txt",
}


@DATASET_REGISTRY.register()
class FGVCAircraft(CoOpDataset):
    dataset_dir = "fgvc_aircraft"
    image_dir = "images"
    anchor = "fgvcaircraft"
    expected = {"train": 3334, "val": 3333, "test": 3333}

    @classmethod
    def required_files(cls):
        return ["variants.txt"] + list(LIST_FILES.values())

    @classmethod
    def listed_images(cls, dataset_dir):
        """``{split: [absolute image paths]}`` listed in the official lists (for ``datasets.check``)."""
        image_dir = osp.join(dataset_dir, cls.image_dir)
        return {
            key: [osp.join(image_dir, line.split(" ")[0] + ".jpg") for line in read_lines(osp.join(dataset_dir, name))]
            for key, name in LIST_FILES.items()
        }

    def __init__(self, cfg):
        self.resolve_dirs(cfg)
        for name in self.required_files():
            require_file(osp.join(self.dataset_dir, name), self.display_name, self.anchor, what="split list")
        self.require_image_dir()
        classnames = read_lines(osp.join(self.dataset_dir, "variants.txt"))
        cname2lab = {name: label for label, name in enumerate(classnames)}
        train, val, test = (self.read_data(cname2lab, LIST_FILES[key]) for key in ("train", "val", "test"))
        train, val = self.fewshot(cfg, train, val)
        train, val, test = subsample_classes(train, val, test, subsample=self.subsample_mode(cfg))
        super().__init__(train_x=train, val=val, test=test)

    def read_data(self, cname2lab, list_file):
        """Lines ``<image id> <variant name with spaces>``; images are ``images/<id>.jpg``."""
        items = []
        for line in read_lines(osp.join(self.dataset_dir, list_file)):
            image_id, _, classname = line.partition(" ")
            impath = osp.join(self.image_dir, image_id + ".jpg")
            items.append(Datum(impath=impath, label=cname2lab[classname], classname=classname))
        return items
