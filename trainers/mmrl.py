"""MMRL: Multi-Modal Representation Learning (Guo & Gu, CVPR 2025), trainer ``MMRL``.

A shared representation space R [K, d_r] is mapped by per-layer linear aligners into both CLIP
towers and inserted after the first token (CLS / SOT) before the first listed block (``REP_LAYERS``,
1-based); each later listed block gets fresh projections at those K positions. The image tower gives
the class feature f_c (CLS through the frozen ``proj``) and the representation feature f_r (mean of
the K token outputs through the trainable ``proj_rep``).

Loss: α·CE(ℓ_c) + (1−α)·CE(ℓ_r) + λ·(1 − cos(f_c, f^zs)) + λ·(1 − cos(w, w^zs)), with frozen CLIP's
features f^zs, w^zs. Decoupled inference (``uses_fused_logits``): α·ℓ_c + (1−α)·ℓ_r on base classes,
few-shot and the ImageNet source; ℓ_c alone on novel classes and every transfer target.

Speed (same numbers as the reference): the frozen blocks 1..J−1 run without autograd, on the fixed
prompts once per run (``CACHE_TEXT_LOWER_LAYERS``); f^zs reuses this batch's blocks 1..J−1
(``SHARE_LOWER_LAYERS``); w^zs is computed once in ``build_model``. Config: ``trainers/mmrl_config.py``.
"""
import copy
from dataclasses import dataclass
from typing import Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F

from clip import layerwise, tokenize
from dassl.engine import TRAINER_REGISTRY, TrainerX

from .common.checkpoint import load_adapted_model, load_init_weights, refuse_marked_checkpoints
from .common.eval_cache import TensorCache
from .common.eval_images import install_image_cache
from .common.precision import autocast_for, check_prec, frozen_clip
from .common.templates import class_prompts, template_for
from .common.utils import (backward_and_step, finish_step, l2_normalize, register_trainable, report_trainable,
                           text_features_for_prompts)
from .mmrl_config import uses_fused_logits

__all__ = ["uses_fused_logits", "mmrl_loss",
           "RepresentationLearner", "RepresentationProjection", "MultiModalRepresentationLearner", "MMRLCLIP",
           "MMRLOutput", "MMRL", "representation_hook"]

# The registered model's name = the checkpoint folder; reference releases before June 2025 used the second.
LEARNER_NAME = "MultiModalRepresentationLearner"
REFERENCE_FOLDERS = [LEARNER_NAME, "MultiModalPromptLearner"]

# State-dict keys of the trainable tensors, as in the reference checkpoints (which also hold the frozen CLIP).
LEARNED_KEY_PREFIXES = ("representation_learner.", "image_encoder.proj_rep")

# MMRL and MMRL++ (trainers/mmrl_pp.py) save under the same folder name; a key only one of them
# writes tells their checkpoints apart, so neither trainer loads the other's weights.
CHECKPOINT_MARKERS = {"MMRL": "representation_learner.compound_rep_tokens_r2vproj.",
                      "MMRLpp": "representation_learner.srra_r2vproj."}

# CLIP's exp(logit_scale) for the released weights; MMRL uses this scale for both logit branches.
LOGIT_SCALE = 100.0

# --- Trainable modules (attribute names give the reference checkpoint keys) -------------------------

class RepresentationLearner(nn.Module):
    """The shared space R [K, d_r] and, per insertion layer, linear aligners d_r -> d_v and d_r -> d_t."""

    def __init__(self, n_tokens, rep_dim, vision_width, text_width, n_layers):
        super().__init__()
        self.compound_rep_tokens = nn.Parameter(torch.empty(n_tokens, rep_dim).normal_(std=0.02))
        # Each tower's aligners start as copies of one freshly initialised Linear (identical at init).
        to_vision = nn.Linear(rep_dim, vision_width)
        to_text = nn.Linear(rep_dim, text_width)
        self.compound_rep_tokens_r2vproj = nn.ModuleList(copy.deepcopy(to_vision) for _ in range(n_layers))
        self.compound_rep_tokens_r2tproj = nn.ModuleList(copy.deepcopy(to_text) for _ in range(n_layers))

    def forward(self):
        """Per insertion layer (in order): vision tokens [K, d_v] and text tokens [K, d_t]."""
        space = self.compound_rep_tokens
        vision = [proj(space) for proj in self.compound_rep_tokens_r2vproj]
        text = [proj(space) for proj in self.compound_rep_tokens_r2tproj]
        return vision, text


