"""Evaluation inputs computed once for many runs and kept in the disk cache (``harness/disk_cache.py``).

A benchmark evaluates the same test images many times (3 seeds x every method x base/new or 14
targets). Two caches remove the repeated work; both give exactly the direct path's numbers.

**Frozen image features**, for trainers whose image encoder is frozen and unprompted at evaluation
(``ZeroshotCLIP``/``ZeroshotCLIP2``, ``CLIP_Adapter``, ``CoOp``, ``CoCoOp``, ``AttnMMAdapter``)::

    install_feature_cache(trainer, encode, image_encoder, encoder_name)  # end of build_model
    def parse_batch_test(self, batch): return eval_batch(batch, self.device)
    ... image_features = image_features_of(inputs, encode)  # in the model: images or cached features

The test and val loaders are replaced by loaders of the split's image features, read from the cache
or, at the first evaluation, computed over the split's image loader (same batches as the direct
path) and stored. Their batches hold ``FEATURE_KEY`` [B, D] in the encoder's dtype instead of
``img``. Key: the encoder (its name, the backbone, a digest of its actual tensors after any precision
cast, computed once per run, the autocast state and the device kind), the split (dataset, split
name, and each image's path below the data root, size and mtime), the test transform, the batch size
(rounding may depend on it), and the software (torch, torchvision, Pillow, open_clip, ``clip/``).

**Preprocessed test images**, for trainers whose image encoder is adapted (MMA, MMRL, MMRL++,
MaPLe): ``install_image_cache(trainer)`` replaces the test and val loaders by loaders over the
split's decoded, resized and centre-cropped uint8 pixels (one memory-mapped array per split and
transform), so a re-evaluation decodes and resizes nothing. A batch is the pixels / 255 followed by
the transform's tensor steps (``Normalize``): bitwise the tensors of ``ToTensor`` + ``Normalize``.
Key: the split as above, the transform's PIL steps, and the torchvision and Pillow versions.

Switches (``EVAL_CACHE`` in ``trainers/config.py``): ``FEATURES`` and ``IMAGES`` (False = the direct
path), ``DIR`` and ``MAX_GB`` (0 = both off). A cache that cannot be used (a transform step not known to be
deterministic, a read-only or full disk, an entry above the size cap) leaves the direct path, with
a note. Readers trust a complete image entry's header and size (entries appear only by atomic
rename); feature entries are also checked against their digest (``python -m harness.disk_cache
verify`` checks all).
"""
import functools
import hashlib
import os
import os.path as osp
from concurrent.futures import ThreadPoolExecutor
from itertools import chain

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from clip import model_dtype
from dassl.data.data_manager import build_data_loader
from harness.console import log_only
from harness.disk_cache import DiskCache, key_digest

from .eval_cache import autocast_state
from .feature_cache import FEATURE_KEY, FeatureCache, compute_image_features, feature_loader_like

__all__ = [
    "CLIP_ENCODER", "eval_cache_store", "clip_image_features", "image_features_of", "eval_batch",
    "weights_digest", "images_identity", "describe_steps", "install_feature_cache", "install_clip_feature_cache",
    "CachedFeatureLoader", "split_test_transform", "PreprocessedImages", "CachedImageLoader", "install_image_cache",
]

FORMAT = 1  # bump when an entry's layout or meaning changes
CLIP_ENCODER = "open_clip CLIP.encode_image"  # shared by ZeroshotCLIP, CLIP_Adapter, CoOp and CoCoOp
SPLITS = (("test_loader", "test"), ("val_loader", "val"))
# Transform steps that give the same output for the same image every time.
DETERMINISTIC_STEPS = {f"torchvision.transforms.transforms.{name}" for name in (
    "Resize", "CenterCrop", "ToTensor", "Normalize", "PILToTensor", "ConvertImageDtype")} | {
    "dassl.data.transforms.transforms.InstanceNormalization"}


def eval_cache_store(cfg, switch):
    """The ``DiskCache`` of ``cfg.EVAL_CACHE`` when ``EVAL_CACHE.<switch>`` is on, else None."""
    node = cfg.get("EVAL_CACHE")
    if node is None or not node.get(switch, False) or not node.MAX_GB > 0:
        return None
    return DiskCache(node.DIR or None, int(node.MAX_GB * 1e9))


