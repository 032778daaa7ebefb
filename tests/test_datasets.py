"""Dataset layer: the 15 readers, split fallbacks, few-shot cache, base/new subsampling,
``datasets.mini`` and ``datasets.check``. Runs on miniature copies (16x16 images)."""
import hashlib
import math
import os
import os.path as osp
import pickle
import random
import shutil
import subprocess
import sys

import pytest

import datasets  # noqa: F401  (registers the readers)
from dassl.config import get_cfg_default
from dassl.data.datasets import DATASET_REGISTRY, Datum, build_dataset
from dassl.utils import read_json, write_json
from datasets import check, mini
from datasets.common import CONFIG_STEMS, fewshot_cache_path, own_cache_path, subsample_classes
from datasets.oxford_pets import breed_from_filename
from datasets.stanford_cars import year_first
from datasets.sun397 import scene_name
from datasets.ucf101 import split_camel_case

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
STEM_OF = {name: stem for stem, name in CONFIG_STEMS.items()}

NUM_CLASSES = {
    "ImageNet": 1000, "Caltech101": 100, "OxfordPets": 37, "StanfordCars": 196, "OxfordFlowers": 102,
    "Food101": 101, "FGVCAircraft": 100, "SUN397": 397, "DescribableTextures": 47, "EuroSAT": 10,
    "UCF101": 101, "ImageNetV2": 1000, "ImageNetSketch": 1000, "ImageNetA": 200, "ImageNetR": 200,
}
BASE_CLASSES = {
    "ImageNet": 500, "Caltech101": 50, "OxfordPets": 19, "StanfordCars": 98, "OxfordFlowers": 51,
    "Food101": 51, "FGVCAircraft": 50, "SUN397": 199, "DescribableTextures": 24, "EuroSAT": 5, "UCF101": 51,
}
JSON_DATASETS = [
    "Caltech101", "OxfordPets", "StanfordCars", "OxfordFlowers", "Food101", "SUN397",
    "DescribableTextures", "EuroSAT", "UCF101",
]


def make_cfg(root, name, shots=-1, seed=1, subsample="all"):
    """Default config + the project keys + the dataset YAML, as train.py builds it."""
    cfg = get_cfg_default()
    if "SUBSAMPLE_CLASSES" not in cfg.DATASET:
        cfg.DATASET.SUBSAMPLE_CLASSES = "all"
    if "SKIP_BAD_IMAGES" not in cfg.DATASET:
        cfg.DATASET.SKIP_BAD_IMAGES = False
    cfg.VERBOSE = False
    cfg.merge_from_file(osp.join(REPO, "configs", "datasets", f"{STEM_OF[name]}.yaml"))
    cfg.merge_from_list([
        "DATASET.ROOT", str(root), "DATASET.NUM_SHOTS", shots, "SEED", seed,
        "DATASET.SUBSAMPLE_CLASSES", subsample,
    ])
    return cfg


def build(root, name, shots=-1, seed=1, subsample="all"):
    random.seed(seed)  # train.py seeds before the dataset is built
    return build_dataset(make_cfg(root, name, shots, seed, subsample))


def _link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def fresh_copy(mini_root, tmp_path, name):
    """A private copy of one dataset folder of the session mini root, without its caches.

    Files are hard links (cheap); the readers only replace files (atomic writes) or delete
    them, which never alters the shared originals.
    """
    folder = DATASET_REGISTRY.get(name).dataset_dir
    ignore = shutil.ignore_patterns("split_fewshot", "preprocessed*.pkl")
    shutil.copytree(osp.join(mini_root, folder), osp.join(tmp_path, folder), ignore=ignore,
                    copy_function=_link_or_copy)
    return str(tmp_path)


def impaths(items):
    return sorted(item.impath for item in items)


