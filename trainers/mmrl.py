"""MMRL: Multi-Modal Representation Learning (Guo & Gu, CVPR 2025), trainer ``MMRL``.

A small shared representation space R [K, d_r] is mapped by per-layer linear aligners into both
CLIP towers and inserted right after the first token (CLS / SOT) before the listed blocks
(``REP_LAYERS``, 1-based); at every later listed block those K positions are replaced by fresh
projections. The image tower yields the class feature f_c (CLS through the frozen ``proj``) and the
representation feature f_r (mean of the K token outputs through the trainable ``proj_rep``).

Loss: α·CE(ℓ_c) + (1−α)·CE(ℓ_r) + λ·(1 − cos(f_c, frozen CLIP image feature))
      + λ·(1 − cos(w, frozen CLIP text feature)).
Inference is decoupled (``uses_fused_logits``): fused logits α·ℓ_c + (1−α)·ℓ_r on base classes, few-shot
and the ImageNet source; class logits ℓ_c alone on novel classes and every transfer target.

Speed (same numbers as the reference's direct path): blocks 1..J−1 are frozen and run without
autograd; on the fixed prompts they run once per run (``CACHE_TEXT_LOWER_LAYERS``); the frozen
zero-shot image target reuses this batch's blocks 1..J−1 instead of a second full CLIP forward
(``SHARE_LOWER_LAYERS``); the zero-shot text target is computed once in ``build_model``.
"""
import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from clip import layerwise, load_clip_to_cpu, tokenize
from dassl.engine import TRAINER_REGISTRY, TrainerX
from dassl.metrics import compute_accuracy
from dassl.optim import build_lr_scheduler, build_optimizer

from .common.checkpoint import load_adapted_model
from .common.eval_inputs import install_image_cache
from .common.templates import class_prompts, template_for
from .common.precision import PRECISIONS, autocast_for, check_prec, make_grad_scaler, run_precision, to_openai_fp16
from .common.utils import backward_and_step, report_trainable, text_features_for_prompts

__all__ = [
    "add_config", "CONFIG_CHOICES", "apply_dataset_overrides", "uses_fused_logits", "mmrl_loss", "RepresentationLearner",
    "RepresentationProjection", "MultiModalRepresentationLearner", "MMRLCLIP", "MMRLOutput", "MMRL",
    "representation_hook", "refuse_other_method",
]

# The registered model's name = the checkpoint folder; reference releases before June 2025 used the second.
LEARNER_NAME = "MultiModalRepresentationLearner"
REFERENCE_FOLDERS = [LEARNER_NAME, "MultiModalPromptLearner"]

# State-dict keys of the trainable tensors, as in the reference checkpoints (which also hold the frozen CLIP).
LEARNED_KEY_PREFIXES = ("representation_learner.", "image_encoder.proj_rep")

# MMRL and MMRL++ (trainers/mmrl_pp.py) save under the same folder name; a key only one of them
# writes tells their checkpoints apart, so neither trainer loads the other's weights.
CHECKPOINT_MARKERS = {
    "MMRL": "representation_learner.compound_rep_tokens_r2vproj.",
    "MMRLpp": "representation_learner.srra_r2vproj.",
}

# CLIP's exp(logit_scale) for the released weights; MMRL uses this scale for both logit branches.
LOGIT_SCALE = 100.0

TASKS = ("B2N", "CD", "FS")

# Reference per-dataset settings (not task-dependent): they beat the YAML and lose to command-line opts.
REG_WEIGHT_BY_DATASET = {
    "StanfordCars": 7.0, "FGVCAircraft": 6.0, "SUN397": 6.0, "DescribableTextures": 6.0, "Food101": 5.0,
    "OxfordFlowers": 4.0, "UCF101": 3.0, "ImageNet": 0.5, "Caltech101": 0.5, "OxfordPets": 0.2, "EuroSAT": 0.01,
}
REP_DIM_BY_DATASET = {"EuroSAT": 2048}


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------

