"""Helpers shared by every dataset reader.

* layout checks that fail with a message naming the missing path and the DATASETS.md section;
* split files (``split_zhou_<Name>.json``): read, save, and the random fallback splits;
* the few-shot caches: this project's ``split_fewshot/shot_<K>-seed_<S>.portable.pkl`` (plain
  data, relative paths), and Dassl/CoOp's ``shot_<K>-seed_<S>.pkl``, read without running code and
  never written;
* base/new class subsampling;
* two base classes: ``CoOpDataset`` (sampling + subsampling) and ``SplitDataset`` (JSON split).

Readers use only the standard library, upstream Dassl's public API (``Datum``, ``DatasetBase``,
``dassl.utils``) and ``harness`` (atomic writes, restricted unpickling); scipy is imported lazily for
the ``.mat`` files of two fallbacks. Readers never open images.
"""
import json
import math
import os
import os.path as osp
import pickle
import random
from collections import Counter, OrderedDict, defaultdict

from dassl.data.datasets import DatasetBase, Datum
from dassl.utils import listdir_nohidden, mkdir_if_missing, write_json
from harness.fileio import atomic_write
from harness.safe_load import InertObject, find_inert, restricted_pickle_load

DOCS = "DATASETS.md"
FEWSHOT_FORMAT = "portable-fewshot/1"
MAX_LISTED_CLASSES = 20  # classes named in the single "fewer images than shots" warning


# Config stem (configs/datasets/<stem>.yaml) -> registry name, in the order of datasets.md.
CONFIG_STEMS = OrderedDict([
    ("imagenet", "ImageNet"),
    ("caltech101", "Caltech101"),
    ("oxford_pets", "OxfordPets"),
    ("stanford_cars", "StanfordCars"),
    ("oxford_flowers", "OxfordFlowers"),
    ("food101", "Food101"),
    ("fgvc_aircraft", "FGVCAircraft"),
    ("sun397", "SUN397"),
    ("dtd", "DescribableTextures"),
    ("eurosat", "EuroSAT"),
    ("ucf101", "UCF101"),
    ("imagenetv2", "ImageNetV2"),
    ("imagenet_sketch", "ImageNetSketch"),
    ("imagenet_a", "ImageNetA"),
    ("imagenet_r", "ImageNetR"),
])


def resolve_dataset_name(name):
    """Registry name for a registry name or config stem (case-insensitive); ``ValueError`` if unknown."""
    lookup = {stem.lower(): reg for stem, reg in CONFIG_STEMS.items()}
    lookup.update({reg.lower(): reg for reg in CONFIG_STEMS.values()})
    key = name.lower().replace("-", "_")
    if key.endswith(".yaml"):
        key = key[:-5]
    if key not in lookup:
        raise ValueError(f"unknown dataset {name!r}; choose from {list(CONFIG_STEMS.values())} or {list(CONFIG_STEMS)}")
    return lookup[key]


# ---------------------------------------------------------------------------
# Layout checks and small file readers
# ---------------------------------------------------------------------------

def doc_hint(anchor):
    return f"See {DOCS}#{anchor} for how to prepare it."


def data_root(cfg):
    """``DATASET.ROOT`` as an absolute path (``~`` expanded)."""
    return osp.abspath(osp.expanduser(cfg.DATASET.ROOT))


def require_dir(path, dataset, anchor, what="dataset folder"):
    if not osp.isdir(path):
        raise FileNotFoundError(f"{dataset}: {what} not found: {path}. {doc_hint(anchor)}")


def require_file(path, dataset, anchor, what="file"):
    if not osp.isfile(path):
        raise FileNotFoundError(f"{dataset}: {what} not found: {path}. {doc_hint(anchor)}")


def read_lines(path):
    """Non-empty, stripped lines of a text file."""
    with open(path, "r") as f:
        return [line.strip() for line in f if line.strip()]


