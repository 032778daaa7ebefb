"""CoCoOp, Conditional Prompt Learning (Zhou et al., CVPR 2022): trainer ``CoCoOp``.

CoOp's context (shared by all classes, class tokens at the end) plus a Meta-Net h (Linear 512 -> 32,
ReLU, Linear 32 -> 512) that turns each image's normalised feature into one bias pi(x) = h(f^(x)),
added to every context vector. The prompt of class c for image x is
    t_c(x) = [SOT] V_1 + pi(x) .. V_M + pi(x) [class c tokens] [.] [EOT],
so every image has its own C text features, and logits_c(x) = exp(logit_scale) * cos(f(x), g(t_c(x))).
Loss: cross-entropy (computed by the trainer; the reference's model returns it in training mode).

Top to bottom: the Meta-Net, the conditional prompt learner (CoOp's, trainers/coop.py, plus the
Meta-Net; registered as ``prompt_learner`` with the reference's keys), the model, the trainer.
Spec: cocoop.md.

Speed, with the same numbers: the reference stacks the prompts of the whole batch as
[B, C, 77, 512] and runs the text tower image by image. Here the tower runs on the prompts of
several images at once (up to PROMPTS_PER_CALL sequences per call, whole images), cut after the
longest prompt's end-of-text token (later positions cannot matter under the causal mask), so
neither the full-length stack nor one call per image is needed. The image tower runs without autograd;
it is frozen and unprompted, so test features come from the eval cache (``EVAL_CACHE.FEATURES``).
"""
from collections import OrderedDict

import torch
import torch.nn as nn
from yacs.config import CfgNode as CN

from clip.layerwise import encode_text_embeddings, eot_positions, prompt_length
from dassl.engine import TRAINER_REGISTRY

from .common.precision import PRECISIONS, check_prec, frozen_clip
from .common.trainer import CrossEntropyTrainer
from .coop import (
    PromptLearner, frozen_image_features, l2_normalize, load_prompt_learner, setup_prompt_learner,
)

__all__ = ["add_config", "meta_net", "ConditionalPromptLearner", "CoCoOpCLIP", "CoCoOp"]


def add_config(cfg):
    """``TRAINER.COCOOP`` with the reference defaults, plus the project's speed switches."""
    cfg.TRAINER.COCOOP = CN()
    node = cfg.TRAINER.COCOOP
    node.N_CTX = 16  # M (ignored when CTX_INIT is set: M is then its word count)
    node.CTX_INIT = ""  # initialisation words; the shipped configs use "a photo of a"
    node.PREC = "fp16"  # fp16, fp32 or amp
    # Speed switches that leave every number unchanged (for benchmarks and equivalence tests).
    node.TRUNCATE_TEXT = True  # text tower up to the longest prompt's end-of-text token
    node.PROMPTS_PER_CALL = 8192  # prompt sequences per text-tower call (whole images, at least one)


# Allowed values of this node's enumerated keys (checked before a run starts, trainers/config.py).
CONFIG_CHOICES = {"TRAINER.COCOOP.PREC": PRECISIONS}


# ---------------------------------------------------------------------------------------------
# Meta-Net and the conditional prompt learner
# ---------------------------------------------------------------------------------------------

def meta_net(image_dim, ctx_dim):
    """h: Linear(image_dim -> image_dim // 16), ReLU, Linear(-> ctx_dim); the reference's layer names."""
    hidden = image_dim // 16
    return nn.Sequential(OrderedDict([
        ("linear1", nn.Linear(image_dim, hidden)),
        ("relu", nn.ReLU(inplace=True)),
        ("linear2", nn.Linear(hidden, ctx_dim)),
    ]))