def tree_hash(root):
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fname in sorted(filenames):
            path = osp.join(dirpath, fname)
            digest.update(osp.relpath(path, root).encode())
            with open(path, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()


# ---------------------------------------------------------------------------
# Registry, configs, class counts and names
# ---------------------------------------------------------------------------

def test_registry_and_dataset_configs():
    # the project's readers (test modules may register toy datasets of their own)
    readers = [n for n in DATASET_REGISTRY.registered_names()
               if DATASET_REGISTRY.get(n).__module__.startswith("datasets.")]
    assert sorted(readers) == sorted(NUM_CLASSES)
    files = sorted(os.listdir(osp.join(REPO, "configs", "datasets")))
    assert files == sorted(f"{stem}.yaml" for stem in CONFIG_STEMS)
    for stem, name in CONFIG_STEMS.items():
        with open(osp.join(REPO, "configs", "datasets", f"{stem}.yaml")) as f:
            assert f.read() == f'DATASET:\n  NAME: "{name}"\n'


@pytest.mark.parametrize("name", list(NUM_CLASSES))
def test_class_counts_and_base_split(mini_root, name):
    ds = build(mini_root, name)
    assert ds.num_classes == NUM_CLASSES[name] == len(ds.classnames)
    assert len(ds.test) > 0
    if name in BASE_CLASSES:
        base = build(mini_root, name, subsample="base")
        assert base.num_classes == BASE_CLASSES[name] == math.ceil(NUM_CLASSES[name] / 2)
        new = build(mini_root, name, subsample="new")
        assert new.num_classes == NUM_CLASSES[name] - BASE_CLASSES[name]
    else:  # test-only variants: empty val, test == train_x
        assert ds.val == [] and ds.test is ds.train_x


def test_class_name_processing(mini_root):
    caltech = build(mini_root, "Caltech101").classnames
    assert {"airplane", "face", "leopard", "motorbike"} <= set(caltech)
    assert not {"airplanes", "Faces", "Faces_easy", "BACKGROUND_Google", "background_google"} & set(caltech)
    assert caltech[:3] == ["face", "leopard", "motorbike"]  # case-sensitive sorted folder order

    assert build(mini_root, "StanfordCars").classnames[0] == "2000 AM General Hummer SUV"
    assert year_first("Acura TL Type-S 2008") == "2008 Acura TL Type-S"

    eurosat = build(mini_root, "EuroSAT").classnames
    assert eurosat[0] == "Annual Crop Land" and "Sea or Lake" in eurosat and "Highway or Road" in eurosat

    ucf = build(mini_root, "UCF101")
    assert ucf.classnames[0] == "Apply_Eye_Makeup"
    assert split_camel_case("YoYo") == "Yo_Yo"
    assert all(osp.basename(osp.dirname(item.impath)) == item.classname for item in ucf.test)

    sun = build(mini_root, "SUN397").classnames
    assert sun[0] == "abbey" and "outdoor apartment_building" in sun
    assert scene_name("a/apartment_building/outdoor") == "outdoor apartment_building"

    pets = build(mini_root, "OxfordPets").classnames
    assert pets[0] == "abyssinian" and "great_pyrenees" in pets and "american_bulldog" in pets
    assert breed_from_filename("great_pyrenees_12") == "great_pyrenees"

    assert build(mini_root, "OxfordFlowers").classnames[0] == "pink primrose"
    assert build(mini_root, "FGVCAircraft").classnames[:2] == ["707-320", "727-200"]
    assert build(mini_root, "Food101").classnames[:2] == ["apple_pie", "baby_back_ribs"]


def test_imagenet_and_variant_labels(mini_root):
    imagenet = build(mini_root, "ImageNet")
    assert imagenet.classnames[:2] == ["tench", "goldfish"]
    assert imagenet.val is imagenet.test
    v2 = build(mini_root, "ImageNetV2")
    assert v2.classnames == imagenet.classnames
    assert all(osp.basename(osp.dirname(i.impath)) == str(i.label) for i in v2.test)
    sketch = build(mini_root, "ImageNetSketch")
    assert sketch.classnames == imagenet.classnames
    with open(osp.join(mini_root, "imagenet", "classnames.txt")) as f:
        by_wnid = dict(line.strip().split(" ", 1) for line in f)
    for name in ("ImageNetA", "ImageNetR"):
        ds = build(mini_root, name)
        assert sorted({i.label for i in ds.test}) == list(range(200))  # relabelled 0..199
        for item in ds.test:
            assert by_wnid[osp.basename(osp.dirname(item.impath))] == item.classname


def test_base_new_relabelling(mini_root):
    full = build(mini_root, "Caltech101")
    base = build(mini_root, "Caltech101", subsample="base")
    new = build(mini_root, "Caltech101", subsample="new")
    assert base.classnames == full.classnames[:50]
    assert new.classnames == full.classnames[50:]
    assert new.lab2cname[0] == full.classnames[50]
    for ds in (base, new):
        for items in (ds.train_x, ds.val, ds.test):
            assert {i.label for i in items} == set(range(50))
            assert all(ds.lab2cname[i.label] == i.classname for i in items)
    assert impaths(base.test) + impaths(new.test) != [] and not set(impaths(base.test)) & set(impaths(new.test))


def test_subsample_uses_labels_of_first_list(tmp_path, capsys):
    img = tmp_path / "x.jpg"
    img.write_bytes(b"")
    train = [Datum(str(img), label=y, classname=f"c{y}") for y in (0, 2, 4, 6, 8)]
    test = [Datum(str(img), label=y, classname=f"c{y}") for y in range(10)]
    base_train, base_test = subsample_classes(train, test, subsample="base")
    assert [i.label for i in base_test] == [0, 1, 2] and [i.classname for i in base_test] == ["c0", "c2", "c4"]
    new_train, _ = subsample_classes(train, test, subsample="new")
    assert [(i.label, i.classname) for i in new_train] == [(0, "c6"), (1, "c8")]
    assert "SUBSAMPLE BASE CLASSES!" in capsys.readouterr().out
    assert subsample_classes(train, test, subsample="all") == (train, test)


# ---------------------------------------------------------------------------
# Few-shot sampling and its cache
# ---------------------------------------------------------------------------

@pytest.fixture
def eurosat6(tmp_path):
    """A private EuroSAT miniature with 6 training images per class."""
    mini.build(str(tmp_path), ["EuroSAT"], per_class=6, verbose=False)
    return str(tmp_path)


def own_fewshot_cache(dataset_dir, shots, seed):
    """This project's few-shot cache (``shot_<K>-seed_<S>.portable.pkl``)."""
    return own_cache_path(fewshot_cache_path(dataset_dir, shots, seed))


def test_fewshot_determinism_and_cache_reuse(eurosat6, capsys):
    cache = own_fewshot_cache(osp.join(eurosat6, "eurosat"), 2, 1)
    first = build(eurosat6, "EuroSAT", shots=2, seed=1)
    out = capsys.readouterr().out
    assert f"Saving preprocessed few-shot data to {cache}" in out
    assert len(first.train_x) == 20 and len(first.val) == 20  # 2 per class; val min(2, 4) = 2
    mtime = os.stat(cache).st_mtime_ns

    random.seed(12345)  # a different global state must not matter on a cache hit
    again = build_dataset(make_cfg(eurosat6, "EuroSAT", shots=2, seed=1))
    assert f"Loading preprocessed few-shot data from {cache}" in capsys.readouterr().out
    assert os.stat(cache).st_mtime_ns == mtime
    assert impaths(again.train_x) == impaths(first.train_x)

    os.remove(cache)  # same seed, resampled from scratch: same sample
    assert impaths(build(eurosat6, "EuroSAT", shots=2, seed=1).train_x) == impaths(first.train_x)
    other = build(eurosat6, "EuroSAT", shots=2, seed=2)
    assert impaths(other.train_x) != impaths(first.train_x)
    assert osp.isfile(own_fewshot_cache(osp.join(eurosat6, "eurosat"), 2, 2))


def test_fewshot_then_subsample_share_one_cache(eurosat6, capsys):
    full = build(eurosat6, "EuroSAT", shots=2, seed=3)
    base = build(eurosat6, "EuroSAT", shots=2, seed=3, subsample="base")
    new = build(eurosat6, "EuroSAT", shots=2, seed=3, subsample="new")
    out = capsys.readouterr().out
    assert out.count("Saving preprocessed few-shot data") == 1
    assert out.count("Loading preprocessed few-shot data") == 2
    assert sorted(impaths(base.train_x) + impaths(new.train_x)) == impaths(full.train_x)
    assert os.listdir(osp.join(eurosat6, "eurosat", "split_fewshot")) == ["shot_2-seed_3.portable.pkl"]


def test_fewshot_cache_is_portable(eurosat6):
    build(eurosat6, "EuroSAT", shots=1, seed=1)
    cache = own_fewshot_cache(osp.join(eurosat6, "eurosat"), 1, 1)
    code = (
        "import pickle, sys; d = pickle.load(open(sys.argv[1], 'rb')); "
        "print(sorted(d), len(d['train']), d['train'][0][0].count('/'), type(d['train'][0][1]).__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code, cache], cwd="/", capture_output=True, text=True, check=True)
    assert out.stdout.split("]")[1].split() == ["10", "2", "int"]
    assert "'train'" in out.stdout and "'val'" in out.stdout
    with open(cache, "rb") as f:
        payload = pickle.load(f)
    assert not osp.isabs(payload["train"][0][0])  # relative to the dataset folder


def _datum_cache(path, impath):
    """Pickled Datum objects (the Dassl/CoOp format) under this project's cache name."""
    with open(path, "wb") as f:
        pickle.dump({"train": [Datum(impath, 0, 0, "x")], "val": []}, f)


STALE_REASONS = {
    "not_in_split": "is not in the current train split",
    "label": "is cached as (1,",
    "classname": "(renamed)",
    "garbage": "unreadable",
    "datum_objects": "not this project's format",
    "missing_file": "listed file no longer exists",
    "count": "expected 2",
}


@pytest.mark.parametrize("problem", list(STALE_REASONS))
def test_stale_fewshot_cache_is_rebuilt(eurosat6, capsys, problem):
    dataset_dir = osp.join(eurosat6, "eurosat")
    cache = own_fewshot_cache(dataset_dir, 2, 1)
    build(eurosat6, "EuroSAT", shots=2, seed=1)
    with open(cache, "rb") as f:
        payload = pickle.load(f)
    split_path = osp.join(dataset_dir, "split_zhou_EuroSAT.json")
    if problem == "not_in_split":
        payload["train"][0][0] = payload["val"][0][0]
    elif problem == "label":
        payload["train"][0][1] += 1
    elif problem == "classname":  # the split now names the class differently
        split = read_json(split_path)
        for part in split.values():
            for entry in part:
                entry[2] = entry[2] + " (renamed)"
        write_json(split, split_path)
    elif problem == "missing_file":  # the image is gone and the split no longer lists it
        rel = payload["train"][0][0]
        os.remove(osp.join(dataset_dir, rel))
        split = read_json(split_path)
        split["train"] = [e for e in split["train"] if "2750/" + e[0] != rel]
        write_json(split, split_path)
    elif problem == "count":
        payload["train"] = payload["train"][1:]
    if problem == "garbage":
        with open(cache, "wb") as f:
            f.write(b"\x80\x05not a pickle at all")
    elif problem == "datum_objects":
        _datum_cache(cache, osp.join(dataset_dir, payload["train"][0][0]))
    elif problem not in ("classname",):
        with open(cache, "wb") as f:
            pickle.dump(payload, f)
    capsys.readouterr()

    ds = build(eurosat6, "EuroSAT", shots=2, seed=1)
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if line.startswith("WARNING: few-shot cache")]
    assert len(warnings) == 1 and cache in warnings[0], out
    assert STALE_REASONS[problem] in warnings[0]
    assert f"Saving preprocessed few-shot data to {cache}" in out
    assert all(osp.isfile(i.impath) for i in ds.train_x)
    build(eurosat6, "EuroSAT", shots=2, seed=1)  # the rebuilt cache is accepted
    assert f"Loading preprocessed few-shot data from {cache}" in capsys.readouterr().out


def test_fewer_images_than_shots_warns_once(mini_root, tmp_path, capsys):
    root = fresh_copy(mini_root, tmp_path, "EuroSAT")
    ds = build(root, "EuroSAT", shots=4, seed=1)  # 2 train and 2 val images per class
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "fewer images than the requested shots" in line]
    assert len(lines) == 1, out
    # Each class is counted once, with both of its short lists (the count was once doubled).
    assert "10 of 10 classes have fewer images" in lines[0]
    assert "Annual Crop Land (train 2/4, val 2/4)" in lines[0] and "Sea or Lake (train 2/4, val 2/4)" in lines[0]
    assert len(ds.train_x) == 20 and len(ds.val) == 20


