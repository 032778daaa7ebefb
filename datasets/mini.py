"""Write miniature copies of the 15 datasets: real layout, real class names, tiny synthetic images.

    python -m datasets.mini --root DIR [--datasets NAME ...] [--per-class N] [--test-per-class M]

Each dataset gets its real folder layout, class names and class count, the split file (JSON or
official lists) and the annotation files its reader needs (also those of the fallback split), and
a few 32x32 JPEGs per class drawn from the synthetic world (``datasets/world.py``): the concept of
the class name, with random nuisance factors, in the dataset's style. Default per class: ``N`` = 2
train, 2 val and ``M`` = 1 test image (ImageNet: train and its val folder = test; test-only
variants: ``M``).
The output is byte-identical on every run. A dataset folder is only replaced if it is empty or was
written by this tool (it then holds ``MINIATURE_DATASET.txt``), never a real dataset.

Class lists live in ``datasets/meta/`` (facts: ImageNet wnids and CLIP's class names, the
ImageNet-A/R wnid subsets, Caltech101 folders, StanfordCars names, ...).
"""
import argparse
import hashlib
import io
import json
import os
import os.path as osp
import shutil
import sys
import time
from collections import namedtuple
from functools import lru_cache

import numpy as np
from PIL import Image

from . import world
from .common import CONFIG_STEMS, resolve_dataset_name

META_DIR = osp.join(osp.dirname(osp.abspath(__file__)), "meta")
MARKER = "MINIATURE_DATASET.txt"
IMAGE_SIZE = world.SIZE

Counts = namedtuple("Counts", ["train", "val", "test"])


def meta_lines(name):
    with open(osp.join(META_DIR, name), "r") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


# ---------------------------------------------------------------------------
# Images: the synthetic world's concepts in each dataset's style (datasets/world.py)
# ---------------------------------------------------------------------------

RENDER_CHUNK = 512  # images rendered at once


def image_rng(dataset, class_idx, img_idx):
    """The random stream of one miniature image (pretraining draws from other streams)."""
    return world.rng_for("mini", dataset, class_idx, img_idx)


def render_jpegs(dataset, classnames, requests):
    """JPEG bytes of images ``(class_idx, img_idx)`` of ``dataset``: the concepts of ``classnames``
    with per-image nuisance factors and the dataset's style (``world.STYLES``)."""
    style = world.STYLES[dataset]
    out = []
    for start in range(0, len(requests), RENDER_CHUNK):
        chunk = requests[start:start + RENDER_CHUNK]
        rngs = [image_rng(dataset, c, i) for c, i in chunk]
        nuisance = [world.sample_nuisance(rng, 1) for rng in rngs]
        nuisance = {k: np.concatenate([n[k] for n in nuisance]) for k in nuisance[0]}
        images = world.render_batch([world.concept_of(classnames[c]) for c, _ in chunk], nuisance)
        out += [world.jpeg_bytes(img) for img in style.apply(images, rngs)]
    return out


def mat_bytes(mdict):
    """A MATLAB v5 file with a fixed header (scipy writes the current time there otherwise)."""
    from scipy.io import savemat

    buf = io.BytesIO()
    savemat(buf, mdict, format="5", do_compression=False, oned_as="row")
    data = bytearray(buf.getvalue())
    data[:116] = b"MATLAB 5.0 MAT-file, synthetic miniature written by datasets.mini".ljust(116, b" ")
    return bytes(data)


class Writer:
    """Writes the files of one dataset folder; images are rendered in batches by ``finish``."""

    def __init__(self, dataset_dir, dataset, classnames):
        self.dataset_dir = dataset_dir
        self.dataset = dataset
        self.classnames = classnames  # the names whose concepts class indices render
        self.pending = []  # (rel, class_idx, img_idx)
        self._made = set()

    @property
    def n_images(self):
        return len(self.pending)

    def path(self, rel):
        path = osp.join(self.dataset_dir, rel)
        parent = osp.dirname(path)
        if parent not in self._made:
            os.makedirs(parent, exist_ok=True)
            self._made.add(parent)
        return path

    def bytes(self, rel, data):
        with open(self.path(rel), "wb") as f:
            f.write(data)

    def image(self, rel, class_idx, img_idx):
        """Queue image ``img_idx`` of class ``class_idx`` at ``rel``; returns ``rel``."""
        self.pending.append((rel, class_idx, img_idx))
        return rel

    def finish(self):
        """Render and write the queued images."""
        jpegs = render_jpegs(self.dataset, self.classnames, [(c, i) for _, c, i in self.pending])
        for (rel, _, _), data in zip(self.pending, jpegs):
            self.bytes(rel, data)

    def text(self, rel, lines):
        self.bytes(rel, "".join(line + "\n" for line in lines).encode())

    def json(self, rel, obj):
        self.bytes(rel, json.dumps(obj, indent=4, separators=(",", ": ")).encode())

    def mat(self, rel, mdict):
        self.bytes(rel, mat_bytes(mdict))

    def split(self, rel, train, val, test):
        self.json(rel, {"train": train, "val": val, "test": test})


