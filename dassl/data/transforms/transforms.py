"""Train/test image transforms built from ``INPUT.TRANSFORMS`` in Dassl's fixed order."""
import torch
import torchvision.transforms as T
from torchvision.transforms import InterpolationMode

from .autoaugment import CIFAR10Policy, ImageNetPolicy, SVHNPolicy
from .randaugment import RandAugment, RandAugment2, RandAugmentFixMatch

__all__ = ["INTERPOLATION_MODES", "build_transform", "GaussianNoise"]

AVAI_CHOICES = [
    "random_flip", "random_resized_crop", "normalize", "instance_norm", "random_crop",
    "random_translation", "center_crop", "cutout", "imagenet_policy", "cifar10_policy",
    "svhn_policy", "randaugment", "randaugment_fixmatch", "randaugment2", "gaussian_noise",
    "colorjitter", "randomgrayscale", "gaussian_blur",
]

INTERPOLATION_MODES = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}

class Cutout:
    """Zero out ``n_holes`` square patches of side ``length`` in a CHW tensor."""

    def __init__(self, n_holes=1, length=16):
        self.n_holes = n_holes
        self.length = length

    def __call__(self, img):
        h, w = img.shape[1:]
        mask = torch.ones(h, w)
        for _ in range(self.n_holes):
            y = int(torch.randint(h, (1,)))
            x = int(torch.randint(w, (1,)))
            y1, y2 = max(0, y - self.length // 2), min(h, y + self.length // 2)
            x1, x2 = max(0, x - self.length // 2), min(w, x + self.length // 2)
            mask[y1:y2, x1:x2] = 0.0
        return img * mask.expand_as(img)


class GaussianNoise:
    """Add N(mean, std^2) noise to a tensor image with probability ``p``."""

    def __init__(self, mean=0.0, std=0.15, p=0.5):
        self.mean = mean
        self.std = std
        self.p = p

    def __call__(self, img):
        if torch.rand(1).item() > self.p:
            return img
        return img + torch.randn(img.size()) * self.std + self.mean


class InstanceNormalization:
    """Normalise each channel of one image by its own mean and std."""

    def __call__(self, img):
        c = img.shape[0]
        flat = img.reshape(c, -1)
        mean = flat.mean(1).view(c, 1, 1)
        std = flat.std(1).view(c, 1, 1)
        return (img - mean) / (std + 1e-8)


class RandomTranslation:
    """With probability ``p``: resize to 1.125x and crop a random ``size`` window."""

    def __init__(self, size, p=0.5, interpolation=InterpolationMode.BILINEAR):
        self.size = size
        self.p = p
        self.big = [round(s * 1.125) for s in size]
        self.resize = T.Resize(self.big, interpolation=interpolation)
        self.crop = T.RandomCrop(size)

    def __call__(self, img):
        if torch.rand(1).item() > self.p:
            return img.resize((self.size[1], self.size[0])) if hasattr(img, "resize") else img
        return self.crop(self.resize(img))


class Random2DTranslation(RandomTranslation):
    """Upstream's name and signature for ``RandomTranslation``: ``(height, width, p, interpolation)``."""

    def __init__(self, height, width, p=0.5, interpolation=InterpolationMode.BILINEAR):
        super().__init__((height, width), p=p, interpolation=interpolation)


def build_transform(cfg, is_train=True, choices=None):
    """Compose the train or test pipeline from ``cfg.INPUT`` (prints each step)."""
    if cfg.INPUT.NO_TRANSFORM:
        print("Note: no transform is applied!")
        return None
    if choices is None:
        choices = cfg.INPUT.TRANSFORMS
    for choice in choices:
        if choice not in AVAI_CHOICES:
            raise ValueError(f'Unknown transform "{choice}" in INPUT.TRANSFORMS; choices: {AVAI_CHOICES}')
    normalize = T.Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD)
    if is_train:
        return _build_transform_train(cfg, choices, normalize)
    return _build_transform_test(cfg, choices, normalize)


def _build_transform_train(cfg, choices, normalize):
    print("Building transform_train")
    tfm = []
    interp = INTERPOLATION_MODES[cfg.INPUT.INTERPOLATION]
    size = tuple(cfg.INPUT.SIZE)
    if "random_crop" not in choices and "random_resized_crop" not in choices:
        print(f"+ resize to {size}")
        tfm.append(T.Resize(size, interpolation=interp))
    if "random_translation" in choices:
        print("+ random translation")
        tfm.append(RandomTranslation(size, interpolation=interp))
    if "random_crop" in choices:
        pad = cfg.INPUT.CROP_PADDING
        print(f"+ random crop (padding = {pad})")
        tfm.append(T.RandomCrop(size, padding=pad))
    if "random_resized_crop" in choices:
        scale = tuple(cfg.INPUT.RRCROP_SCALE)
        print(f"+ random resized crop (size={size}, scale={scale})")
        tfm.append(T.RandomResizedCrop(size, scale=scale, interpolation=interp))
    if "random_flip" in choices:
        print("+ random flip")
        tfm.append(T.RandomHorizontalFlip())
    _add_policies(cfg, choices, tfm)
    if "colorjitter" in choices:
        b, c, s, h = (cfg.INPUT.COLORJITTER_B, cfg.INPUT.COLORJITTER_C,
                      cfg.INPUT.COLORJITTER_S, cfg.INPUT.COLORJITTER_H)
        print(f"+ color jitter (brightness={b}, contrast={c}, saturation={s}, hue={h})")
        tfm.append(T.ColorJitter(brightness=b, contrast=c, saturation=s, hue=h))
    if "randomgrayscale" in choices:
        print(f"+ random gray scale (p={cfg.INPUT.RGS_P})")
        tfm.append(T.RandomGrayscale(p=cfg.INPUT.RGS_P))
    if "gaussian_blur" in choices:
        k = cfg.INPUT.GB_K
        print(f"+ gaussian blur (kernel={k})")
        tfm.append(T.RandomApply([T.GaussianBlur(k)], p=cfg.INPUT.GB_P))
    print("+ to torch tensor of range [0, 1]")
    tfm.append(T.ToTensor())
    if "cutout" in choices:
        print(f"+ cutout (n_holes={cfg.INPUT.CUTOUT_N}, length={cfg.INPUT.CUTOUT_LEN})")
        tfm.append(Cutout(cfg.INPUT.CUTOUT_N, cfg.INPUT.CUTOUT_LEN))
    if "normalize" in choices:
        print(f"+ normalization (mean={cfg.INPUT.PIXEL_MEAN}, std={cfg.INPUT.PIXEL_STD})")
        tfm.append(normalize)
    if "gaussian_noise" in choices:
        print(f"+ gaussian noise (mean={cfg.INPUT.GN_MEAN}, std={cfg.INPUT.GN_STD})")
        tfm.append(GaussianNoise(cfg.INPUT.GN_MEAN, cfg.INPUT.GN_STD))
    if "instance_norm" in choices:
        print("+ instance normalization")
        tfm.append(InstanceNormalization())
    return T.Compose(tfm)


def _add_policies(cfg, choices, tfm):
    """Steps 6-7 of the training pipeline: AutoAugment policies, then the RandAugment variants."""
    for name, policy in (("imagenet", ImageNetPolicy), ("cifar10", CIFAR10Policy), ("svhn", SVHNPolicy)):
        if f"{name}_policy" in choices:
            print(f"+ {name} policy")
            tfm.append(policy())
    n, m = cfg.INPUT.RANDAUGMENT_N, cfg.INPUT.RANDAUGMENT_M
    if "randaugment" in choices:
        print(f"+ randaugment (n={n}, m={m})")
        tfm.append(RandAugment(n, m))
    if "randaugment_fixmatch" in choices:
        print(f"+ randaugment_fixmatch (n={n})")
        tfm.append(RandAugmentFixMatch(n))
    if "randaugment2" in choices:
        print(f"+ randaugment2 (n={n})")
        tfm.append(RandAugment2(n))


def _build_transform_test(cfg, choices, normalize):
    """Shorter side to max(SIZE), center crop SIZE, tensor (+ normalize / instance norm if listed)."""
    print("Building transform_test")
    interp = INTERPOLATION_MODES[cfg.INPUT.INTERPOLATION]
    size = tuple(cfg.INPUT.SIZE)
    print(f"+ resize the smaller edge to {max(size)}")
    print(f"+ {size[0]}x{size[1]} center crop")
    print("+ to torch tensor of range [0, 1]")
    tfm = [T.Resize(max(size), interpolation=interp), T.CenterCrop(size), T.ToTensor()]
    if "normalize" in choices:
        print(f"+ normalization (mean={cfg.INPUT.PIXEL_MEAN}, std={cfg.INPUT.PIXEL_STD})")
        tfm.append(normalize)
    if "instance_norm" in choices:
        print("+ instance normalization")
        tfm.append(InstanceNormalization())
    return T.Compose(tfm)