# ---------------------------------------------------------------------------------------------
# What an entry depends on
# ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def software_identity():
    """Versions of the libraries that decode, transform and encode, and a digest of the ``clip/`` sources."""
    import PIL
    import open_clip
    import torchvision

    import clip
    folder = osp.dirname(osp.abspath(clip.__file__))
    sources = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            with open(osp.join(folder, name), "rb") as f:
                sources.update(name.encode() + b"\0" + f.read())
    return {"torch": torch.__version__, "torchvision": torchvision.__version__, "Pillow": PIL.__version__,
            "numpy": np.__version__, "open_clip": open_clip.__version__, "clip_sources": sources.hexdigest()[:16]}


def weights_digest(module, chunk_bytes=1 << 23):
    """SHA-256 of ``module``'s parameters and buffers as they are now: names, dtypes, shapes and bytes.

    Chunks are hashed in parallel threads (hashlib releases the GIL), so ViT-B/16's image tower
    (~350 MB in fp32) takes a fraction of a second on a multi-core machine.
    """
    names, chunks = [], []
    for name, tensor in chain(module.named_parameters(), module.named_buffers()):
        data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        names.append(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}:{len(data)}")
        chunks.extend(data[i:i + chunk_bytes] for i in range(0, len(data), chunk_bytes))
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        digests = list(pool.map(lambda chunk: hashlib.sha256(chunk).digest(), chunks))
    combined = hashlib.sha256("\n".join(names).encode())
    for digest in digests:
        combined.update(digest)
    return combined.hexdigest()[:32]


def images_identity(items, root):
    """A split's images: hash of each file's path (relative to the data root), size and mtime, in order."""
    root = osp.abspath(osp.expanduser(root)) if root else ""
    digest = hashlib.sha256()
    for item in items:
        path = osp.abspath(item.impath)
        rel = osp.relpath(path, root) if root and path.startswith(root + os.sep) else path
        try:
            st = os.stat(path)
            stamp = f"{st.st_size}\t{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        digest.update(f"{rel}\t{stamp}\n".encode())
    return digest.hexdigest()[:32]


def describe_steps(steps):
    """Stable descriptions of transform steps, or None if one is not known to be deterministic."""
    described = []
    for step in steps:
        name = f"{type(step).__module__}.{type(step).__qualname__}"
        if name not in DETERMINISTIC_STEPS:
            return None
        described.append(repr(step) if type(step).__repr__ is not object.__repr__ else name)
    return described


def _transform_steps(transform):
    if isinstance(transform, T.Compose):
        return list(transform.transforms)
    return [transform] if callable(transform) else [object()]  # None or a list: not cacheable


def _split_fields(cfg, split, image_loader):
    """Key fields of a split's images: dataset, split name, the images' identity and count."""
    items = image_loader.dataset.data_source
    return {"dataset": cfg.DATASET.NAME, "split": split, "images": images_identity(items, cfg.DATASET.ROOT),
            "n_images": len(items), "skip_bad_images": bool(cfg.DATASET.get("SKIP_BAD_IMAGES", False))}


def _device_identity(device):
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def _log(line):
    """A line for log.txt (the console shows only notes, warnings, progress and results)."""
    with log_only():
        print(line)


def _entry(store, kind, key, what, read, create):
    """``read(entry)`` of cache entry ``key``, else ``create()``, holding the key's lock throughout."""
    with store.lock(key, what):
        entry = store.get(kind, key)
        if entry is not None:
            try:
                return read(entry)
            except (OSError, ValueError) as error:
                print(f"Note: eval cache entry {key[:12]} is unreadable ({error}); recomputing it")
                store.remove(entry.path)
        return create()


# ---------------------------------------------------------------------------------------------
# Frozen image features
# ---------------------------------------------------------------------------------------------

def image_features_of(inputs, encode):
    """``inputs`` are images [B, 3, H, W], encoded with ``encode``, or their cached features [B, D], returned."""
    return inputs if inputs.dim() == 2 else encode(inputs)


def clip_image_features(clip_model, inputs):
    """CLIP's image tower (open_clip ``encode_image``, in CLIP's dtype) on images [B, 3, H, W] -> [B, D];
    cached features [B, D] pass through."""
    return image_features_of(inputs, lambda images: clip_model.encode_image(images.to(model_dtype(clip_model))))


def eval_batch(batch, device):
    """``(inputs, labels)`` of a test batch: its cached image features if it holds them, else its images."""
    inputs = batch[FEATURE_KEY] if FEATURE_KEY in batch else batch["img"]
    return inputs.to(device), batch["label"].to(device)


class CachedFeatureLoader:
    """A split's frozen image features in the batches of ``image_loader``.

    ``load()`` gives the split's ``FeatureCache`` (from the disk cache, or computed and stored); it
    runs at the first iteration, and the features stay in memory for later ones (val every epoch).
    """

    def __init__(self, image_loader, load):
        self.image_loader = image_loader
        self.dataset = image_loader.dataset  # the split's items (what len(loader.dataset) counts)
        self.batch_size = image_loader.batch_size
        self._load = load
        self._features = None

    def __len__(self):
        return len(self.image_loader)

    def __iter__(self):
        if self._features is None:
            self._features = self._load()
        return iter(feature_loader_like(self.image_loader, self._features))


