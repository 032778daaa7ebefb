"""Small file-system, seeding and string helpers."""
import difflib
import functools
import errno
import json
import os
import os.path as osp
import random
import sys
import time
import warnings

import numpy as np
import torch
from PIL import Image

from harness.fileio import atomic_write  # one implementation, shared with the project's own modules

__all__ = [
    "mkdir_if_missing", "check_isfile", "read_json", "write_json", "set_random_seed",
    "download_url", "read_image", "collect_env_info", "listdir_nohidden",
    "get_most_similar_str_to_a_from_b", "check_availability", "tolist_if_not",
    "atomic_write",
]


def mkdir_if_missing(dirname):
    """Create ``dirname`` (and parents); a concurrent creation is not an error."""
    if not osp.exists(dirname):
        try:
            os.makedirs(dirname)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise


def check_isfile(fpath):
    isfile = osp.isfile(fpath)
    if not isfile:
        warnings.warn(f'No file found at "{fpath}"')
    return isfile


def read_json(fpath):
    with open(fpath, "r") as f:
        return json.load(f)


def write_json(obj, fpath):
    mkdir_if_missing(osp.dirname(osp.abspath(fpath)))
    with atomic_write(fpath, "w") as f:
        json.dump(obj, f, indent=4, separators=(",", ": "))


def set_random_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def download_url(url, dst):
    """Download ``url`` to ``dst`` (only for explicit user action; never called at run time)."""
    from urllib import request

    print(f'* url="{url}"')
    print(f'* destination="{dst}"')
    mkdir_if_missing(osp.dirname(osp.abspath(dst)))
    start = time.time()

    def _hook(count, block_size, total_size):
        if total_size > 0 and count % 100 == 0:
            done = count * block_size
            sys.stdout.write(f"\r...{100 * done / total_size:.0f}%, {time.time() - start:.0f} s")
            sys.stdout.flush()

    request.urlretrieve(url, dst, _hook)
    sys.stdout.write("\n")


def read_image(path):
    """Open an image file with PIL and convert it to RGB."""
    if not osp.exists(path):
        raise IOError(f'No file exists at "{path}"')
    with Image.open(path) as img:
        return img.convert("RGB")


@functools.lru_cache(maxsize=1)
def collect_env_info():
    """torch's environment report plus the Pillow version.

    The report shells out to pip, lscpu and nvidia-smi (seconds); it cannot change within a
    process, so it is computed once per process (the run queue and the tests run many runs each).
    """
    import PIL
    try:
        from torch.utils.collect_env import get_pretty_env_info
        env_str = get_pretty_env_info()
    except Exception as e:  # the report shells out to tools that may be missing
        env_str = f"PyTorch version: {torch.__version__} (full report unavailable: {e})"
    env_str += f"\n        Pillow ({PIL.__version__})"
    return env_str


def listdir_nohidden(path, sort=False):
    items = [f for f in os.listdir(path) if not f.startswith(".")]
    if sort:
        items.sort()
    return items


def get_most_similar_str_to_a_from_b(a, b):
    """The string in ``b`` closest to ``a`` (difflib ratio)."""
    best, best_ratio = b[0] if b else "", -1.0
    for candidate in b:
        ratio = difflib.SequenceMatcher(None, a, candidate).ratio()
        if ratio > best_ratio:
            best, best_ratio = candidate, ratio
    return best


def check_availability(requested, available):
    """Raise ``ValueError`` listing the valid choices when ``requested`` is not one of them."""
    if requested not in available:
        hint = get_most_similar_str_to_a_from_b(requested, list(available))
        raise ValueError(
            f'The requested one is expected to belong to {sorted(available)}, '
            f'but got [{requested}] (do you mean [{hint}]?)'
        )


def tolist_if_not(x):
    if not isinstance(x, list):
        x = [x]
    return x