def short_hash(*parts, n=16, letters=False):
    digest = hashlib.sha1("/".join(map(str, parts)).encode()).hexdigest()
    if letters:
        return "".join(chr(ord("a") + int(c, 16) % 26) for c in digest[:n])
    return digest[:n]


def per_class_images(w, classes, counts, make_rel):
    """Write ``train+val+test`` images per class; returns ``(train, val, test)`` lists of
    ``(rel, class_idx)``. ``make_rel(class_idx, i)`` names image ``i`` of a class."""
    parts = ([], [], [])
    for class_idx in range(len(classes)):
        i = 0
        for part, n in zip(parts, counts):
            for _ in range(n):
                part.append((w.image(make_rel(class_idx, i), class_idx, i), class_idx))
                i += 1
    return parts


def as_split(parts, classnames, strip=""):
    """``(rel, class_idx)`` lists -> split JSON entries ``[path, label, classname]``."""
    return [[[rel[len(strip):], c, classnames[c]] for rel, c in part] for part in parts]


# ---------------------------------------------------------------------------
# Class names, as the readers report them (the synthetic world gives each one a concept)
# ---------------------------------------------------------------------------

def imagenet_classnames():
    return [line.split(" ", 1) for line in meta_lines("imagenet_classnames.txt")]


CALTECH_IGNORED = ("BACKGROUND_Google", "Faces_easy")  # folders the reader skips
CALTECH_RENAMES = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}


def caltech101_folders():
    return sorted(f for f in meta_lines("caltech101_folders.txt") if f not in CALTECH_IGNORED)


def _imagenet_subset(wnid_file):
    subset = set(meta_lines(wnid_file))
    return [name for wnid, name in imagenet_classnames() if wnid in subset]


def _sun397_name(key):
    return " ".join(key.split("/")[1:][::-1])


def _class_names_of(name):
    from .eurosat import NEW_CNAMES
    from .ucf101 import split_camel_case

    if name in ("ImageNet", "ImageNetV2", "ImageNetSketch"):
        return [n for _, n in imagenet_classnames()]
    if name == "ImageNetA":
        return _imagenet_subset("imagenet_a_wnids.txt")
    if name == "ImageNetR":
        return _imagenet_subset("imagenet_r_wnids.txt")
    if name == "Caltech101":
        return [CALTECH_RENAMES.get(f, f) for f in caltech101_folders()]
    if name == "OxfordPets":
        return [b.lower() for b in meta_lines("oxford_pets_breeds.txt")]
    if name == "StanfordCars":
        return [" ".join([n.split(" ")[-1]] + n.split(" ")[:-1]) for n in meta_lines("stanford_cars_names.txt")]
    if name == "OxfordFlowers":
        return meta_lines("oxford_flowers_names.txt")
    if name == "Food101":
        return sorted(meta_lines("food101_classes.txt"))
    if name == "FGVCAircraft":
        return meta_lines("fgvc_aircraft_variants.txt")
    if name == "SUN397":
        return [_sun397_name(line.lstrip("/")) for line in meta_lines("sun397_classes.txt")]
    if name == "DescribableTextures":
        return meta_lines("dtd_classes.txt")
    if name == "EuroSAT":
        return [NEW_CNAMES[c] for c in meta_lines("eurosat_classes.txt")]
    if name == "UCF101":
        return [split_camel_case(a) for a in meta_lines("ucf101_classes.txt")]
    raise KeyError(name)


@lru_cache(maxsize=None)
def all_class_names():
    """Registry name -> the class names its reader reports (label order; ImageNet-A/R: ImageNet order)."""
    return {name: tuple(_class_names_of(name)) for name in CONFIG_STEMS.values()}


# ---------------------------------------------------------------------------
# One builder per dataset: build(writer, counts)
# ---------------------------------------------------------------------------

def build_imagenet(w, counts):
    pairs = imagenet_classnames()
    w.text("classnames.txt", [f"{wnid} {name}" for wnid, name in pairs])
    k = 0
    for c, (wnid, _) in enumerate(pairs):
        for i in range(counts.train):
            w.image(f"images/train/{wnid}/{wnid}_{i + 1}.JPEG", c, i)
        for i in range(counts.test):
            k += 1
            w.image(f"images/val/{wnid}/ILSVRC2012_val_{k:08d}.JPEG", c, counts.train + i)