class FrozenImageFeatures:
    """Features of ``trainer``'s evaluation splits under ``encode`` (a frozen ``image_encoder``) via the cache."""

    def __init__(self, trainer, encode, image_encoder, encoder_name, store):
        self.trainer = trainer
        self.encode = encode
        self.image_encoder = image_encoder
        self.encoder_name = encoder_name
        self.store = store
        self._weights = None

    def weights(self):
        if self._weights is None:  # once per run: the encoder is frozen
            self._weights = weights_digest(self.image_encoder)
        return self._weights

    def key_fields(self, split, image_loader):
        cfg, device = self.trainer.cfg, self.trainer.device
        return {"format": FORMAT, "kind": "image features", "encoder": self.encoder_name,
                "backbone": cfg.MODEL.BACKBONE.NAME, "weights": self.weights(),
                "autocast": str(autocast_state(device)), "device": _device_identity(device),
                **_split_fields(cfg, split, image_loader),
                "transform": describe_steps(_transform_steps(image_loader.dataset.transform)),
                "batch_size": image_loader.batch_size, "software": software_identity()}

    def load(self, split, image_loader):
        """The split's ``FeatureCache``: read from the disk cache, or computed and stored."""
        items = image_loader.dataset.data_source
        fields = self.key_fields(split, image_loader)
        key = key_digest(fields)

        def read(entry):
            features = features_from_entry(entry, items)
            _log(f"{split.capitalize()} image features: {len(features):,} images from the eval cache "
                 f"({self.store.directory})")
            return features

        def create():
            features = compute_image_features(self.encode, image_loader, self.trainer.device)
            try:
                store_features(self.store, key, fields, features)
                stored = "stored in the eval cache"
            except (OSError, ValueError) as error:
                stored = f"not stored ({error})"
            _log(f"{split.capitalize()} image features: computed for {len(features):,} images, {stored}")
            return features

        return _entry(self.store, "features", key, f"the {split} image features of {fields['dataset']}",
                      read, create)


def store_features(store, key, fields, features):
    """Entry layout: features [N, D] (their dtype), then the item indices [N] int64."""
    layout = {"rows": len(features), "dim": features.features.shape[1],
              "dtype": str(features.features.dtype).replace("torch.", "")}
    as_bytes = features.features.contiguous().reshape(-1).view(torch.uint8).numpy()
    store.put("features", key, fields, layout, [as_bytes, features.indices.numpy()])


def features_from_entry(entry, items):
    """A ``FeatureCache`` from a features entry; labels and domains come from this run's ``items``."""
    layout = entry.layout
    rows, dim, dtype = layout["rows"], layout["dim"], getattr(torch, layout["dtype"])
    payload = entry.read_payload()
    feature_bytes = rows * dim * torch.empty((), dtype=dtype).element_size()
    features = torch.frombuffer(payload, dtype=dtype, count=rows * dim).view(rows, dim)
    indices = torch.frombuffer(payload, dtype=torch.int64, offset=feature_bytes, count=rows)
    if rows and int(indices.max()) >= len(items):
        raise ValueError("item indices beyond the split")
    labels = torch.tensor([items[i].label for i in indices.tolist()], dtype=torch.long)
    domains = torch.tensor([items[i].domain for i in indices.tolist()], dtype=torch.long)
    return FeatureCache(features=features, labels=labels, domains=domains, indices=indices)


def install_feature_cache(trainer, encode, image_encoder, encoder_name):
    """Evaluate ``trainer``'s test and val splits on cached features of ``encode`` (``EVAL_CACHE.FEATURES``).

    ``encode(images [B, 3, H, W]) -> [B, D]`` must be what the direct test path computes, with
    ``image_encoder`` (whose tensors are hashed) frozen. Returns whether the cache is on.
    """
    store = eval_cache_store(trainer.cfg, "FEATURES")
    if store is None:
        return False
    source = FrozenImageFeatures(trainer, encode, image_encoder, encoder_name, store)
    for attr, split in SPLITS:
        loader = getattr(trainer, attr, None)
        if loader is None or isinstance(loader, CachedFeatureLoader):
            continue
        if not hasattr(loader.dataset, "data_source") or describe_steps(
                _transform_steps(getattr(loader.dataset, "transform", None))) is None:
            print(f"Note: the {split} transform has a step not known to be deterministic: its image features "
                  "are computed at every evaluation")
            continue
        setattr(trainer, attr, CachedFeatureLoader(loader, functools.partial(source.load, split, loader)))
    return True