def load_mat(path):
    """Load a MATLAB file (scipy is imported only here, for the rare fallbacks)."""
    from scipy.io import loadmat

    return loadmat(path)


def read_imagenet_classnames(path):
    """``classnames.txt`` -> OrderedDict wnid -> class name (file order).

    Each line is ``<wnid> <name with spaces>``; the name is everything after the first token.
    """
    classnames = OrderedDict()
    for line in read_lines(path):
        wnid, _, name = line.partition(" ")
        classnames[wnid] = name.strip()
    return classnames


def sorted_subfolders(path):
    return sorted(name for name in listdir_nohidden(path) if osp.isdir(osp.join(path, name)))


def count_images_in_subfolders(path):
    """Number of non-hidden files one level below ``path`` (fast: no stat per file)."""
    total = 0
    for folder in sorted_subfolders(path):
        with os.scandir(osp.join(path, folder)) as entries:
            total += sum(1 for e in entries if e.is_file() and not e.name.startswith("."))
    return total


def to_posix_relpath(path, prefix):
    """``path`` relative to ``prefix`` with ``/`` separators (fast path for joined paths)."""
    head = prefix.rstrip(os.sep) + os.sep
    rel = path[len(head):] if path.startswith(head) else osp.relpath(path, prefix)
    return rel.replace(os.sep, "/").lstrip("/")


# ---------------------------------------------------------------------------
# Split files and random fallback splits
# ---------------------------------------------------------------------------

SPLIT_KEYS = ("train", "val", "test")


def _split_shape_problem(split):
    """Why a parsed split file is not ``{"train"|"val"|"test": [[image path, label, class name], ...]}``."""
    if not isinstance(split, dict):
        return f'holds a JSON {type(split).__name__}, not an object with "train", "val" and "test" lists'
    for key in SPLIT_KEYS:
        if not isinstance(split.get(key), list):
            return f'has no "{key}" list'
        for i, entry in enumerate(split[key]):
            ok = (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)
                  and isinstance(entry[1], int) and not isinstance(entry[1], bool) and entry[1] >= 0
                  and isinstance(entry[2], str))
            if not ok:
                shown = repr(entry) if len(repr(entry)) <= 80 else repr(entry)[:77] + "..."
                return f'entry {i} of "{key}" is {shown}, not [image path, label, class name]'
    for key in ("train", "test"):
        if not split[key]:
            return f'has an empty "{key}" list'
    return None


def load_split_json(filepath, fix="replace it with the published split file"):
    """Parse a split file and check its shape; ``ValueError`` naming the file, the problem and ``fix``."""
    def bad(problem):
        return ValueError(f"split file {filepath} {problem}: {fix}")

    with open(filepath, "rb") as f:
        data = f.read()
    if not data.strip():
        raise bad("is empty")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise bad(f"is not a text file (byte {e.start} is not UTF-8)") from None
    try:
        split = json.loads(text)
    except ValueError as e:
        truncated = "" if text.rstrip().endswith(("}", "]")) else " (truncated?)"
        raise bad(f"is not valid JSON{truncated}: {e.msg} (line {e.lineno}, column {e.colno})") from None
    problem = _split_shape_problem(split)
    if problem:
        raise bad(problem)
    return split


def read_split(filepath, path_prefix, fix="replace it with the published split file"):
    """Read a ``split_zhou_*.json`` file into (train, val, test) lists of ``Datum``."""
    print(f"Reading split from {filepath}")
    split = load_split_json(filepath, fix)
    output = []
    for key in ("train", "val", "test"):
        items = []
        for impath, label, classname in split[key]:
            impath = osp.join(path_prefix, impath)
            try:
                items.append(Datum(impath=impath, label=int(label), classname=classname))
            except FileNotFoundError as e:
                raise FileNotFoundError(f"{e} (listed in the {key!r} part of {filepath})") from None
        output.append(items)
    return tuple(output)