def add_config(cfg):
    """``TRAINER.MMRL`` with the reference defaults (the YAMLs set the working values)."""
    cfg.TRAINER.MMRL = CN()
    cfg.TRAINER.MMRL.ALPHA = 0.7  # weight of ℓ_c in the CE terms and in the fused logits
    cfg.TRAINER.MMRL.REG_WEIGHT = 1.0  # λ of both cosine regularisers
    cfg.TRAINER.MMRL.REP_LAYERS = []  # 1-based blocks where the representation tokens are (re)inserted
    cfg.TRAINER.MMRL.REP_DIM = 512  # d_r, width of the shared representation space
    cfg.TRAINER.MMRL.N_REP_TOKENS = 5  # K
    cfg.TRAINER.MMRL.PREC = "fp16"  # fp16, fp32 or amp
    # Speed switches (project keys; both give the same numbers as the reference's direct path).
    cfg.TRAINER.MMRL.SHARE_LOWER_LAYERS = True  # zero-shot image target reuses blocks 1..J-1 of the batch
    cfg.TRAINER.MMRL.CACHE_TEXT_LOWER_LAYERS = True  # text blocks 1..J-1 on the fixed prompts once per run


# Allowed values of this node's enumerated keys (checked before a run starts, trainers/config.py).
CONFIG_CHOICES = {"TRAINER.MMRL.PREC": PRECISIONS, "TASK": TASKS}


def apply_dataset_overrides(cfg):
    """MMRL's per-dataset λ (and EuroSAT's d_r); called after the YAMLs and flags, before the opts."""
    if cfg.TRAINER.NAME != "MMRL":
        return
    name = cfg.DATASET.NAME
    if name in REG_WEIGHT_BY_DATASET:
        cfg.TRAINER.MMRL.REG_WEIGHT = REG_WEIGHT_BY_DATASET[name]
    if name in REP_DIM_BY_DATASET:
        cfg.TRAINER.MMRL.REP_DIM = REP_DIM_BY_DATASET[name]
    if name in REG_WEIGHT_BY_DATASET or name in REP_DIM_BY_DATASET:
        print(f"MMRL settings for {name}: REG_WEIGHT {cfg.TRAINER.MMRL.REG_WEIGHT}, REP_DIM {cfg.TRAINER.MMRL.REP_DIM}")


def uses_fused_logits(cfg):
    """Decoupled inference: True where the fused logits are evaluated, False for ℓ_c alone."""
    task = cfg.TASK
    if task == "B2N":
        return cfg.DATASET.SUBSAMPLE_CLASSES == "base"
    if task == "FS":
        return True
    if task == "CD":
        return cfg.DATASET.NAME == "ImageNet"  # the source; every other dataset is a transfer target
    raise ValueError("The TASK must be either B2N, CD, or FS.")


# ---------------------------------------------------------------------------------------------
# Trainable modules (attribute names give the reference checkpoint keys)
# ---------------------------------------------------------------------------------------------

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
    """Everything MMRL trains; the registered model, so a checkpoint holds exactly these tensors.

    ``image_encoder`` holds only ``proj_rep``: in the reference it is an attribute of the image
    encoder, and the key ``image_encoder.proj_rep`` lets reference checkpoints load unchanged.
    """

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


def refuse_other_method(trainer_name):
    """A ``check`` for ``load_adapted_model``: one clear error for the other method's checkpoint."""
    def check(name, state_dict, path):
        for other, marker in CHECKPOINT_MARKERS.items():
            if other != trainer_name and any(k.startswith(marker) for k in state_dict):
                raise RuntimeError(f'"{path}" is a checkpoint of trainer {other} (keys {marker}*), not {trainer_name}: '
                                   f"evaluate it with --trainer {other}, or give a {trainer_name} output folder")
    return check


# ---------------------------------------------------------------------------------------------
# The model: CLIP with representation tokens
# ---------------------------------------------------------------------------------------------

def representation_hook(tokens_by_layer, first_layer, n_tokens, beta=1.0):
    """``before_block`` hook: put the K tokens right after the first token (CLS / SOT).

    At ``first_layer`` they are inserted; at every later listed layer the K positions become
    β·(fresh tokens) + (1−β)·(the previous block's outputs there): MMRL replaces them (β = 1),
    MMRL++ composes them (β < 1). Layers not listed carry the tokens on.
    """
    def before_block(i, x):  # x: [N, T, d]
        tokens = tokens_by_layer.get(i)
        if tokens is None:
            return x
        tokens = tokens.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)  # [N, K, d]
        if i == first_layer:
            return torch.cat([x[:, :1], tokens, x[:, 1:]], dim=1)
        if beta != 1.0:
            tokens = beta * tokens + (1 - beta) * x[:, 1:1 + n_tokens]
        # One copy of x (and of its gradient); a cat of slices would zero-fill two full gradients.
        return x.slice_scatter(tokens, dim=1, start=1, end=1 + n_tokens)
    return before_block


def _normalize(x):
    return x / x.norm(dim=-1, keepdim=True)