def build_caltech101(w, counts):
    kept = caltech101_folders()  # the reader ignores two of the 102 folders; they get images too
    for c, folder in enumerate(sorted(CALTECH_IGNORED)):
        for i in range(sum(counts)):
            w.image(f"101_ObjectCategories/{folder}/image_{i + 1:04d}.jpg", len(kept) + c, i)
    parts = per_class_images(
        w, kept, counts, lambda c, i: f"101_ObjectCategories/{kept[c]}/image_{i + 1:04d}.jpg"
    )
    names = all_class_names()["Caltech101"]
    w.split("split_zhou_Caltech101.json", *as_split(parts, names, strip="101_ObjectCategories/"))


def build_oxford_pets(w, counts):
    breeds = meta_lines("oxford_pets_breeds.txt")  # CLASS-ID order (case-insensitive sort)
    species_ids = {1: 0, 2: 0}
    annotations = []
    for breed in breeds:
        species = 1 if breed[0].isupper() else 2  # cats have capitalised file names
        species_ids[species] += 1
        annotations.append((species, species_ids[species]))
    parts = per_class_images(w, breeds, counts, lambda c, i: f"images/{breeds[c]}_{i + 1}.jpg")

    def lines(part):
        out = []
        for rel, c in part:
            species, breed_id = annotations[c]
            out.append(f"{osp.splitext(osp.basename(rel))[0]} {c + 1} {species} {breed_id}")
        return out

    w.text("annotations/trainval.txt", sorted(lines(parts[0] + parts[1]), key=str.lower))
    w.text("annotations/test.txt", sorted(lines(parts[2]), key=str.lower))
    names = all_class_names()["OxfordPets"]
    w.split("split_zhou_OxfordPets.json", *as_split(parts, names, strip="images/"))