def save_split(train, val, test, filepath, path_prefix):
    """Write (train, val, test) as a split JSON with paths relative to ``path_prefix``."""
    split = {
        key: [[to_posix_relpath(item.impath, path_prefix), item.label, item.classname] for item in items]
        for key, items in (("train", train), ("val", val), ("test", test))
    }
    write_json(split, filepath)
    print(f"Saved split to {filepath}")


def split_trainval(trainval, p_val=0.2):
    """Split a trainval list per label: ``round(p_val * n)`` items to val, the rest to train."""
    p_trn = 1 - p_val
    print(f"Splitting trainval into {p_trn:.0%} train and {p_val:.0%} val")
    by_label = defaultdict(list)
    for idx, item in enumerate(trainval):
        by_label[item.label].append(idx)
    train, val = [], []
    for label, idxs in by_label.items():
        n_val = round(len(idxs) * p_val)
        assert n_val > 0, f"label {label} has too few images ({len(idxs)}) for a val split"
        random.shuffle(idxs)
        for n, idx in enumerate(idxs):
            (val if n < n_val else train).append(trainval[idx])
    return train, val


def split_per_class(groups, p_trn=0.5, p_val=0.2):
    """Split each class's image list into train/val/test by shuffling.

    ``groups`` is a list of ``(label, classname, impaths)``. Per class: train ``round(p_trn*n)``,
    val ``round(p_val*n)``, test the rest (each must be > 0).
    """
    p_tst = 1 - p_trn - p_val
    print(f"Splitting into {p_trn:.0%} train, {p_val:.0%} val, and {p_tst:.0%} test")
    train, val, test = [], [], []
    for label, classname, impaths in groups:
        impaths = sorted(impaths)  # listing order is file-system dependent; make it stable
        random.shuffle(impaths)
        n_total = len(impaths)
        n_train = round(n_total * p_trn)
        n_val = round(n_total * p_val)
        n_test = n_total - n_train - n_val
        assert n_train > 0 and n_val > 0 and n_test > 0, (
            f"class {classname!r} has too few images ({n_total}) for a train/val/test split"
        )
        make = lambda paths: [Datum(impath=p, label=label, classname=classname) for p in paths]  # noqa: E731
        train += make(impaths[:n_train])
        val += make(impaths[n_train:n_train + n_val])
        test += make(impaths[n_train + n_val:])
    return train, val, test


def read_and_split_data(image_dir, p_trn=0.5, p_val=0.2, ignored=(), new_cnames=None):
    """Folder-based random split: one sub-folder per class, sorted names, label = index."""
    new_cnames = new_cnames or {}
    categories = sorted(c for c in listdir_nohidden(image_dir) if c not in ignored)
    groups = []
    for label, category in enumerate(categories):
        folder = osp.join(image_dir, category)
        impaths = [osp.join(folder, name) for name in listdir_nohidden(folder)]
        groups.append((label, new_cnames.get(category, category), impaths))
    return split_per_class(groups, p_trn=p_trn, p_val=p_val)


# ---------------------------------------------------------------------------
# Base/new subsampling
# ---------------------------------------------------------------------------

def subsample_classes(*args, subsample="all"):
    """Keep the first (``base``) or second (``new``) half of the labels, relabelled from 0.

    The label set comes from the first list (the training list); base is the first
    ``ceil(n/2)`` sorted labels. Every list passed is filtered and relabelled.
    """
    assert subsample in ("all", "base", "new"), f"SUBSAMPLE_CLASSES must be all/base/new, got {subsample!r}"
    if subsample == "all":
        return args
    labels = sorted({item.label for item in args[0]})
    m = math.ceil(len(labels) / 2)
    print(f"SUBSAMPLE {subsample.upper()} CLASSES!")
    selected = labels[:m] if subsample == "base" else labels[m:]
    relabeler = {label: new for new, label in enumerate(selected)}
    output = []
    for dataset in args:
        output.append([
            Datum(impath=item.impath, label=relabeler[item.label], classname=item.classname)
            for item in dataset if item.label in relabeler
        ])
    return output