class ConditionalPromptLearner(PromptLearner):
    """CoOp's shared context ``ctx`` [M, d] and class buffers, plus ``meta_net`` (in CLIP's dtype)."""

    def __init__(self, clip_model, classnames, n_ctx, ctx_init=""):
        super().__init__(clip_model, classnames, n_ctx, ctx_init)
        self.meta_net = meta_net(clip_model.visual.output_dim, self.ctx.shape[-1]).to(self.ctx.dtype)

    def conditional_context(self, image_features):
        """V_m + pi(x) for normalised image features [B, D]: [B, M, d]."""
        bias = self.meta_net(image_features)  # pi [B, d]
        return self.ctx.unsqueeze(0) + bias.unsqueeze(1)


# ---------------------------------------------------------------------------------------------
# CLIP with image-conditional prompts
# ---------------------------------------------------------------------------------------------

class CoCoOpCLIP(nn.Module):
    """Frozen CLIP plus ``prompt_learner``; ``forward(images [B, 3, H, W]) -> logits [B, C]``."""

    def __init__(self, clip_model, prompt_learner, truncate_text=True, prompts_per_call=8192):
        super().__init__()
        self.clip_model = clip_model
        self.prompt_learner = prompt_learner
        tokens = prompt_learner.tokenized_prompts
        self.text_length = prompt_length(tokens) if truncate_text else tokens.shape[1]
        self.images_per_call = max(1, prompts_per_call // prompt_learner.n_cls)

    def text_features(self, ctx):
        """Normalised g(t_c(x)) [B, C, D] for per-image contexts ``ctx`` [B, M, d].

        The C prompts of ``images_per_call`` images go through the text tower together.
        """
        learner = self.prompt_learner
        eot = eot_positions(learner.tokenized_prompts)  # [C]
        features = []
        for chunk in ctx.split(self.images_per_call):
            prompts = learner.assemble(chunk.unsqueeze(1), self.text_length)  # [b, C, L, d]
            b, n_cls, length, width = prompts.shape
            x = encode_text_embeddings(self.clip_model, prompts.reshape(b * n_cls, length, width), eot.repeat(b))
            features.append(x.view(b, n_cls, -1))
        return l2_normalize(torch.cat(features))

    def forward(self, images):
        """``images`` [B, 3, H, W], or their cached CLIP image features [B, D] (evaluation) -> logits [B, C]."""
        image_features = frozen_image_features(self.clip_model, images)  # f^ [B, D]
        ctx = self.prompt_learner.conditional_context(image_features)  # [B, M, d]
        text_features = self.text_features(ctx)  # [B, C, D]
        logits = (text_features @ image_features.unsqueeze(-1).to(text_features.dtype)).squeeze(-1)
        return self.clip_model.logit_scale.exp() * logits


# ---------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------

@TRAINER_REGISTRY.register()
class CoCoOp(CrossEntropyTrainer):
    """CoCoOp: trains the context and the Meta-Net with cross-entropy; CLIP stays frozen (cocoop.md §4-§6)."""

    def check_cfg(self, cfg):
        node = cfg.TRAINER.COCOOP
        check_prec(node.PREC, "TRAINER.COCOOP.PREC")
        if not node.CTX_INIT and node.N_CTX < 1:
            raise ValueError(f"TRAINER.COCOOP.N_CTX must be at least 1 (or set CTX_INIT), got {node.N_CTX}")
        if node.PROMPTS_PER_CALL < 1:
            raise ValueError(f"TRAINER.COCOOP.PROMPTS_PER_CALL must be at least 1, got {node.PROMPTS_PER_CALL}")

    def build_model(self):
        cfg = self.cfg
        node = cfg.TRAINER.COCOOP
        clip_model, self.prec = frozen_clip(cfg, node.PREC, self.device)
        print("Building CoCoOp (prompt learner with Meta-Net)")
        learner = ConditionalPromptLearner(clip_model, self.dm.dataset.classnames, node.N_CTX, node.CTX_INIT)
        self.model = CoCoOpCLIP(clip_model, learner, node.TRUNCATE_TEXT, node.PROMPTS_PER_CALL)
        setup_prompt_learner(self, learner)

    def forward_backward(self, batch):
        return {"loss": super().forward_backward(batch)["loss"]}  # the reference logs the loss only

    def load_model(self, directory, epoch=None):
        load_prompt_learner(self, directory, epoch)
