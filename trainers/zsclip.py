"""Zero-shot CLIP: one prompt per class (CoOp's per-dataset template) or a template ensemble.

Text features are computed once; test image features come from the eval cache (frozen image tower,
``trainers/common/eval_inputs.py``; off with ``EVAL_CACHE.FEATURES False``).
"""
import torch

from clip import load_clip_to_cpu
from dassl.engine import TRAINER_REGISTRY, TrainerX

from .common.eval_inputs import clip_image_features, eval_batch, install_clip_feature_cache
from .common.templates import IMAGENET_TEMPLATES_SELECT, class_prompts, template_for
from .common.utils import l2_normalize, text_features_for_prompts


@TRAINER_REGISTRY.register()
class ZeroshotCLIP(TrainerX):
    """Classifies with CLIP and ``CUSTOM_TEMPLATES[DATASET.NAME]``; registers no model."""

    def templates(self):
        return [template_for(self.cfg.DATASET.NAME)]

    def build_model(self):
        classnames = self.dm.dataset.classnames
        print(f"Loading CLIP (backbone: {self.cfg.MODEL.BACKBONE.NAME})")
        clip_model = load_clip_to_cpu(self.cfg).to(self.device)
        for p in clip_model.parameters():
            p.requires_grad_(False)

        # Text features are fixed: computed once here, never per batch.
        per_template = []
        for template in self.templates():
            prompts = class_prompts(template, classnames)
            print(f"Prompts (first of {len(prompts)}): {prompts[0]!r}")
            per_template.append(text_features_for_prompts(clip_model, prompts, self.device))
        text_features = torch.stack(per_template).mean(0)
        self.text_features = l2_normalize(text_features)
        self.clip_model = clip_model
        print("Number of trainable parameters: 0")
        install_clip_feature_cache(self, clip_model)

    def parse_batch_test(self, batch):
        return eval_batch(batch, self.device)

    @torch.no_grad()
    def model_inference(self, inputs):
        """Logits [B, C] for images [B, 3, H, W] or their cached image features [B, D]."""
        image_features = clip_image_features(self.clip_model, inputs)
        image_features = l2_normalize(image_features)
        logit_scale = self.clip_model.logit_scale.exp()
        return logit_scale * image_features @ self.text_features.t()

    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)


@TRAINER_REGISTRY.register()
class ZeroshotCLIP2(ZeroshotCLIP):
    """Prompt ensemble: the 7 selected ImageNet templates, plus the dataset's own (not for ImageNet)."""

    def templates(self):
        templates = list(IMAGENET_TEMPLATES_SELECT)
        if self.cfg.DATASET.NAME != "ImageNet":
            templates = templates + [template_for(self.cfg.DATASET.NAME)]
        return templates