# ---------------------------------------------------------------------------
# Caches: few-shot samples and ImageNet's image lists
# ---------------------------------------------------------------------------
#
# Dassl/CoOp code writes ``split_fewshot/shot_<K>-seed_<S>.pkl`` and ``imagenet/preprocessed.pkl``
# as pickles of ``Datum`` objects holding absolute paths. Such a file (the "shared" cache) is read
# by a restricted unpickler that imports and calls nothing, its paths are mapped onto the current
# data root, its sample is reused as it is, and it is never written to. This project's own caches
# hold plain data (paths relative to the dataset folder) under names of their own: ``x.pkl`` ->
# ``x.portable.pkl``. Versions before that wrote the own format under the shared name; such a file
# is moved to the own name, so that CoOp-family code can write its own file again.

OWN_SUFFIX = ".portable.pkl"
UPSTREAM_DATUM = "dassl.data.datasets.base_dataset.Datum"


class CacheError(Exception):
    """A cache this project did not write and cannot use; the message names the file and the fix."""


def fewshot_cache_path(dataset_dir, num_shots, seed):
    """The shared (Dassl/CoOp) name of a few-shot cache."""
    return osp.join(dataset_dir, "split_fewshot", f"shot_{num_shots}-seed_{seed}.pkl")


def own_cache_path(shared_path):
    """This project's cache beside a shared one: ``x.pkl`` -> ``x.portable.pkl``."""
    return shared_path[:-len(".pkl")] + OWN_SUFFIX


def save_plain_pickle(obj, path):
    mkdir_if_missing(osp.dirname(path))
    with atomic_write(path, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)


def encode_items(items, base_dir):
    """Datum list -> ``[[relative path, label, classname], ...]``."""
    return [[to_posix_relpath(item.impath, base_dir), item.label, item.classname] for item in items]


def _datum_record(obj):
    """``(impath, label, classname)`` of an unpickled upstream ``Datum``; ValueError for anything else."""
    state = obj.state if isinstance(obj, InertObject) and obj.qualname == UPSTREAM_DATUM else None
    if not isinstance(state, dict):
        raise ValueError(f"it holds {obj!r:.80} where a Datum record was expected")
    impath, label, classname = state.get("_impath"), state.get("_label"), state.get("_classname")
    if not (isinstance(impath, str) and type(label) is int and isinstance(classname, str)):
        raise ValueError(f"a Datum record lacks a path, label or class name: {state!r:.120}")
    return impath, label, classname


def read_cache(path, own_format):
    """Classify a cache file: ``("own", payload)`` or ``("shared", {name: [(impath, label, classname)]})``.

    Raises ValueError saying why the file is neither (unreadable, other objects than ``Datum``).
    """
    try:
        payload = restricted_pickle_load(path)
    except Exception as e:  # truncated, empty or not a pickle at all
        raise ValueError(f"unreadable: {type(e).__name__}: {e}") from None
    if isinstance(payload, dict) and payload.get("format") == own_format:
        return "own", payload
    foreign = sorted(find_inert(payload) - {UPSTREAM_DATUM})
    if foreign:
        raise ValueError(f"it holds other objects than Datum records ({', '.join(foreign)}), which were not loaded")
    if not isinstance(payload, dict) or not all(isinstance(v, list) for v in payload.values()):
        raise ValueError("it is not a dict of Datum lists")
    return "shared", {name: [_datum_record(obj) for obj in items] for name, items in payload.items()}


