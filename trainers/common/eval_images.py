"""Preprocessed test images in the disk cache, for trainers whose image encoder is adapted (MMA,
MMRL, MMRL++, MaPLe); the keys, switches and safety rules are ``eval_inputs.py``'s.

``install_image_cache(trainer)`` replaces the test and val loaders by loaders over the
split's decoded, resized and centre-cropped uint8 pixels (one memory-mapped array per split and
transform), so a re-evaluation decodes and resizes nothing. A batch is the pixels / 255 followed by
the transform's tensor steps (``Normalize``): bitwise the tensors of ``ToTensor`` + ``Normalize``.
Key: the split as above, the transform's PIL steps, and the torchvision and Pillow versions.
"""
import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from dassl.data.data_manager import build_data_loader
from harness.disk_cache import key_digest

from .eval_inputs import (
    FORMAT, SPLITS, cache_entry, describe_steps, eval_cache_store, log_note, software_identity, split_fields,
    transform_steps,
)

__all__ = ["split_test_transform", "PreprocessedImages", "CachedImageLoader", "install_image_cache"]


class PILToUint8:
    """PIL RGB image -> uint8 tensor [H, W, 3]: the pixels ``ToTensor`` would divide by 255."""

    def __call__(self, img):
        return torch.from_numpy(np.array(img, dtype=np.uint8))


def split_test_transform(transform):
    """``(PIL steps, tensor steps)`` of ``[Resize ..] CenterCrop ToTensor [tensor steps]``, else None."""
    steps = transform_steps(transform)
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
        fields = {"format": FORMAT, "kind": "test images", **split_fields(cfg, self.split, loader),
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
            log_note(f"Decoding the {self.split} images once into the eval cache ({len(items):,} images, "
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

        dataset = cache_entry(self.store, "images", key, f"the {self.split} images of {cfg.DATASET.NAME}", read, create)
        if dataset is not None:
            log_note(f"{self.split.capitalize()} images: {len(dataset):,} preprocessed images from the eval cache")
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