class RepresentationProjection(nn.Module):
    """P_r [d_v, D]: projects the pooled representation tokens; random init at CLIP's scale for ``proj``."""

    def __init__(self, vision_width, embed_dim):
        super().__init__()
        self.proj_rep = nn.Parameter(vision_width ** -0.5 * torch.randn(vision_width, embed_dim))

    def forward(self, pooled, frozen_proj):
        """f_r [B, D] from the pooled tokens [B, d_v]; MMRL does not use the frozen ``proj`` [d_v, D]."""
        return pooled @ self.proj_rep.to(pooled.dtype)


class MultiModalRepresentationLearner(nn.Module):
    """Everything MMRL trains (the registered model: a checkpoint holds exactly these tensors).
    ``image_encoder`` holds only ``proj_rep``, so the reference's key ``image_encoder.proj_rep`` loads."""

    def __init__(self, n_tokens, rep_dim, vision_width, text_width, embed_dim, n_layers):
        super().__init__()
        self.n_tokens = n_tokens
        self.representation_learner = RepresentationLearner(n_tokens, rep_dim, vision_width, text_width, n_layers)
        self.image_encoder = RepresentationProjection(vision_width, embed_dim)

    @classmethod
    def for_clip(cls, clip_model, n_tokens, rep_dim, n_layers):
        visual = clip_model.visual
        return cls(n_tokens, rep_dim, visual.transformer.width, clip_model.transformer.width,
                   visual.proj.shape[1], n_layers)

    @staticmethod
    def is_learned_key(key):
        """True for the trainable tensors of a (reference or own) checkpoint; the frozen CLIP is skipped."""
        return key.startswith(LEARNED_KEY_PREFIXES)


# --- The model: CLIP with representation tokens -----------------------------------------------------

def representation_hook(tokens_by_layer, first_layer, n_tokens, beta=1.0):
    """``before_block`` hook: at ``first_layer`` insert the K tokens after the first token (CLS / SOT); at
    later listed layers the K positions become β·(fresh tokens) + (1−β)·(the previous block's outputs
    there): MMRL replaces them (β = 1), MMRL++ composes them (β < 1). Other layers carry them on."""
    def before_block(i, x):  # x: [N, T, d]
        tokens = tokens_by_layer.get(i)  # [K, d]
        if tokens is None:
            return x
        if i == first_layer:
            return layerwise.insert_tokens(x, tokens, at=1)
        if beta != 1.0:  # (tokens expanded first: the gradient sums over N after the β scaling, as the reference)
            tokens = beta * tokens.to(x.dtype).expand(x.shape[0], -1, -1) + (1 - beta) * x[:, 1:1 + n_tokens]
        return layerwise.replace_tokens(x, tokens, start=1)
    return before_block


@dataclass
class MMRLOutput:
    class_logits: torch.Tensor  # ℓ_c [B, C]
    rep_logits: torch.Tensor  # ℓ_r [B, C]
    class_features: torch.Tensor  # f_c [B, D] (not normalised)
    text_features: torch.Tensor  # ŵ [C, D] (normalised)
    zero_shot_image_features: torch.Tensor = None  # frozen CLIP's f^zs [B, D] (normalised), if asked for