def open_shared_cache(shared, own, own_format):
    """Read the file at the shared name: ``(records, problem)``.

    ``records`` is the ``read_cache`` dict of a Dassl/CoOp cache (None if there is none), ``problem``
    why a file there cannot be used (None if absent or usable). A file in this project's format
    (an earlier version wrote it there) is moved to ``own`` (dropped if ``own`` exists) first.
    """
    if not osp.exists(shared):
        return None, None
    try:
        kind, payload = read_cache(shared, own_format)
    except ValueError as e:
        return None, str(e)
    if kind == "shared":
        return payload, None
    try:
        if osp.exists(own):
            os.remove(shared)
        else:
            os.replace(shared, own)
    except FileNotFoundError:  # another run on this data root moved it first
        return None, None
    print(f"Note: moved this project's cache {shared} to {own} (CoOp-family code reads the former name and "
          "cannot read this format)")
    return None, None


def shared_cache_error(path, problem):
    problem = " ".join(problem.split())  # one line
    return CacheError(f"cache {path} (not written by this project) cannot be used: {problem}. It is left "
                      "untouched: fix the data root, or move the file away to draw a new sample")


def map_to_dataset_dir(impath, dataset_dir):
    """A path written on another machine -> path relative to ``dataset_dir``, or None.

    A path inside ``dataset_dir`` is kept; otherwise the part after its last folder named like the
    dataset folder (``eurosat``, ``caltech-101``, ``imagenet``, ...) is used. Windows separators
    are accepted.
    """
    head = dataset_dir.rstrip(os.sep) + os.sep
    if impath.startswith(head):
        return to_posix_relpath(impath, dataset_dir)
    parts = impath.replace("\\", "/").split("/")
    folder = osp.basename(dataset_dir.rstrip(os.sep))
    hits = [i for i, part in enumerate(parts[:-1]) if part == folder]
    return "/".join(parts[hits[-1] + 1:]) if hits else None


def mapped_entries(records, dataset_dir):
    """Shared-cache records -> ``[[relative path, label, classname]]``; ValueError naming an unmappable path."""
    entries = []
    for impath, label, classname in records:
        rel = map_to_dataset_dir(impath, dataset_dir)
        if rel is None:
            raise ValueError(f'{impath} has no folder named "{osp.basename(dataset_dir)}" to map it onto '
                             f"{dataset_dir}")
        entries.append([rel, label, classname])
    return entries


def _check_entry(entry):
    ok = (
        isinstance(entry, (list, tuple)) and len(entry) == 3 and isinstance(entry[0], str)
        and isinstance(entry[1], int) and isinstance(entry[2], str)
    )
    if not ok:
        raise ValueError(f"malformed entry {entry!r}")
    return entry


def match_fewshot_cache(cached, dataset_dir, sources):
    """Return ``{name: [Datum]}`` for cached ``{name: [[rel, label, classname]]}``, or raise ``ValueError``.

    ``sources`` maps a list name (``train``/``val``) to ``(full list, shots)``. Every cached item
    must be an item of the current full list with the same label and class name, and each label
    must hold exactly ``min(shots, available)`` distinct items. The cached order is kept.
    """
    result = {}
    for name, (items, shots) in sources.items():
        if name not in cached or not isinstance(cached[name], list):
            raise ValueError(f"no {name!r} list")
        index = {to_posix_relpath(item.impath, dataset_dir): item for item in items}
        picked, seen = [], set()
        for entry in cached[name]:
            rel, label, classname = _check_entry(entry)
            item = index.get(rel)
            if item is None:
                if not osp.isfile(osp.join(dataset_dir, rel)):
                    raise ValueError(f"listed file no longer exists: {rel}")
                raise ValueError(f"{rel} is not in the current {name} split")
            if (item.label, item.classname) != (label, classname):
                raise ValueError(
                    f"{rel} is cached as ({label}, {classname!r}) but the split says "
                    f"({item.label}, {item.classname!r})"
                )
            if rel in seen:
                raise ValueError(f"{rel} is listed twice")
            seen.add(rel)
            picked.append(item)
        available = Counter(item.label for item in items)
        cached_counts = Counter(item.label for item in picked)
        for label, n in available.items():
            if cached_counts.get(label, 0) != min(shots, n):
                raise ValueError(
                    f"{name} holds {cached_counts.get(label, 0)} images of label {label}, expected {min(shots, n)}"
                )
        result[name] = picked
    return result