def install_clip_feature_cache(trainer, clip_model):
    """``install_feature_cache`` for CLIP's own image tower (``clip_image_features``)."""
    return install_feature_cache(trainer, functools.partial(clip_image_features, clip_model), clip_model.visual,
                                 CLIP_ENCODER)


# ---------------------------------------------------------------------------------------------
# Preprocessed test images
# ---------------------------------------------------------------------------------------------

class PILToUint8:
    """PIL RGB image -> uint8 tensor [H, W, 3]: the pixels ``ToTensor`` would divide by 255."""

    def __call__(self, img):
        return torch.from_numpy(np.array(img, dtype=np.uint8))


def split_test_transform(transform):
    """``(PIL steps, tensor steps)`` of ``[Resize ..] CenterCrop ToTensor [tensor steps]``, else None."""
    steps = _transform_steps(transform)
    kinds = [type(step) for step in steps]
    if T.ToTensor not in kinds:
        return None
    at = kinds.index(T.ToTensor)
    pil_steps, tensor_steps = steps[:at], steps[at + 1:]
    if not pil_steps or not isinstance(pil_steps[-1], T.CenterCrop):
        return None  # without a final crop the images need not share one size
    if not all(isinstance(step, (T.Resize, T.CenterCrop)) for step in pil_steps):
        return None
    if describe_steps(tensor_steps) is None:
        return None
    return pil_steps, tensor_steps


def apply_tensor_step(step, images):
    """A transform's tensor step on a batch [B, 3, H, W]: ``Normalize`` at once (elementwise), others per image."""
    if isinstance(step, T.Normalize):
        return TF.normalize(images, step.mean, step.std, inplace=True)
    return torch.stack([step(image) for image in images])


class PreprocessedImages(Dataset):
    """A split's cached uint8 pixels [N, H, W, 3], served a whole batch at a time: ``dataset[positions]``.

    ``rows`` are the readable items (all, unless unreadable images were skipped). The memory map is
    opened lazily in each process, so data-loader workers share the page cache instead of copies.
    """

    def __init__(self, path, offset, shape, rows, items, tensor_steps):
        self.path, self.offset, self.shape = path, offset, tuple(shape)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = torch.tensor([items[r].label for r in self.rows], dtype=torch.long)
        self.domains = torch.tensor([items[r].domain for r in self.rows], dtype=torch.long)
        self.impaths = [items[r].impath for r in self.rows]
        self.tensor_steps = tensor_steps
        self._pixels = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_pixels"] = None
        return state

    def pixels(self):
        if self._pixels is None:
            self._pixels = np.memmap(self.path, dtype=np.uint8, mode="r", offset=self.offset, shape=self.shape)
        return self._pixels

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, positions):
        positions = np.asarray(positions, dtype=np.int64)
        rows = self.rows[positions]
        if len(rows) and np.all(np.diff(rows) == 1):
            block = np.array(self.pixels()[rows[0]:rows[-1] + 1])  # one contiguous read
        else:
            block = self.pixels()[rows]
        # ToTensor: [H, W, 3] -> [3, H, W], to float, / 255; converted and transposed in one pass.
        images = torch.empty((len(rows), 3, *self.shape[1:3]), dtype=torch.get_default_dtype())
        images.copy_(torch.from_numpy(block).permute(0, 3, 1, 2))
        images.div_(255)
        for step in self.tensor_steps:
            images = apply_tensor_step(step, images)
        index = torch.from_numpy(positions)
        return {"img": images, "label": self.labels[index], "domain": self.domains[index],
                "index": torch.from_numpy(rows), "impath": [self.impaths[p] for p in positions]}


def _pixel_chunks(loader, rows, shape, valid):
    """The uint8 pixels of rows 0..rows-1 in order (zeros for unreadable images), then the ``valid`` mask."""
    row_bytes = int(np.prod(shape))
    next_row = 0
    for batch in loader:
        if batch is None:  # every image of the batch was unreadable (DATASET.SKIP_BAD_IMAGES)
            continue
        pixels = batch["img"]
        if tuple(pixels.shape[1:]) != tuple(shape):
            raise ValueError(f"preprocessed images of shape {tuple(pixels.shape[1:])}, expected {tuple(shape)}")
        for pos, row in enumerate(batch["index"].tolist()):
            if row > next_row:
                yield bytes((row - next_row) * row_bytes)
            yield pixels[pos].numpy()
            valid[row] = 1
            next_row = row + 1
    if next_row < rows:
        yield bytes((rows - next_row) * row_bytes)
    yield valid


