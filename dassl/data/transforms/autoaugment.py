"""AutoAugment policies (Cubuk et al., CVPR 2019) under upstream Dassl's class names.

Each class applies torchvision's ``AutoAugment`` with the matching learned policy to a PIL image;
geometric operations fill uncovered pixels with ``fillcolor``.
"""
import torchvision.transforms as T

__all__ = ["ImageNetPolicy", "CIFAR10Policy", "SVHNPolicy"]


class _LearnedPolicy:
    policy = None
    title = ""

    def __init__(self, fillcolor=(128, 128, 128)):
        self.fillcolor = fillcolor
        self._augment = T.AutoAugment(self.policy, fill=list(fillcolor))

    def __call__(self, img):
        return self._augment(img)

    def __repr__(self):
        return f"AutoAugment {self.title} Policy"


class ImageNetPolicy(_LearnedPolicy):
    """The 25 sub-policies learned on ImageNet."""

    policy = T.AutoAugmentPolicy.IMAGENET
    title = "ImageNet"


class CIFAR10Policy(_LearnedPolicy):
    """The 25 sub-policies learned on CIFAR-10."""

    policy = T.AutoAugmentPolicy.CIFAR10
    title = "CIFAR10"


class SVHNPolicy(_LearnedPolicy):
    """The 25 sub-policies learned on SVHN."""

    policy = T.AutoAugmentPolicy.SVHN
    title = "SVHN"