def warn_short_classes(sources):
    """Print ONE line naming the classes that have fewer images than the requested shots.

    A class short in several lists (train and val) is counted once and named with each list.
    """
    short = defaultdict(list)  # label -> ["train 3/16", "val 1/4"]
    cnames = {}
    for name, (items, shots) in sources.items():
        counts = Counter(item.label for item in items)
        for item in items:
            cnames.setdefault(item.label, item.classname)
        for label in sorted(counts):
            if counts[label] < shots:
                short[label].append(f"{name} {counts[label]}/{shots}")
    if short:
        named = [f"{cnames[label]} ({', '.join(parts)})" for label, parts in sorted(short.items())]
        shown = ", ".join(named[:MAX_LISTED_CLASSES])
        if len(named) > MAX_LISTED_CLASSES:
            shown += f", ... and {len(named) - MAX_LISTED_CLASSES} more"
        print(
            f"WARNING: {len(short)} of {len(cnames)} classes have fewer images than the requested shots; "
            f"using all of their images: {shown}"
        )


# ---------------------------------------------------------------------------
# Reader base classes
# ---------------------------------------------------------------------------

class CoOpDataset(DatasetBase):
    """A reader with CoOp's few-shot sampling (cached) and base/new subsampling.

    Class attributes (relative names, used by ``datasets.mini`` and ``datasets.check`` too):
    ``dataset_dir`` (folder under the root), ``image_dir`` (relative to ``dataset_dir``),
    ``anchor`` (DATASETS.md section), ``expected`` (published split sizes).
    On an instance, ``dataset_dir``/``image_dir`` are absolute paths, as upstream.
    """

    dataset_dir = ""
    image_dir = ""
    anchor = ""
    expected = {}

    @property
    def display_name(self):
        return type(self).__name__

    def resolve_dirs(self, cfg):
        """Set absolute ``dataset_dir``/``image_dir``/``split_fewshot_dir``; check the folder exists."""
        cls = type(self)
        self.dataset_dir = osp.join(data_root(cfg), cls.dataset_dir)
        require_dir(self.dataset_dir, self.display_name, cls.anchor)
        self.image_dir = osp.join(self.dataset_dir, cls.image_dir) if cls.image_dir else self.dataset_dir
        self.split_fewshot_dir = osp.join(self.dataset_dir, "split_fewshot")
        mkdir_if_missing(self.split_fewshot_dir)

    def require_image_dir(self):
        require_dir(self.image_dir, self.display_name, type(self).anchor, what="image folder")

    def fewshot(self, cfg, train, val=None):
        """K-shot samples of ``train`` (and ``min(K, 4)`` of ``val``), cached per (K, seed).

        Returns ``(train, val)``; ``val`` is None when not given (ImageNet). The sample comes from
        this project's cache if it matches the data, else from a Dassl/CoOp cache of the same
        (K, seed) (which must match the data: ``CacheError`` otherwise), else it is drawn and cached.
        """
        num_shots = int(cfg.DATASET.NUM_SHOTS)
        if num_shots < 1:
            return train, val
        sources = OrderedDict(train=(train, num_shots))
        if val is not None:
            sources["val"] = (val, min(num_shots, 4))
        warn_short_classes(sources)
        shared = fewshot_cache_path(self.dataset_dir, num_shots, cfg.SEED)
        own = own_cache_path(shared)
        records, problem = open_shared_cache(shared, own, FEWSHOT_FORMAT)
        result = self._load_own_fewshot_cache(own, sources, fallback=shared if records else None)
        if result is not None and records is not None:
            self._note_other_sample(shared, own, records, sources, result)
        elif result is None and (records is not None or problem is not None):
            if problem is None:
                try:
                    cached = {name: mapped_entries(records[name], self.dataset_dir)
                              for name in sources if name in records}
                    result = match_fewshot_cache(cached, self.dataset_dir, sources)
                except ValueError as e:
                    problem = f"it does not fit the data under {self.dataset_dir} ({e})"
            if problem is not None:
                raise shared_cache_error(shared, problem)
            print(f"Loading preprocessed few-shot data from {shared}")
        if result is None:
            result = OrderedDict(
                (name, self.generate_fewshot_dataset(items, num_shots=shots))
                for name, (items, shots) in sources.items()
            )
            payload = {"format": FEWSHOT_FORMAT, "num_shots": num_shots, "seed": cfg.SEED}
            payload.update((name, encode_items(items, self.dataset_dir)) for name, items in result.items())
            print(f"Saving preprocessed few-shot data to {own}")
            save_plain_pickle(payload, own)
        return result["train"], result.get("val")

    def _load_own_fewshot_cache(self, path, sources, fallback=None):
        """This project's cached sample, or None: absent, or stale (then it is reported and removed)."""
        if not osp.exists(path):
            return None
        try:
            kind, payload = read_cache(path, FEWSHOT_FORMAT)
            if kind != "own":
                raise ValueError("not this project's format")
            result = match_fewshot_cache(payload, self.dataset_dir, sources)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            then = f"using {fallback} instead" if fallback else "rebuilding it"
            print(f"WARNING: few-shot cache {path} does not match the data ({e}); {then}")
            if fallback:  # (otherwise it is overwritten)
                os.remove(path)
            return None
        print(f"Loading preprocessed few-shot data from {path}")
        return result

    def _note_other_sample(self, shared, own, records, sources, result):
        """One note when the Dassl/CoOp cache beside ours holds another sample."""
        try:
            theirs = {name: [e[0] for e in mapped_entries(records[name], self.dataset_dir)] for name in sources}
        except (KeyError, ValueError):
            theirs = None
        ours = {name: [to_posix_relpath(i.impath, self.dataset_dir) for i in items] for name, items in result.items()}
        if theirs != ours:
            print(f"Note: {shared} (written by Dassl/CoOp code) holds another sample than {own}; this project "
                  f"keeps its own (delete {own} to use the other)")

    @staticmethod
    def subsample_mode(cfg):
        return cfg.DATASET.get("SUBSAMPLE_CLASSES", "all")


