"""UCF101: 101 actions, one middle frame per video; CamelCase names split with ``_``."""
import os.path as osp
import re

from dassl.data.datasets import DATASET_REGISTRY, Datum

from .common import SplitDataset, read_lines, split_trainval


def split_camel_case(action):
    """``ApplyEyeMakeup`` -> ``Apply_Eye_Makeup`` (also the image folder name)."""
    return "_".join(re.findall(r"[A-Z][^A-Z]*", action))


@DATASET_REGISTRY.register()
class UCF101(SplitDataset):
    dataset_dir = "ucf101"
    image_dir = "UCF-101-midframes"
    split_file = "split_zhou_UCF101.json"
    fallback_files = (
        "ucfTrainTestlist/classInd.txt", "ucfTrainTestlist/trainlist01.txt", "ucfTrainTestlist/testlist01.txt",
    )
    anchor = "ucf101"
    expected = {"train": 7639, "val": 1898, "test": 3783}

    def read_data(self, cname2lab, list_file):
        """Lines ``Action/v_Action_gXX_cYY.avi [label]``; the frame is ``Renamed_Action/v_..._cYY.jpg``."""
        items = []
        for line in read_lines(osp.join(self.dataset_dir, "ucfTrainTestlist", list_file)):
            action, filename = line.split(" ")[0].split("/")
            renamed = split_camel_case(action)
            impath = osp.join(self.image_dir, renamed, osp.splitext(filename)[0] + ".jpg")
            items.append(Datum(impath=impath, label=cname2lab[action], classname=renamed))
        return items

    def generate_split(self):
        cname2lab = {}
        for line in read_lines(osp.join(self.dataset_dir, "ucfTrainTestlist", "classInd.txt")):
            class_id, action = line.split(" ")
            cname2lab[action] = int(class_id) - 1
        trainval = self.read_data(cname2lab, "trainlist01.txt")
        test = self.read_data(cname2lab, "testlist01.txt")
        train, val = split_trainval(trainval)
        return train, val, test