def test_imagenet_caches(mini_root, tmp_path, capsys):
    root = fresh_copy(mini_root, tmp_path, "ImageNet")
    ds = build(root, "ImageNet", shots=1, seed=1, subsample="base")
    out = capsys.readouterr().out
    assert "Saving preprocessed data to" in out and "SUBSAMPLE BASE CLASSES!" in out
    assert ds.num_classes == 500 and len(ds.train_x) == 500 and ds.val is ds.test and len(ds.test) == 500
    with open(own_fewshot_cache(osp.join(root, "imagenet"), 1, 1), "rb") as f:
        assert sorted(pickle.load(f)) == ["format", "num_shots", "seed", "train"]  # train only

    build(root, "ImageNet", shots=1, seed=1)
    out = capsys.readouterr().out
    assert "Loading preprocessed data from" in out and "Loading preprocessed few-shot data from" in out

    gone = ds.test[0].impath  # a deleted image makes preprocessed.pkl stale
    os.remove(gone)
    ds = build(root, "ImageNet")
    out = capsys.readouterr().out
    assert f"WARNING: {osp.join(root, 'imagenet', 'preprocessed.portable.pkl')} does not match the data" in out
    assert gone not in impaths(ds.test) and len(ds.test) == 999


# ---------------------------------------------------------------------------
# Fallback splits and errors
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", JSON_DATASETS)
def test_fallback_split_when_json_is_missing(mini_root, tmp_path, capsys, name):
    original = build(mini_root, name)
    root = fresh_copy(mini_root, tmp_path, name)
    reader = DATASET_REGISTRY.get(name)
    split_path = osp.join(root, reader.dataset_dir, reader.split_file)
    os.remove(split_path)
    capsys.readouterr()

    ds = build(root, name)
    out = capsys.readouterr().out
    assert f"{name}: split file not found: {split_path}" in out
    assert f"Saved split to {split_path}" in out
    assert ("Splitting into 50% train, 20% val, and 30% test" in out
            or "Splitting trainval into 80% train and 20% val" in out)
    assert ds.classnames == original.classnames
    total = lambda d: len(d.train_x) + len(d.val) + len(d.test)  # noqa: E731
    assert total(ds) == total(original)
    build(root, name)  # the written JSON is read back
    assert f"Reading split from {split_path}" in capsys.readouterr().out