class SplitDataset(CoOpDataset):
    """A reader whose split is ``split_zhou_<Name>.json`` (random fallback when it is absent).

    Subclasses set ``split_file`` and, if they support the fallback, ``fallback_files``
    (paths relative to ``dataset_dir`` that the fallback needs; the image folder is always
    needed) and implement ``generate_split()``.
    """

    split_file = ""
    fallback_files = ()
    paths_relative_to_dataset_dir = False  # StanfordCars: split paths start at dataset_dir

    @classmethod
    def required_files(cls):
        return [cls.split_file]

    @classmethod
    def split_fix(cls):
        """What to do about a damaged split file."""
        fix = f"download the published {cls.split_file} again ({DOCS}#{cls.anchor})"
        return fix + ", or delete it to generate a random split" if cls.supports_random_split() else fix

    @classmethod
    def supports_random_split(cls):
        """True when ``generate_split`` exists (it may still need ``fallback_files``)."""
        return cls.generate_split is not SplitDataset.generate_split

    @property
    def path_prefix(self):
        return self.dataset_dir if type(self).paths_relative_to_dataset_dir else self.image_dir

    @classmethod
    def listed_images(cls, dataset_dir):
        """``{split: [absolute image paths]}`` listed in the split JSON (for ``datasets.check``)."""
        split = load_split_json(osp.join(dataset_dir, cls.split_file), cls.split_fix())
        prefix = dataset_dir if cls.paths_relative_to_dataset_dir else osp.join(dataset_dir, cls.image_dir)
        return {key: [osp.join(prefix, entry[0]) for entry in split[key]] for key in ("train", "val", "test")}

    def __init__(self, cfg):
        self.resolve_dirs(cfg)
        self.split_path = osp.join(self.dataset_dir, type(self).split_file)
        if osp.isfile(self.split_path):
            self.require_image_dir()
            train, val, test = read_split(self.split_path, self.path_prefix, type(self).split_fix())
        else:
            train, val, test = self._fallback_split()
        train, val = self.fewshot(cfg, train, val)
        train, val, test = subsample_classes(train, val, test, subsample=self.subsample_mode(cfg))
        super().__init__(train_x=train, val=val, test=test)

    def _fallback_split(self):
        cls = type(self)
        needed = [self.image_dir] + [osp.join(self.dataset_dir, p) for p in cls.fallback_files]
        missing = [p for p in needed if not osp.exists(p)]
        if missing:
            raise FileNotFoundError(
                f"{self.display_name}: split file not found: {self.split_path}; a random split cannot "
                f"be generated either because {', '.join(missing)} is missing. {doc_hint(cls.anchor)}"
            )
        print(
            f"WARNING: {self.display_name}: split file not found: {self.split_path}; generating a random "
            f"split (results are only comparable with the published split file, see {DOCS}#{cls.anchor})"
        )
        train, val, test = self.generate_split()
        save_split(train, val, test, self.split_path, self.path_prefix)
        return train, val, test

    def generate_split(self):
        raise NotImplementedError