class MMRLCLIP(nn.Module):
    """Frozen CLIP plus the MMRL (or MMRL++, ``beta`` < 1) learner, over the fixed prompts' classes.
    Caches (``eval_cache.py``, same numbers as the direct path): ``text_lower_cache`` = blocks 1..J-1 on
    the prompts (once per run), ``eval_cache`` = vision tokens and ŵ (once per evaluation)."""

    def __init__(self, clip_model, learner: nn.Module, prompts: List[str], rep_layers: List[int],
                 share_lower_layers: bool = True, cache_text_lower_layers: bool = True, beta: float = 1.0):
        super().__init__()
        self.clip, self.learner, self.beta, self.share_lower_layers = clip_model, learner, beta, share_lower_layers
        self.rep_layers = list(rep_layers)
        self.first_layer = self.rep_layers[0]  # J
        self.n_tokens = learner.n_tokens  # K
        tokens = tokenize(prompts)
        # Positions after the last EOT cannot affect any EOT feature under the causal mask.
        self.register_buffer("prompt_tokens", tokens[:, : layerwise.prompt_length(tokens)], persistent=False)
        self.text_lower_cache = TensorCache(self, enabled=cache_text_lower_layers)
        self.eval_cache = TensorCache(self, learner=learner)

    # -- text tower --------------------------------------------------------------------------
    @torch.no_grad()
    def text_lower_states(self) -> torch.Tensor:
        """Frozen blocks 1..J-1 on the fixed prompts: [C, L, d_t]."""
        tokens = self.prompt_tokens
        x = layerwise.text_embeddings(self.clip, tokens)
        return layerwise.run_blocks(self.clip.transformer.resblocks, x,
                                    attn_mask=layerwise.causal_mask(self.clip, tokens.shape[1]),
                                    last=self.first_layer - 1)

    def encode_text(self, text_tokens_by_layer: Dict[int, torch.Tensor]) -> torch.Tensor:
        """Text features w [C, D]: blocks J.. with the K tokens after SOT, causal mask of width L + K."""
        x = self.text_lower_cache.get(self.text_lower_states)
        width = x.shape[1] + self.n_tokens
        hook = representation_hook(text_tokens_by_layer, self.first_layer, self.n_tokens, self.beta)
        eot = layerwise.eot_positions(self.prompt_tokens) + self.n_tokens  # moved K positions to the right
        x = layerwise.run_blocks(self.clip.transformer.resblocks, x, attn_mask=layerwise.causal_mask(self.clip, width),
                                 first=self.first_layer, before_block=hook, rows=layerwise.Rows(index=eot))
        return layerwise.text_head(self.clip, x, torch.zeros_like(eot))  # x: the EOT rows [C, 1, d_t]

    # -- image tower -------------------------------------------------------------------------
    @torch.no_grad()
    def image_lower_states(self, images):
        """Frozen embedding and blocks 1..J-1: [B, 1 + P, d_v]."""
        visual = self.clip.visual
        x = layerwise.image_embeddings(visual, images)
        return layerwise.run_blocks(visual.transformer.resblocks, x, last=self.first_layer - 1)

    def encode_image(self, lower_states, vision_tokens_by_layer):
        """Class feature f_c [B, D] (frozen ``proj``) and representation feature f_r [B, D] (the learner's P_r)."""
        visual = self.clip.visual
        hook = representation_hook(vision_tokens_by_layer, self.first_layer, self.n_tokens, self.beta)
        x = layerwise.run_blocks(visual.transformer.resblocks, lower_states, first=self.first_layer,
                                 before_block=hook, rows=layerwise.Rows(0, 1 + self.n_tokens))
        x = visual.ln_post(x)  # per token: CLS and the K representation tokens [B, 1 + K, d_v]
        class_features = x[:, 0] @ visual.proj
        rep_features = self.learner.image_encoder(x[:, 1:].mean(dim=1), visual.proj)
        return class_features, rep_features

    @torch.no_grad()
    def zero_shot_image_features(self, images, lower_states=None):
        """Frozen CLIP's normalised image features [B, D] (the regularisation target); with this batch's
        ``lower_states`` (blocks 1..J-1, unchanged by MMRL) only blocks J..L run again, else a full forward."""
        if lower_states is None:
            features = layerwise.encode_image(self.clip, images)
        else:
            visual = self.clip.visual
            x = layerwise.run_blocks(visual.transformer.resblocks, lower_states, first=self.first_layer,
                                     rows=layerwise.Rows(0, 1))  # CLS
            features = layerwise.image_head(visual, x)
        return l2_normalize(features)

    # -- both --------------------------------------------------------------------------------
    def representations(self):
        """The learner's vision tokens by layer and the normalised text features ŵ [C, D]."""
        vision, text = self.learner.representation_learner()
        return dict(zip(self.rep_layers, vision)), l2_normalize(self.encode_text(dict(zip(self.rep_layers, text))))

    def forward(self, images: torch.Tensor, zero_shot_target: bool = False) -> MMRLOutput:
        vision_tokens, text_features = self.eval_cache.get(self.representations)  # once per evaluation
        lower = self.image_lower_states(images)
        class_features, rep_features = self.encode_image(lower, vision_tokens)
        class_logits = LOGIT_SCALE * l2_normalize(class_features) @ text_features.t()
        rep_logits = LOGIT_SCALE * l2_normalize(rep_features) @ text_features.t()
        zero_shot = None
        if zero_shot_target:
            zero_shot = self.zero_shot_image_features(images, lower if self.share_lower_layers else None)
        return MMRLOutput(class_logits, rep_logits, class_features, text_features, zero_shot)