def test_error_missing_dataset_folder(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        build(tmp_path, "Caltech101")
    message = str(err.value)
    assert osp.join(str(tmp_path), "caltech-101") in message and "DATASETS.md#caltech101" in message


@pytest.mark.parametrize("name,remove,named", [
    ("OxfordPets", ["split_zhou_OxfordPets.json", "annotations"], "split_zhou_OxfordPets.json"),
    ("FGVCAircraft", ["images_variant_val.txt"], "images_variant_val.txt"),
    ("ImageNetA", ["classnames.txt"], "classnames.txt"),
])
def test_error_missing_split_file(mini_root, tmp_path, name, remove, named):
    root = fresh_copy(mini_root, tmp_path, name)
    dataset_dir = osp.join(root, DATASET_REGISTRY.get(name).dataset_dir)
    for rel in remove:
        path = osp.join(dataset_dir, rel)
        shutil.rmtree(path) if osp.isdir(path) else os.remove(path)
    with pytest.raises(FileNotFoundError) as err:
        build(root, name)
    assert osp.join(dataset_dir, named) in str(err.value)
    assert f"DATASETS.md#{DATASET_REGISTRY.get(name).anchor}" in str(err.value)


def test_error_missing_image_names_file_and_split(mini_root, tmp_path, corrupt_image):
    root = fresh_copy(mini_root, tmp_path, "DescribableTextures")
    gone = osp.join(root, "dtd", "images", "banded", "banded_0001.jpg")
    os.remove(gone)
    with pytest.raises(FileNotFoundError) as err:
        build(root, "DescribableTextures")
    assert gone in str(err.value) and "split_zhou_DescribableTextures.json" in str(err.value)
    bad = corrupt_image(osp.join(root, "dtd", "images", "banded", "banded_0002.jpg"))
    assert open(bad, "rb").read(4) != b"\xff\xd8\xff\xe0"


# ---------------------------------------------------------------------------
# datasets.mini and datasets.check
# ---------------------------------------------------------------------------

def test_mini_is_deterministic_and_idempotent(tmp_path, capsys):
    names = ["EuroSAT", "StanfordCars", "oxford_pets"]
    first, second = str(tmp_path / "a"), str(tmp_path / "b")
    assert mini.main(["--root", first, "--datasets", *names]) == 0
    mini.build(second, names, verbose=False)
    assert tree_hash(first) == tree_hash(second)
    mini.build(first, names, verbose=False)  # re-running over an existing root
    assert tree_hash(first) == tree_hash(second)
    out = capsys.readouterr().out
    assert "[mini] EuroSAT" in out and "[mini] OxfordPets" in out


def test_mini_layout_details(mini_root):
    caltech = osp.join(mini_root, "caltech-101", "101_ObjectCategories")
    assert len(os.listdir(caltech)) == 102
    assert {"airplanes", "Faces", "Leopards", "Motorbikes", "BACKGROUND_Google", "Faces_easy"} <= set(os.listdir(caltech))
    assert osp.isfile(osp.join(mini_root, "oxford_pets", "images", "Abyssinian_1.jpg"))
    assert len(os.listdir(osp.join(mini_root, "imagenet", "images", "train"))) == 1000
    assert sorted(os.listdir(osp.join(mini_root, "imagenet", "images", "train")))[0] == "n01440764"
    assert "README.txt" in os.listdir(osp.join(mini_root, "imagenet-adversarial", "imagenet-a"))


def test_mini_refuses_real_folders_and_unknown_names(tmp_path, capsys):
    real = tmp_path / "eurosat"
    real.mkdir()
    (real / "precious.jpg").write_bytes(b"x")
    assert mini.main(["--root", str(tmp_path), "--datasets", "eurosat"]) == 2
    assert (real / "precious.jpg").exists()
    assert mini.main(["--root", str(tmp_path), "--datasets", "cifar10"]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err


def test_check_complete_root(mini_root, capsys):
    assert check.main(["--root", mini_root]) == 0
    out = capsys.readouterr().out
    assert "15 of 15 datasets complete" in out
    assert "Caltech101 (caltech-101/): found" in out and "published: 2,465" in out


def test_check_broken_root(mini_root, tmp_path, capsys):
    root = fresh_copy(mini_root, tmp_path, "OxfordPets")
    fresh_copy(mini_root, tmp_path, "Caltech101")
    os.remove(osp.join(root, "oxford_pets", "split_zhou_OxfordPets.json"))
    gone = osp.join(root, "caltech-101", "101_ObjectCategories", "Faces", "image_0001.jpg")
    os.remove(gone)
    assert check.main(["--root", root, "--datasets", "OxfordPets", "caltech101", "EuroSAT"]) == 1
    out = capsys.readouterr().out
    assert f"missing: {osp.join(root, 'oxford_pets', 'split_zhou_OxfordPets.json')}" in out
    assert gone in out
    assert f"missing folder: {osp.join(root, 'eurosat')}" in out
    assert "0 of 3 datasets complete" in out
