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

**Preprocessed test images** (MMA, MMRL, MMRL++, MaPLe): ``eval_images.py``, on the same keys.

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

from clip import model_dtype
from harness.console import log_only
from harness.disk_cache import DiskCache, key_digest

from .eval_cache import autocast_state
from .feature_cache import FEATURE_KEY, FeatureCache, compute_image_features, feature_loader_like

__all__ = [
    "CLIP_ENCODER", "eval_cache_store", "clip_image_features", "image_features_of", "eval_batch",
    "weights_digest", "images_identity", "describe_steps", "install_feature_cache", "install_clip_feature_cache",
    "CachedFeatureLoader",
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


def transform_steps(transform):
    if isinstance(transform, T.Compose):
        return list(transform.transforms)
    return [transform] if callable(transform) else [object()]  # None or a list: not cacheable


def split_fields(cfg, split, image_loader):
    """Key fields of a split's images: dataset, split name, the images' identity and count."""
    items = image_loader.dataset.data_source
    return {"dataset": cfg.DATASET.NAME, "split": split, "images": images_identity(items, cfg.DATASET.ROOT),
            "n_images": len(items), "skip_bad_images": bool(cfg.DATASET.get("SKIP_BAD_IMAGES", False))}


def _device_identity(device):
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def log_note(line):
    """A line for log.txt (the console shows only notes, warnings, progress and results)."""
    with log_only():
        print(line)


def cache_entry(store, kind, key, what, read, create):
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
                **split_fields(cfg, split, image_loader),
                "transform": describe_steps(transform_steps(image_loader.dataset.transform)),
                "batch_size": image_loader.batch_size, "software": software_identity()}

    def load(self, split, image_loader):
        """The split's ``FeatureCache``: read from the disk cache, or computed and stored."""
        items = image_loader.dataset.data_source
        fields = self.key_fields(split, image_loader)
        key = key_digest(fields)

        def read(entry):
            features = features_from_entry(entry, items)
            log_note(f"{split.capitalize()} image features: {len(features):,} images from the eval cache "
                 f"({self.store.directory})")
            return features

        def create():
            features = compute_image_features(self.encode, image_loader, self.trainer.device)
            try:
                store_features(self.store, key, fields, features)
                stored = "stored in the eval cache"
            except (OSError, ValueError) as error:
                stored = f"not stored ({error})"
            log_note(f"{split.capitalize()} image features: computed for {len(features):,} images, {stored}")
            return features

        return cache_entry(self.store, "features", key, f"the {split} image features of {fields['dataset']}",
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
                transform_steps(getattr(loader.dataset, "transform", None))) is None:
            print(f"Note: the {split} transform has a step not known to be deterministic: its image features "
                  "are computed at every evaluation")
            continue
        setattr(trainer, attr, CachedFeatureLoader(loader, functools.partial(source.load, split, loader)))
    return True


def install_clip_feature_cache(trainer, clip_model):
    """``install_feature_cache`` for CLIP's own image tower (``clip_image_features``)."""
    return install_feature_cache(trainer, functools.partial(clip_image_features, clip_model), clip_model.visual,
                                 CLIP_ENCODER)