def fused_logits(class_logits, rep_logits, alpha):
    """α·ℓ_c + (1−α)·ℓ_r: a mix of logits, not of probabilities."""
    return alpha * class_logits.float() + (1 - alpha) * rep_logits.float()


def mmrl_loss(class_logits, rep_logits, labels, class_features, zero_shot_image_features, text_features,
              zero_shot_text_features, alpha, reg_weight):
    """The MMRL training loss and its four terms (computed in fp32).

    α·CE(ℓ_c, y) + (1−α)·CE(ℓ_r, y) + λ·(1 − mean_b cos(f_c, f^zs)) + λ·(1 − mean_c cos(w, w^zs)).
    """
    ce_class = F.cross_entropy(class_logits.float(), labels)
    ce_rep = F.cross_entropy(rep_logits.float(), labels)
    image_reg = 1 - F.cosine_similarity(class_features.float(), zero_shot_image_features.float(), dim=-1).mean()
    text_reg = 1 - F.cosine_similarity(text_features.float(), zero_shot_text_features.float(), dim=-1).mean()
    loss = alpha * ce_class + (1 - alpha) * ce_rep + reg_weight * image_reg + reg_weight * text_reg
    return loss, {"ce_class": ce_class, "ce_rep": ce_rep, "image_reg": image_reg, "text_reg": text_reg}


# --- Trainer ----------------------------------------------------------------------------------------

