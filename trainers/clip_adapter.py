"""CLIP-Adapter (Gao et al., 2021): trainer ``CLIP_Adapter``.

A bottleneck MLP on CLIP's image feature, blended with the raw (unnormalised) feature:
f' = RATIO * A(f) + (1 - RATIO) * f with A = Linear(c -> c/REDUCTION) -> ReLU -> Linear(-> c) -> ReLU,
no biases. The classifier is the frozen CLIP text feature of CoOp's per-dataset template. Logits are
exp(logit_scale) * cos(f', W); loss cross-entropy. Only the adapter trains (registered as
``clip_adapter``). Spec: clip_adapter.md.

Training images are augmented (random resized crop, flip), so training image features are not
cached; the text classifier is fixed and computed once; test image features come from the eval
cache (``trainers/common/eval_inputs.py``; off with ``EVAL_CACHE.FEATURES False``).
"""
import torch
import torch.nn as nn
from yacs.config import CfgNode as CN

from dassl.engine import TRAINER_REGISTRY
from dassl.utils import load_pretrained_weights

from .common.checkpoint import load_adapted_model
from .common.eval_inputs import clip_image_features, install_clip_feature_cache
from .common.precision import PRECISIONS, check_prec, frozen_clip
from .common.templates import class_prompts, template_for
from .common.trainer import CrossEntropyTrainer
from .common.utils import freeze_except, l2_normalize, register_trainable, report_trainable, text_features_for_prompts

MODEL_NAME = "clip_adapter"


def add_config(cfg):
    """``TRAINER.CLIP_ADAPTER``: the reference hard-codes ratio 0.2 and reduction 4."""
    cfg.TRAINER.CLIP_ADAPTER = CN()
    node = cfg.TRAINER.CLIP_ADAPTER
    node.RATIO = 0.2  # alpha: weight of the adapter output in the blend with the raw image feature
    node.REDUCTION = 4  # bottleneck width = embedding width / REDUCTION
    node.PREC = "fp32"  # fp16, fp32 or amp
    node.CACHE_TEXT_FEATURES = True  # False: recompute the (fixed) text classifier in every forward


# Allowed values of this node's enumerated keys (checked before a run starts, trainers/config.py).
CONFIG_CHOICES = {"TRAINER.CLIP_ADAPTER.PREC": PRECISIONS}


class Adapter(nn.Module):
    """``fc``: Linear(c -> c/reduction) -> ReLU -> Linear(c/reduction -> c) -> ReLU, no biases; [B, c] -> [B, c]."""

    def __init__(self, width, reduction):
        super().__init__()
        hidden = width // reduction
        self.fc = nn.Sequential(
            nn.Linear(width, hidden, bias=False),
            nn.ReLU(),
            nn.Linear(hidden, width, bias=False),
            nn.ReLU(),
        )

    def forward(self, x):
        return self.fc(x)


class AdapterCLIP(nn.Module):
    """Frozen CLIP, the visual adapter and the fixed text classifier; ``forward(images) -> logits [B, n_cls]``.

    ``prompts``: one per class; ``ratio``: the adapter's weight in the blend; ``reduction``: the
    bottleneck factor; ``cache_text_features`` False recomputes the classifier in every forward.
    """

    def __init__(self, clip_model, prompts, ratio=0.2, reduction=4, cache_text_features=True):
        super().__init__()
        self.clip_model = clip_model
        # c comes from the backbone (512 for ViT-B/16, 1024 for RN50); the reference hard-codes 1024.
        self.adapter = Adapter(clip_model.visual.output_dim, reduction)
        self.ratio = ratio
        self.prompts = prompts
        self.cache_text_features = cache_text_features
        self._text_features = None

    def text_features(self):
        """Normalised text features [n_cls, embed_dim] of the class prompts (frozen CLIP, CLIP's precision).

        Computed outside autocast, so that the cached and the per-forward classifier are the same.
        """
        if self._text_features is not None:
            return self._text_features
        device = self.clip_model.logit_scale.device
        with torch.autocast(device.type, enabled=False):
            features = text_features_for_prompts(self.clip_model, self.prompts, device)
        if self.cache_text_features:
            self._text_features = features
        return features

    def forward(self, images):
        """``images`` [B, 3, H, W], or their cached CLIP image features [B, D] (evaluation) -> logits."""
        with torch.no_grad():  # CLIP is frozen; only the adapter needs autograd
            image_features = clip_image_features(self.clip_model, images)
        blended = self.ratio * self.adapter(image_features) + (1 - self.ratio) * image_features
        blended = l2_normalize(blended)
        logit_scale = self.clip_model.logit_scale.exp()
        return logit_scale * blended @ self.text_features().t()


@TRAINER_REGISTRY.register()
class CLIP_Adapter(CrossEntropyTrainer):
    """CLIP-Adapter: trains the visual adapter with cross-entropy (clip_adapter.md §4)."""

    def check_cfg(self, cfg):
        check_prec(cfg.TRAINER.CLIP_ADAPTER.PREC, "TRAINER.CLIP_ADAPTER.PREC")

    def build_model(self):
        cfg = self.cfg
        node = cfg.TRAINER.CLIP_ADAPTER
        clip_model, self.prec = frozen_clip(cfg, node.PREC, self.device)
        print("Building CLIP-Adapter")
        prompts = class_prompts(template_for(cfg.DATASET.NAME), self.dm.dataset.classnames)
        print(f"Prompts (first of {len(prompts)}): {prompts[0]!r}")
        self.model = AdapterCLIP(clip_model, prompts, node.RATIO, node.REDUCTION, node.CACHE_TEXT_FEATURES)
        if self.prec == "fp16":
            self.model.adapter.half()  # trained in CLIP's dtype, as the CoOp family's fp16 mode does
        freeze_except(self.model, ["adapter"])
        report_trainable(self.model)
        if cfg.MODEL.INIT_WEIGHTS:
            load_pretrained_weights(self.model.adapter, cfg.MODEL.INIT_WEIGHTS)

        self.model.to(self.device)
        register_trainable(self, MODEL_NAME, self.model.adapter, self.prec)
        install_clip_feature_cache(self, clip_model)

    def load_model(self, directory, epoch=None):
        """``<dir>/clip_adapter/model.pth.tar-<epoch>``; the adapter does not depend on the class list.

        ``token_prefix``/``token_suffix`` are dropped as the reference does (CoOp leftovers, normally absent).
        """
        load_adapted_model(self, directory, epoch, drop_keys=("token_prefix", "token_suffix"))
