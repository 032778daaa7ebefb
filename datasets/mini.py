"""Write miniature copies of the 15 datasets: real layout, real class names, tiny synthetic images.

    python -m datasets.mini --root DIR [--datasets NAME ...] [--per-class N]

Each dataset gets its real folder layout, class names and class count, the split file (JSON or
official lists) and the annotation files its reader needs (also those of the fallback split), and
a few 16x16 JPEGs per class whose colour and stripe pattern depend on the class. Default per
class: ``N`` = 2 train, 2 val and 1 test image (ImageNet: 2 train, 1 val; test-only variants: 1).
The output is byte-identical on every run. A dataset folder is only replaced if it is empty or was
written by this tool (it then holds ``MINIATURE_DATASET.txt``), never a real dataset.

Class lists live in ``datasets/meta/`` (facts: ImageNet wnids and CLIP's class names, the
ImageNet-A/R wnid subsets, Caltech101 folders, StanfordCars names, ...).
"""
import argparse
import colorsys
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

from .common import CONFIG_STEMS, resolve_dataset_name

META_DIR = osp.join(osp.dirname(osp.abspath(__file__)), "meta")
MARKER = "MINIATURE_DATASET.txt"
IMAGE_SIZE = 16

Counts = namedtuple("Counts", ["train", "val", "test"])


def meta_lines(name):
    with open(osp.join(META_DIR, name), "r") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


# ---------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _pattern(kind, period):
    """A boolean 16x16 stripe mask: horizontal, vertical, diagonal or checkerboard."""
    y, x = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE]
    value = (y, x, x + y, x // period + y // period)[kind]
    if kind < 3:
        value = value // period
    return (value % 2).astype(bool)


@lru_cache(maxsize=8192)  # the ImageNet variants reuse ImageNet's class indices
def render_jpeg(class_idx, img_idx):
    """JPEG bytes of a class-coloured stripe image; images of one class differ by phase and brightness."""
    hue = (class_idx * 0.6180339887) % 1.0
    fg = np.array(colorsys.hsv_to_rgb(hue, 0.85, 0.95)) * 255
    bg = np.array(colorsys.hsv_to_rgb((hue + 0.5) % 1.0, 0.6, 0.35)) * 255
    period = 2 + (class_idx // 4) % 3
    mask = np.roll(_pattern(class_idx % 4, period), img_idx % period, axis=1)
    jitter = (img_idx * 7) % 21 - 10
    pixels = np.where(mask[..., None], fg, bg) + jitter
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


def mat_bytes(mdict):
    """A MATLAB v5 file with a fixed header (scipy writes the current time there otherwise)."""
    from scipy.io import savemat

    buf = io.BytesIO()
    savemat(buf, mdict, format="5", do_compression=False, oned_as="row")
    data = bytearray(buf.getvalue())
    data[:116] = b"MATLAB 5.0 MAT-file, synthetic miniature written by datasets.mini".ljust(116, b" ")
    return bytes(data)


class Writer:
    """Writes the files of one dataset folder and counts the images."""

    def __init__(self, dataset_dir):
        self.dataset_dir = dataset_dir
        self.n_images = 0
        self._made = set()

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
        self.bytes(rel, render_jpeg(class_idx, img_idx))
        self.n_images += 1
        return rel

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
# One builder per dataset: build(writer, counts)
# ---------------------------------------------------------------------------

def imagenet_classnames():
    return [line.split(" ", 1) for line in meta_lines("imagenet_classnames.txt")]


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
    folders = meta_lines("caltech101_folders.txt")  # 102 folders, two of them ignored by the reader
    kept = sorted(f for f in folders if f not in ("BACKGROUND_Google", "Faces_easy"))
    renames = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}
    for c, folder in enumerate(sorted(f for f in folders if f not in kept)):
        for i in range(sum(counts)):
            w.image(f"101_ObjectCategories/{folder}/image_{i + 1:04d}.jpg", len(kept) + c, i)
    parts = per_class_images(
        w, kept, counts, lambda c, i: f"101_ObjectCategories/{kept[c]}/image_{i + 1:04d}.jpg"
    )
    names = [renames.get(f, f) for f in kept]
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
    names = [b.lower() for b in breeds]
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
    year_first = [" ".join([n.split(" ")[-1]] + n.split(" ")[:-1]) for n in names]
    w.split("split_zhou_StanfordCars.json", *as_split((train, val, test), year_first))


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
    names = [" ".join(key.split("/")[1:][::-1]) for key in keys]
    w.split("split_zhou_SUN397.json", *as_split(parts, names, strip="SUN397/"))


def build_dtd(w, counts):
    classes = meta_lines("dtd_classes.txt")
    parts = per_class_images(w, classes, counts, lambda c, i: f"images/{classes[c]}/{classes[c]}_{i + 1:04d}.jpg")
    w.split("split_zhou_DescribableTextures.json", *as_split(parts, classes, strip="images/"))


def build_eurosat(w, counts):
    from .eurosat import NEW_CNAMES

    classes = meta_lines("eurosat_classes.txt")
    parts = per_class_images(w, classes, counts, lambda c, i: f"2750/{classes[c]}/{classes[c]}_{i + 1}.jpg")
    names = [NEW_CNAMES[c] for c in classes]
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
    names = [split_camel_case(a) for a in actions]
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


def build(root, names=None, per_class=2, verbose=True):
    """Write miniature copies of ``names`` (all 15 when None) under ``root``; returns image counts."""
    from dassl.data.datasets import DATASET_REGISTRY

    if per_class < 1:
        raise ValueError("--per-class must be >= 1")
    names = list(CONFIG_STEMS.values()) if not names else [resolve_dataset_name(n) for n in names]
    counts = Counts(train=per_class, val=2, test=1)
    root = osp.abspath(osp.expanduser(root))
    written = {}
    for name in dict.fromkeys(names):
        start = time.time()
        reader = DATASET_REGISTRY.get(name)
        dataset_dir = osp.join(root, reader.dataset_dir)
        prepare_folder(dataset_dir)
        w = Writer(dataset_dir)
        BUILDERS[name](w, counts)
        w.text(MARKER, [
            "Synthetic miniature copy written by `python -m datasets.mini` (see DATASETS.md).",
            f"Per class: {counts.train} train, {counts.val} val, {counts.test} test images (16x16 JPEG).",
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
    args = parser.parse_args(argv)
    start = time.time()
    try:
        written = build(args.root, args.datasets, per_class=args.per_class)
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"[mini] wrote {sum(written.values())} images for {len(written)} datasets in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