class ImageNetVariant(DatasetBase):
    """A test-only ImageNet variant; subclasses implement ``class_folders(classnames)``.

    Needs its own copy of ImageNet's ``classnames.txt``. ``train_x`` is the full list (only so
    that the class names can be derived), ``val`` is empty and ``test`` is the same full list.
    """

    dataset_dir = ""
    image_dir = ""
    anchor = ""
    expected = {}

    @classmethod
    def required_files(cls):
        return ["classnames.txt"]

    @classmethod
    def listed_images(cls, dataset_dir):
        """``{"test": number of images}`` found in the class folders (for ``datasets.check``)."""
        return {"test": count_images_in_subfolders(osp.join(dataset_dir, cls.image_dir))}

    def __init__(self, cfg):
        name = type(self).__name__
        self.dataset_dir = osp.join(data_root(cfg), type(self).dataset_dir)
        require_dir(self.dataset_dir, name, self.anchor)
        self.image_dir = osp.join(self.dataset_dir, type(self).image_dir)
        require_dir(self.image_dir, name, self.anchor, what="image folder")
        classnames_path = osp.join(self.dataset_dir, "classnames.txt")
        require_file(classnames_path, name, self.anchor, what="class-name file (a copy of ImageNet's)")
        if cfg.DATASET.get("SUBSAMPLE_CLASSES", "all") != "all":
            print(f"Note: {name} is test-only; DATASET.SUBSAMPLE_CLASSES is ignored (all classes are used)")
        classnames = read_imagenet_classnames(classnames_path)
        data = []
        for label, (folder, classname) in enumerate(self.class_folders(classnames)):
            folder = osp.join(self.image_dir, folder)
            for imname in sorted(listdir_nohidden(folder)):
                data.append(Datum(impath=osp.join(folder, imname), label=label, classname=classname))
        super().__init__(train_x=data, val=[], test=data)

    def class_folders(self, classnames):
        raise NotImplementedError

    def wnid_folders(self, classnames):
        """Sorted wnid sub-folders present (files such as README.txt skipped), relabelled 0..n-1."""
        wnids = sorted_subfolders(self.image_dir)
        unknown = [w for w in wnids if w not in classnames]
        if unknown:
            raise KeyError(f"{type(self).__name__}: folders {unknown[:5]} have no entry in classnames.txt")
        return [(wnid, classnames[wnid]) for wnid in wnids]