def _autocast_key(device):
    """The autocast state the text cache was computed under (its numbers depend on it)."""
    kind = device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None


@dataclass
class MMRLOutput:
    class_logits: torch.Tensor  # ℓ_c [B, C]
    rep_logits: torch.Tensor  # ℓ_r [B, C]
    class_features: torch.Tensor  # f_c [B, D] (not normalised)
    text_features: torch.Tensor  # ŵ [C, D] (normalised)
    zero_shot_image_features: torch.Tensor = None  # frozen CLIP's f^zs [B, D] (normalised), if asked for


class MMRLCLIP(nn.Module):
    """Frozen CLIP plus the MMRL (or MMRL++) learner; classifies images among the fixed prompts' classes.

    ``beta``: weight of the fresh tokens at listed layers after the first (1 for MMRL, ``representation_hook``).
    """

    def __init__(self, clip_model, learner, prompts, rep_layers, share_lower_layers=True,
                 cache_text_lower_layers=True, beta=1.0):
        super().__init__()
        self.clip = clip_model
        self.learner = learner
        self.rep_layers = list(rep_layers)
        self.first_layer = self.rep_layers[0]  # J
        self.n_tokens = learner.n_tokens  # K
        self.beta = beta
        self.share_lower_layers = share_lower_layers
        self.cache_text_lower_layers = cache_text_lower_layers
        tokens = tokenize(prompts)
        # Positions after the last EOT cannot affect any EOT feature under the causal mask.
        self.register_buffer("prompt_tokens", tokens[:, : layerwise.prompt_length(tokens)], persistent=False)
        self._text_lower_cache = {}  # autocast state -> [C, L, d_t]
        self._eval_cache = None  # (vision tokens by layer, ŵ) while the learner is in eval mode

    def clear_eval_cache(self):
        self._eval_cache = None

    # -- text tower --------------------------------------------------------------------------
    @torch.no_grad()
    def text_lower_states(self):
        """Frozen blocks 1..J-1 on the fixed prompts: [C, L, d_t]; cached when enabled."""
        key = _autocast_key(self.prompt_tokens.device)
        if self.cache_text_lower_layers and key in self._text_lower_cache:
            return self._text_lower_cache[key]
        tokens = self.prompt_tokens
        x = layerwise.text_embeddings(self.clip, tokens)
        x = layerwise.run_blocks(self.clip.transformer.resblocks, x,
                                 attn_mask=layerwise.causal_mask(self.clip, tokens.shape[1]), last=self.first_layer - 1)
        if self.cache_text_lower_layers:
            self._text_lower_cache[key] = x
        return x

    def encode_text(self, text_tokens_by_layer):
        """Text features w [C, D]: blocks J.. with the K tokens after SOT, causal mask of width L + K."""
        x = self.text_lower_states()
        width = x.shape[1] + self.n_tokens
        hook = representation_hook(text_tokens_by_layer, self.first_layer, self.n_tokens, self.beta)
        x = layerwise.run_blocks(self.clip.transformer.resblocks, x, attn_mask=layerwise.causal_mask(self.clip, width),
                                 first=self.first_layer, before_block=hook)
        # The EOT token moved K positions to the right.
        return layerwise.text_head(self.clip, x, layerwise.eot_positions(self.prompt_tokens) + self.n_tokens)

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
        x = layerwise.run_blocks(visual.transformer.resblocks, lower_states, first=self.first_layer, before_block=hook)
        x = visual.ln_post(x[:, : 1 + self.n_tokens])  # per token: CLS and the K representation tokens
        class_features = x[:, 0] @ visual.proj
        rep_features = self.learner.image_encoder(x[:, 1:].mean(dim=1), visual.proj)
        return class_features, rep_features

    @torch.no_grad()
    def zero_shot_image_features(self, images, lower_states=None):
        """Frozen CLIP's normalised image features [B, D] (the regularisation target).

        With ``lower_states`` (this batch's blocks 1..J-1, which MMRL leaves unchanged) only
        blocks J..L run again; otherwise a full separate forward, as the reference does.
        """
        if lower_states is None:
            features = layerwise.encode_image(self.clip, images)
        else:
            visual = self.clip.visual
            x = layerwise.run_blocks(visual.transformer.resblocks, lower_states, first=self.first_layer)
            features = layerwise.image_head(visual, x)
        return _normalize(features)

    # -- both --------------------------------------------------------------------------------
    def tokens_and_text_features(self):
        """Vision tokens by layer and ŵ [C, D]; computed once while the learner is in eval mode."""
        if not self.learner.training and self._eval_cache is not None:
            return self._eval_cache
        vision, text = self.learner.representation_learner()
        vision_by_layer = dict(zip(self.rep_layers, vision))
        text_features = _normalize(self.encode_text(dict(zip(self.rep_layers, text))))
        if self.learner.training:
            self._eval_cache = None  # the learner changes from now on
        else:
            self._eval_cache = ({i: t.detach() for i, t in vision_by_layer.items()}, text_features.detach())
        return vision_by_layer, text_features

    def forward(self, images, zero_shot_target=False):
        vision_by_layer, text_features = self.tokens_and_text_features()
        lower = self.image_lower_states(images)
        class_features, rep_features = self.encode_image(lower, vision_by_layer)
        class_logits = LOGIT_SCALE * _normalize(class_features) @ text_features.t()
        rep_logits = LOGIT_SCALE * _normalize(rep_features) @ text_features.t()
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