@TRAINER_REGISTRY.register()
class MMRL(TrainerX):
    """Trains the representation space, its aligners and ``proj_rep``; CLIP stays frozen. MMRL++
    (trainers/mmrl_pp.py) is this trainer with its own config node and learner."""

    CONFIG_NODE = "MMRL"  # cfg.TRAINER.<CONFIG_NODE>
    AUTOCAST_AT_EVAL = True  # under PREC amp, evaluation also runs under autocast

    def check_cfg(self, cfg):
        key = f"TRAINER.{self.CONFIG_NODE}"
        node = cfg.TRAINER[self.CONFIG_NODE]
        check_prec(node.PREC, f"{key}.PREC")
        uses_fused_logits(cfg)  # an unknown TASK fails here, before any data is read
        layers = list(node.REP_LAYERS)
        if not layers or layers != sorted(set(layers)) or layers[0] < 1:
            raise ValueError(f"{key}.REP_LAYERS must be increasing 1-based block indices, got {layers}")

    def build_learner(self, clip_model, node):
        n_layers = len(node.REP_LAYERS)
        return MultiModalRepresentationLearner.for_clip(clip_model, node.N_REP_TOKENS, node.REP_DIM, n_layers)

    def build_model(self):
        cfg = self.cfg
        mcfg = cfg.TRAINER[self.CONFIG_NODE]
        self.alpha = mcfg.ALPHA
        self.reg_weight = mcfg.REG_WEIGHT
        classnames = self.dm.dataset.classnames
        prompts = class_prompts(template_for(cfg.DATASET.NAME), classnames)
        print(f"Prompts (first of {len(prompts)}): {prompts[0]!r}")

        clip_model, self.prec = frozen_clip(cfg, mcfg.PREC, self.device)
        depth = min(len(clip_model.visual.transformer.resblocks), len(clip_model.transformer.resblocks))
        if mcfg.REP_LAYERS[-1] > depth:
            raise ValueError(f"TRAINER.{self.CONFIG_NODE}.REP_LAYERS {list(mcfg.REP_LAYERS)} exceed the {depth} "
                             "blocks of the backbone")

        print(f"Building {cfg.TRAINER.NAME}: λ (REG_WEIGHT) {mcfg.REG_WEIGHT}, d_r (REP_DIM) {mcfg.REP_DIM}")
        learner = self.build_learner(clip_model, mcfg)
        if self.prec == "fp16":
            learner.representation_learner.half()  # proj_rep stays fp32, cast in the forward (as the reference)
        beta = mcfg.get("BETA", 1.0)  # MMRL++'s composition weight; MMRL replaces the tokens (β = 1)
        self.model = MMRLCLIP(clip_model, learner, prompts, mcfg.REP_LAYERS, mcfg.SHARE_LOWER_LAYERS,
                              mcfg.CACHE_TEXT_LOWER_LAYERS, beta).to(self.device)
        report_trainable(self.model)
        if cfg.MODEL.INIT_WEIGHTS:
            load_init_weights(learner, cfg.MODEL.INIT_WEIGHTS)  # by name and shape, as Dassl does

        # Zero-shot text target: the frozen CLIP on the single template, once per run.
        self.zero_shot_text_features = text_features_for_prompts(self.model.clip, prompts, self.device)

        self.use_fused_logits = uses_fused_logits(cfg)
        which = "fused (α·ℓ_c + (1−α)·ℓ_r)" if self.use_fused_logits else "class-feature (ℓ_c)"
        print(f"{cfg.TRAINER.NAME} inference ({cfg.TASK}, {cfg.DATASET.NAME}, "
              f"{cfg.DATASET.SUBSAMPLE_CLASSES} classes): {which} logits")

        register_trainable(self, LEARNER_NAME, learner, self.prec)
        install_image_cache(self)  # test/val images decoded once into the eval cache (EVAL_CACHE.IMAGES)

    def autocast(self):
        return autocast_for(self.device, enabled=self.prec == "amp")

    def forward_backward(self, batch):
        images, labels = self.parse_batch_train(batch)
        with self.autocast():
            out = self.model(images, zero_shot_target=True)
        loss, _ = mmrl_loss(out.class_logits, out.rep_logits, labels, out.class_features,
                            out.zero_shot_image_features, out.text_features, self.zero_shot_text_features,
                            self.alpha, self.reg_weight)
        backward_and_step(self, loss, self.scaler)
        return finish_step(self, loss, fused_logits(out.class_logits, out.rep_logits, self.alpha), labels)

    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)

    @torch.no_grad()
    def model_inference(self, images):
        with autocast_for(self.device, enabled=self.prec == "amp" and self.AUTOCAST_AT_EVAL):
            out = self.model(images)
        if self.use_fused_logits:
            return fused_logits(out.class_logits, out.rep_logits, self.alpha)
        return out.class_logits.float()

    def load_model(self, directory, epoch=None):
        """Our checkpoints or the reference's (whole model, older folder name): trainable tensors only."""
        load_adapted_model(self, directory, epoch, folder_names={LEARNER_NAME: REFERENCE_FOLDERS},
                           keep=self.model.learner.is_learned_key,  # drops the frozen CLIP and prompt_embeddings
                           check=refuse_marked_checkpoints(self.cfg.TRAINER.NAME, CHECKPOINT_MARKERS))