class CachedImageLoader:
    """Test batches of a split from its cached uint8 pixels, batched and ordered like ``image_loader``.

    The pixels are read (or decoded once and stored) at the first iteration; if the cache cannot
    hold them, ``image_loader`` itself is used.
    """

    def __init__(self, cfg, split, image_loader, store, pil_steps, tensor_steps):
        self.cfg, self.split, self.image_loader, self.store = cfg, split, image_loader, store
        self.pil_steps, self.tensor_steps = pil_steps, tensor_steps
        self.dataset = image_loader.dataset  # the split's items (what len(loader.dataset) counts)
        self.batch_size = image_loader.batch_size
        self._preprocessed = None

    def __len__(self):
        return len(self.image_loader)

    def __iter__(self):
        if self._preprocessed is None:
            self._preprocessed = self._open() or False
        if self._preprocessed is False:
            return iter(self.image_loader)
        loader = self.image_loader
        sampler = RandomSampler(self._preprocessed) if isinstance(loader.sampler, RandomSampler) else \
            SequentialSampler(self._preprocessed)
        return iter(DataLoader(self._preprocessed, sampler=BatchSampler(sampler, loader.batch_size, drop_last=False),
                               batch_size=None, num_workers=loader.num_workers, pin_memory=loader.pin_memory))

    def _open(self):
        cfg, loader = self.cfg, self.image_loader
        items = loader.dataset.data_source
        height, width = self.pil_steps[-1].size
        shape = (len(items), height, width, 3)
        fields = {"format": FORMAT, "kind": "test images", **_split_fields(cfg, self.split, loader),
                  "transform": [repr(step) for step in self.pil_steps],
                  "software": {k: software_identity()[k] for k in ("torchvision", "Pillow")}}
        key = key_digest(fields)
        size = int(np.prod(shape)) + len(items)
        if size > self.store.max_bytes:
            print(f"Note: the {self.split} images need {size / 1e9:.1f} GB, more than EVAL_CACHE.MAX_GB: "
                  "they are decoded at every evaluation")
            return None

        def read(entry):
            if tuple(entry.layout["shape"]) != shape:
                raise ValueError(f"shape {entry.layout['shape']} instead of {list(shape)}")
            valid = np.memmap(entry.path, dtype=np.uint8, mode="r", offset=entry.offset + entry.layout["valid_at"],
                              shape=(len(items),))
            rows = np.flatnonzero(valid)
            return PreprocessedImages(entry.path, entry.offset, shape, rows, items, self.tensor_steps)

        def create():
            _log(f"Decoding the {self.split} images once into the eval cache ({len(items):,} images, "
                 f"{size / 1e6:,.0f} MB in {self.store.directory})")
            decode = build_data_loader(cfg, sampler_type="SequentialSampler", data_source=items,
                                       batch_size=loader.batch_size, tfm=T.Compose(self.pil_steps + [PILToUint8()]),
                                       is_train=False, dataset_wrapper=type(loader.dataset))
            valid = np.zeros(len(items), dtype=np.uint8)
            layout = {"rows": len(items), "shape": list(shape), "valid_at": int(np.prod(shape))}
            try:
                entry = self.store.put("images", key, fields, layout, _pixel_chunks(decode, len(items), shape[1:],
                                                                                    valid))
            except OSError as error:
                print(f"Note: cannot store the {self.split} images in the eval cache ({error}); "
                      "they are decoded at every evaluation")
                return None
            return read(entry)

        dataset = _entry(self.store, "images", key, f"the {self.split} images of {cfg.DATASET.NAME}", read, create)
        if dataset is not None:
            _log(f"{self.split.capitalize()} images: {len(dataset):,} preprocessed images from the eval cache")
        return dataset


def install_image_cache(trainer):
    """Evaluate ``trainer``'s test and val splits on cached preprocessed images (``EVAL_CACHE.IMAGES``)."""
    store = eval_cache_store(trainer.cfg, "IMAGES")
    if store is None:
        return False
    for attr, split in SPLITS:
        loader = getattr(trainer, attr, None)
        if loader is None or isinstance(loader, CachedImageLoader) or not hasattr(loader.dataset, "data_source"):
            continue
        steps = split_test_transform(getattr(loader.dataset, "transform", None))
        if steps is None:
            print(f"Note: the {split} transform is not resize + centre crop + to-tensor: its images are decoded "
                  "at every evaluation")
            continue
        setattr(trainer, attr, CachedImageLoader(trainer.cfg, split, loader, store, *steps))
    return True