# ---------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------

@TRAINER_REGISTRY.register()
class MMRL(TrainerX):
    """Trains the representation space, its aligners and ``proj_rep``; CLIP stays frozen.

    MMRL++ (trainers/mmrl_pp.py) is this trainer with its own config node and learner.
    """

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

    def build_learner(self, clip_model, mcfg):
        return MultiModalRepresentationLearner.for_clip(clip_model, mcfg.N_REP_TOKENS, mcfg.REP_DIM,
                                                        len(mcfg.REP_LAYERS))

    def build_model(self):
        cfg = self.cfg
        mcfg = cfg.TRAINER[self.CONFIG_NODE]
        self.prec = run_precision(mcfg.PREC, self.device, cfg.TRAINER.NAME)
        self.alpha = mcfg.ALPHA
        self.reg_weight = mcfg.REG_WEIGHT
        classnames = self.dm.dataset.classnames
        prompts = class_prompts(template_for(cfg.DATASET.NAME), classnames)
        print(f"Prompts (first of {len(prompts)}): {prompts[0]!r}")

        print(f"Loading CLIP (backbone: {cfg.MODEL.BACKBONE.NAME})")
        clip_model = load_clip_to_cpu(cfg)
        depth = min(len(clip_model.visual.transformer.resblocks), len(clip_model.transformer.resblocks))
        if mcfg.REP_LAYERS[-1] > depth:
            raise ValueError(f"TRAINER.{self.CONFIG_NODE}.REP_LAYERS {list(mcfg.REP_LAYERS)} exceed the {depth} "
                             "blocks of the backbone")
        for p in clip_model.parameters():
            p.requires_grad_(False)
        if self.prec == "fp16":
            to_openai_fp16(clip_model)

        print(f"Building {cfg.TRAINER.NAME}")
        learner = self.build_learner(clip_model, mcfg)
        if self.prec == "fp16":
            learner.representation_learner.half()  # proj_rep stays fp32, cast in the forward (as the reference)
        beta = mcfg.get("BETA", 1.0)  # MMRL++'s composition weight; MMRL replaces the tokens (β = 1)
        self.model = MMRLCLIP(clip_model, learner, prompts, mcfg.REP_LAYERS, mcfg.SHARE_LOWER_LAYERS,
                              mcfg.CACHE_TEXT_LOWER_LAYERS, beta).to(self.device)
        report_trainable(self.model)

        # Zero-shot text target: the frozen CLIP on the single template, once per run.
        self.zero_shot_text_features = text_features_for_prompts(self.model.clip, prompts, self.device)

        self.use_fused_logits = uses_fused_logits(cfg)
        which = "fused (α·ℓ_c + (1−α)·ℓ_r)" if self.use_fused_logits else "class-feature (ℓ_c)"
        print(f"{cfg.TRAINER.NAME} inference ({cfg.TASK}, {cfg.DATASET.NAME}, "
              f"{cfg.DATASET.SUBSAMPLE_CLASSES} classes): {which} logits")

        self.optim = build_optimizer(learner, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model(LEARNER_NAME, learner, self.optim, self.sched)
        self.scaler = make_grad_scaler(self.prec, self.device)
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
        logits = fused_logits(out.class_logits, out.rep_logits, self.alpha)
        # Tensors: the engine's meters read them at the next log line, not at every step.
        summary = {"loss": loss.detach(), "acc": compute_accuracy(logits, labels)[0]}
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return summary

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
                           check=refuse_other_method(self.cfg.TRAINER.NAME))
        self.model.clear_eval_cache()
