"""RandAugment variants of upstream Dassl on PIL images: ``RandAugment`` (Cubuk et al., 2020; the
16 operations of the EfficientNet code), ``RandAugment2`` and ``RandAugmentFixMatch`` (Sohn et al.,
2020).

Every operation takes ``(img, v)``. Geometric ones flip the sign of ``v`` with probability 0.5.
Each op list entry is ``(op, minval, maxval)``; a magnitude in [0, 1] maps linearly onto the range.
"""
import random

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

__all__ = ["RandAugment", "RandAugment2", "RandAugmentFixMatch",
           "randaugment_list", "randaugment_list2", "fixmatch_list"]

CUTOUT_FILL = (125, 123, 114)  # mean ImageNet colour, as in the reference RandAugment code


def _random_sign(v):
    return -v if random.random() > 0.5 else v


def _affine(img, coeffs):
    """PIL affine with (a, b, c, d, e, f): output (x, y) samples input (a x + b y + c, d x + e y + f)."""
    return img.transform(img.size, Image.AFFINE, coeffs)


def ShearX(img, v):
    return _affine(img, (1, _random_sign(v), 0, 0, 1, 0))


def ShearY(img, v):
    return _affine(img, (1, 0, 0, _random_sign(v), 1, 0))


def TranslateX(img, v):
    """``v``: a fraction of the width."""
    return _affine(img, (1, 0, _random_sign(v) * img.size[0], 0, 1, 0))


def TranslateY(img, v):
    """``v``: a fraction of the height."""
    return _affine(img, (1, 0, 0, 0, 1, _random_sign(v) * img.size[1]))


def TranslateXabs(img, v):
    """``v``: pixels."""
    return _affine(img, (1, 0, _random_sign(v), 0, 1, 0))


def TranslateYabs(img, v):
    """``v``: pixels."""
    return _affine(img, (1, 0, 0, 0, 1, _random_sign(v)))


def Rotate(img, v):
    """``v``: degrees."""
    return img.rotate(_random_sign(v))


def AutoContrast(img, _):
    return ImageOps.autocontrast(img)


def Equalize(img, _):
    return ImageOps.equalize(img)


def Invert(img, _):
    return ImageOps.invert(img)


def Identity(img, _):
    return img


def Posterize(img, v):
    """Keep ``int(v)`` bits per channel."""
    return ImageOps.posterize(img, int(v))


def Solarize(img, v):
    """Invert pixels at or above the threshold ``v``."""
    return ImageOps.solarize(img, v)


def SolarizeAdd(img, v, threshold=128):
    """Add ``v`` to every pixel (clipped to 255), then solarise at ``threshold``."""
    shifted = np.clip(np.asarray(img, dtype=np.int32) + int(v), 0, 255).astype(np.uint8)
    return ImageOps.solarize(Image.fromarray(shifted), threshold)


def Color(img, v):
    return ImageEnhance.Color(img).enhance(v)


def Contrast(img, v):
    return ImageEnhance.Contrast(img).enhance(v)


def Brightness(img, v):
    return ImageEnhance.Brightness(img).enhance(v)


def Sharpness(img, v):
    return ImageEnhance.Sharpness(img).enhance(v)


def CutoutAbs(img, v):
    """Paint a square of side ``v`` pixels, centred at a random point, in ``CUTOUT_FILL``."""
    if v < 0:
        return img
    w, h = img.size
    cx, cy = np.random.uniform(w), np.random.uniform(h)
    x0, y0 = int(max(0, cx - v / 2.0)), int(max(0, cy - v / 2.0))
    box = (x0, y0, min(w, x0 + v), min(h, y0 + v))
    img = img.copy()
    ImageDraw.Draw(img).rectangle(box, CUTOUT_FILL)
    return img


def randaugment_list():
    """The 16 operations and ranges of ``RandAugment``."""
    return [
        (AutoContrast, 0, 1), (Equalize, 0, 1), (Invert, 0, 1), (Rotate, 0, 30),
        (Posterize, 4, 8), (Solarize, 0, 256), (SolarizeAdd, 0, 110), (Color, 0.1, 1.9),
        (Contrast, 0.1, 1.9), (Brightness, 0.1, 1.9), (Sharpness, 0.1, 1.9), (ShearX, 0.0, 0.3),
        (ShearY, 0.0, 0.3), (CutoutAbs, 0, 40), (TranslateXabs, 0.0, 100), (TranslateYabs, 0.0, 100),
    ]


def randaugment_list2():
    """The 15 operations and ranges of ``RandAugment2``."""
    return [
        (AutoContrast, 0, 1), (Brightness, 0.1, 1.9), (Color, 0.1, 1.9), (Contrast, 0.1, 1.9),
        (Equalize, 0, 1), (Identity, 0, 1), (Invert, 0, 1), (Posterize, 4, 8), (Rotate, -30, 30),
        (Sharpness, 0.1, 1.9), (ShearX, -0.3, 0.3), (ShearY, -0.3, 0.3), (Solarize, 0, 256),
        (TranslateX, -0.3, 0.3), (TranslateY, -0.3, 0.3),
    ]


def fixmatch_list():
    """The 14 operations and ranges of FixMatch's RandAugment."""
    return [
        (AutoContrast, 0, 1), (Brightness, 0.05, 0.95), (Color, 0.05, 0.95), (Contrast, 0.05, 0.95),
        (Equalize, 0, 1), (Identity, 0, 1), (Posterize, 4, 8), (Rotate, -30, 30),
        (Sharpness, 0.05, 0.95), (ShearX, -0.3, 0.3), (ShearY, -0.3, 0.3), (Solarize, 0, 256),
        (TranslateX, -0.3, 0.3), (TranslateY, -0.3, 0.3),
    ]


def _at(fraction, minval, maxval):
    return minval + fraction * (maxval - minval)


class RandAugment:
    """``n`` operations drawn with replacement, all at the fixed magnitude ``m`` of 30."""

    def __init__(self, n=2, m=10):
        if not 0 <= m <= 30:
            raise ValueError(f"RandAugment magnitude m={m} must lie in [0, 30] (INPUT.RANDAUGMENT_M)")
        self.n = n
        self.m = m
        self.augment_list = randaugment_list()

    def __call__(self, img):
        for op, lo, hi in random.choices(self.augment_list, k=self.n):
            img = op(img, _at(self.m / 30, lo, hi))
        return img


class RandAugment2:
    """``n`` operations drawn with replacement; each runs with probability ``p`` at a random magnitude."""

    def __init__(self, n=2, p=0.6):
        self.n = n
        self.p = p
        self.augment_list = randaugment_list2()

    def __call__(self, img):
        for op, lo, hi in random.choices(self.augment_list, k=self.n):
            if random.random() > self.p:
                continue
            img = op(img, _at(random.random(), lo, hi))
        return img


class RandAugmentFixMatch:
    """``n`` operations drawn with replacement, each at a random magnitude."""

    def __init__(self, n=2):
        self.n = n
        self.augment_list = fixmatch_list()

    def __call__(self, img):
        for op, lo, hi in random.choices(self.augment_list, k=self.n):
            img = op(img, _at(random.random(), lo, hi))
        return img