def _cars_annotations(part):
    dtype = [(f, "O") for f in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")]
    annos = np.zeros((1, len(part)), dtype=dtype)
    for j, (rel, c) in enumerate(part):
        box = [np.array([[v]], dtype=np.uint8) for v in (0, 0, IMAGE_SIZE - 1, IMAGE_SIZE - 1)]
        annos[0, j] = tuple(box) + (np.array([[c + 1]], dtype=np.uint8), np.array([osp.basename(rel)]))
    return {"annotations": annos}


def build_stanford_cars(w, counts):
    names = meta_lines("stanford_cars_names.txt")  # cars_meta.mat order, year last
    trainval, test = [], []
    for c in range(len(names)):
        for i in range(counts.train + counts.val):
            rel = w.image(f"cars_train/{len(trainval) + 1:05d}.jpg", c, i)
            trainval.append((rel, c))
        for i in range(counts.test):
            rel = w.image(f"cars_test/{len(test) + 1:05d}.jpg", c, counts.train + counts.val + i)
            test.append((rel, c))
    meta = np.empty((1, len(names)), dtype=object)
    for c, name in enumerate(names):
        meta[0, c] = name
    w.mat("devkit/cars_meta.mat", {"class_names": meta})
    w.mat("devkit/cars_train_annos.mat", _cars_annotations(trainval))
    w.mat("cars_test_annos_withlabels.mat", _cars_annotations(test))
    n_tv = counts.train + counts.val
    train = [x for j, x in enumerate(trainval) if j % n_tv < counts.train]
    val = [x for j, x in enumerate(trainval) if j % n_tv >= counts.train]
    w.split("split_zhou_StanfordCars.json", *as_split((train, val, test), all_class_names()["StanfordCars"]))


def build_oxford_flowers(w, counts):
    names = meta_lines("oxford_flowers_names.txt")  # cat_to_name.json values for keys 1..102
    parts = ([], [], [])
    values = []
    for c in range(len(names)):
        i = 0
        for part, n in zip(parts, counts):
            for _ in range(n):
                values.append(c + 1)
                part.append((w.image(f"jpg/image_{len(values):05d}.jpg", c, i), c))
                i += 1
    w.mat("imagelabels.mat", {"labels": np.array([values], dtype=np.uint8)})
    w.json("cat_to_name.json", {str(c + 1): name for c, name in enumerate(names)})
    w.split("split_zhou_OxfordFlowers.json", *as_split(parts, names, strip="jpg/"))


def build_food101(w, counts):
    classes = sorted(meta_lines("food101_classes.txt"))  # label order = sorted folder names
    parts = per_class_images(w, classes, counts, lambda c, i: f"images/{classes[c]}/{1000000 + 1000 * c + i}.jpg")
    w.split("split_zhou_Food101.json", *as_split(parts, classes, strip="images/"))


def build_fgvc_aircraft(w, counts):
    variants = meta_lines("fgvc_aircraft_variants.txt")
    w.text("variants.txt", variants)
    parts = per_class_images(w, variants, counts, lambda c, i: f"images/{1000000 + 100 * c + i:07d}.jpg")
    for part, key in zip(parts, ("train", "val", "test")):
        lines = [f"{osp.splitext(osp.basename(rel))[0]} {variants[c]}" for rel, c in part]
        w.text(f"images_variant_{key}.txt", lines)


def build_sun397(w, counts):
    keys = [line.lstrip("/") for line in meta_lines("sun397_classes.txt")]
    w.text("ClassName.txt", ["/" + key for key in keys])
    parts = per_class_images(
        w, keys, counts, lambda c, i: f"SUN397/{keys[c]}/sun_{short_hash(keys[c], i, letters=True)}.jpg"
    )
    listed = lambda part: ["/" + rel[len("SUN397/"):] for rel, _ in part]  # noqa: E731
    w.text("Training_01.txt", listed(parts[0] + parts[1]))
    w.text("Testing_01.txt", listed(parts[2]))
    names = [_sun397_name(key) for key in keys]
    w.split("split_zhou_SUN397.json", *as_split(parts, names, strip="SUN397/"))


def build_dtd(w, counts):
    classes = meta_lines("dtd_classes.txt")
    parts = per_class_images(w, classes, counts, lambda c, i: f"images/{classes[c]}/{classes[c]}_{i + 1:04d}.jpg")
    w.split("split_zhou_DescribableTextures.json", *as_split(parts, classes, strip="images/"))


def build_eurosat(w, counts):
    classes = meta_lines("eurosat_classes.txt")
    parts = per_class_images(w, classes, counts, lambda c, i: f"2750/{classes[c]}/{classes[c]}_{i + 1}.jpg")
    names = all_class_names()["EuroSAT"]
    w.split("split_zhou_EuroSAT.json", *as_split(parts, names, strip="2750/"))


def build_ucf101(w, counts):
    from .ucf101 import split_camel_case

    actions = meta_lines("ucf101_classes.txt")  # classInd.txt order
    w.text("ucfTrainTestlist/classInd.txt", [f"{c + 1} {a}" for c, a in enumerate(actions)])
    parts = ([], [], [])
    trainlist, testlist = [], []
    for c, action in enumerate(actions):
        folder = split_camel_case(action)
        for i in range(sum(counts)):
            is_test = i >= counts.train + counts.val
            group = 1 + i - counts.train - counts.val if is_test else 8 + i  # test groups 1-7, train 8-25
            video = f"v_{action}_g{group:02d}_c01"
            rel = w.image(f"UCF-101-midframes/{folder}/{video}.jpg", c, i)
            part = 2 if is_test else (0 if i < counts.train else 1)
            parts[part].append((rel, c))
            if is_test:
                testlist.append(f"{action}/{video}.avi")
            else:
                trainlist.append(f"{action}/{video}.avi {c + 1}")
    w.text("ucfTrainTestlist/trainlist01.txt", trainlist)
    w.text("ucfTrainTestlist/testlist01.txt", testlist)
    names = all_class_names()["UCF101"]
    w.split("split_zhou_UCF101.json", *as_split(parts, names, strip="UCF-101-midframes/"))


def build_imagenetv2(w, counts):
    pairs = imagenet_classnames()
    w.text("classnames.txt", [f"{wnid} {name}" for wnid, name in pairs])
    for c in range(len(pairs)):
        for i in range(counts.test):
            w.image(f"imagenetv2-matched-frequency-format-val/{c}/{short_hash('v2', c, i, n=40)}.jpeg", c, i)


def build_imagenet_sketch(w, counts):
    pairs = imagenet_classnames()
    w.text("classnames.txt", [f"{wnid} {name}" for wnid, name in pairs])
    for c, (wnid, _) in enumerate(pairs):
        for i in range(counts.test):
            w.image(f"images/{wnid}/sketch_{i + 1}.JPEG", c, i)


def _build_200(w, counts, image_dir, wnid_file, prefix):
    pairs = imagenet_classnames()
    w.text("classnames.txt", [f"{wnid} {name}" for wnid, name in pairs])
    subset = set(meta_lines(wnid_file))
    w.text(f"{image_dir}/README.txt", [f"Synthetic miniature of {image_dir}: 200 ImageNet classes."])
    for c, (wnid, _) in enumerate(pairs):
        if wnid in subset:
            for i in range(counts.test):
                w.image(f"{image_dir}/{wnid}/{prefix}_{i + 1}.jpg", c, i)


def build_imagenet_a(w, counts):
    _build_200(w, counts, "imagenet-a", "imagenet_a_wnids.txt", "adversarial")


def build_imagenet_r(w, counts):
    _build_200(w, counts, "imagenet-r", "imagenet_r_wnids.txt", "art")


BUILDERS = {
    "ImageNet": build_imagenet,
    "Caltech101": build_caltech101,
    "OxfordPets": build_oxford_pets,
    "StanfordCars": build_stanford_cars,
    "OxfordFlowers": build_oxford_flowers,
    "Food101": build_food101,
    "FGVCAircraft": build_fgvc_aircraft,
    "SUN397": build_sun397,
    "DescribableTextures": build_dtd,
    "EuroSAT": build_eurosat,
    "UCF101": build_ucf101,
    "ImageNetV2": build_imagenetv2,
    "ImageNetSketch": build_imagenet_sketch,
    "ImageNetA": build_imagenet_a,
    "ImageNetR": build_imagenet_r,
}


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------

def prepare_folder(dataset_dir):
    """Empty ``dataset_dir`` if it is a miniature written earlier; refuse to touch anything else."""
    if osp.isdir(dataset_dir) and os.listdir(dataset_dir):
        if not osp.isfile(osp.join(dataset_dir, MARKER)):
            raise FileExistsError(
                f"refusing to overwrite {dataset_dir}: it exists, is not empty and has no {MARKER} "
                f"(it may be a real dataset)"
            )
        shutil.rmtree(dataset_dir)
    os.makedirs(dataset_dir, exist_ok=True)


def render_names(name):
    """The class names whose concepts a builder's class indices draw (ImageNet-A/R index all of
    ImageNet's classes; Caltech101's two ignored folders come after its 100 classes)."""
    if name in ("ImageNetA", "ImageNetR"):
        return all_class_names()["ImageNet"]
    if name == "Caltech101":
        return all_class_names()[name] + CALTECH_IGNORED
    return all_class_names()[name]


def build(root, names=None, per_class=2, test_per_class=1, verbose=True):
    """Write miniature copies of ``names`` (all 15 when None) under ``root``; returns image counts."""
    from dassl.data.datasets import DATASET_REGISTRY

    if per_class < 1:
        raise ValueError("--per-class must be >= 1")
    if test_per_class < 1:
        raise ValueError("--test-per-class must be >= 1")
    names = list(CONFIG_STEMS.values()) if not names else [resolve_dataset_name(n) for n in names]
    counts = Counts(train=per_class, val=2, test=test_per_class)
    root = osp.abspath(osp.expanduser(root))
    written = {}
    for name in dict.fromkeys(names):
        start = time.time()
        reader = DATASET_REGISTRY.get(name)
        dataset_dir = osp.join(root, reader.dataset_dir)
        prepare_folder(dataset_dir)
        w = Writer(dataset_dir, name, render_names(name))
        BUILDERS[name](w, counts)
        w.finish()
        w.text(MARKER, [
            "Synthetic miniature copy written by `python -m datasets.mini` (see DATASETS.md).",
            f"Per class: {counts.train} train, {counts.val} val, {counts.test} test images "
            f"({IMAGE_SIZE}x{IMAGE_SIZE} JPEG; style: {world.STYLES[name].description}).",
            "Not real data: use it for tests and smoke runs only.",
        ])
        written[name] = w.n_images
        if verbose:
            print(f"[mini] {name:<20s} {w.n_images:>5d} images -> {dataset_dir} ({time.time() - start:.2f} s)")
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m datasets.mini", description="Write miniature copies of the 15 datasets."
    )
    parser.add_argument("--root", required=True, help="output root (the DATASET.ROOT of later runs)")
    parser.add_argument(
        "--datasets", nargs="+", default=None, metavar="NAME",
        help="registry names or config stems (default: all 15)",
    )
    parser.add_argument("--per-class", type=int, default=2, help="training images per class (default 2)")
    parser.add_argument("--test-per-class", type=int, default=1, help="test images per class (default 1)")
    args = parser.parse_args(argv)
    start = time.time()
    try:
        written = build(args.root, args.datasets, per_class=args.per_class, test_per_class=args.test_per_class)
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"[mini] wrote {sum(written.values())} images for {len(written)} datasets in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
