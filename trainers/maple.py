"""MaPLe: Multi-modal Prompt Learning (Khattak et al., CVPR 2023), trainer ``MaPLe``.

Text: CoOp's prompt [SOT] [ctx_1..ctx_M] [rest of "<CTX_INIT> <class>." ...] with M learnable
tokens; before blocks i = 2..J the M context positions are replaced by fresh prompts T_{i-2}.
Vision: no free prompts. Every vision prompt is a linear coupling of the text prompt of the same
depth: P^v_1 = F(ctx) is appended after the patch tokens (and passes ``ln_pre``), and before blocks
i = 2..J the last M positions are replaced by P^v_i = F_{i-2}(T_{i-2}). J = ``PROMPT_DEPTH``;
blocks after J carry the prompt positions' outputs on.
Logits: exp(logit_scale) · f̂ · ŵᵀ with CLIP's frozen scale; loss: cross-entropy.

Top to bottom: config, the prompt learner (attribute names give the reference checkpoint keys),
the model that wires the prompts into CLIP through ``clip.layerwise`` hooks, the trainer.
Speed (same numbers as the reference's direct path): the text prompts do not depend on the image,
so the text tower runs once per step for all classes and once per evaluation (cached in eval mode),
on positions up to the longest prompt's end-of-text token; the frozen image stem runs without
autograd. Spec: maple.md.
"""
import copy
from typing import List, NamedTuple

import torch
import torch.nn as nn
from yacs.config import CfgNode as CN

from clip import layerwise, model_dtype, tokenize
from dassl.engine import TRAINER_REGISTRY, TrainerX
from dassl.utils import load_pretrained_weights

from .common.checkpoint import load_adapted_model
from .common.eval_cache import TensorCache
from .common.eval_images import install_image_cache
from .common.precision import PRECISIONS, check_prec, frozen_clip
from .common.utils import cross_entropy_step, l2_normalize, register_trainable, report_trainable

__all__ = ["add_config", "MultiModalPromptLearner", "MaPLePrompts", "MaPLeCLIP", "MaPLe"]

# Registered name = checkpoint folder, the reference's, so its output folders load with --model-dir.
LEARNER_NAME = "MultiModalPromptLearner"
# Class-dependent buffers of the reference checkpoints: dropped on load (ours do not save them).
PROMPT_BUFFERS = ("prompt_learner.token_prefix", "prompt_learner.token_suffix")
# The reference uses CTX_INIT only for N_CTX up to 4 (random context otherwise).
MAX_INIT_CTX = 4


def add_config(cfg):
    """``TRAINER.MAPLE`` with the reference defaults (maple.md §2)."""
    cfg.TRAINER.MAPLE = CN()
    node = cfg.TRAINER.MAPLE
    node.N_CTX = 2  # M, prompt tokens per layer and modality
    node.CTX_INIT = "a photo of a"  # initialisation phrase (used when N_CTX <= 4)
    node.PREC = "fp16"  # fp16 (reference; fp32 on a CPU), fp32 or amp
    node.PROMPT_DEPTH = 9  # J: prompts in blocks 1..J
    # Speed-ups that leave every number unchanged; switchable for benchmarks and equivalence tests.
    node.TRUNCATE_TEXT = True  # text tower on positions up to the longest prompt's end token
    node.CACHE_EVAL_TEXT = True  # in eval mode the prompts and text features are computed once


# Allowed values of this node's enumerated keys (checked before a run starts, trainers/config.py).
CONFIG_CHOICES = {"TRAINER.MAPLE.PREC": PRECISIONS}


def init_phrase_tokens(ctx_init):
    """Number of BPE tokens of the initialisation phrase (without SOT/EOT)."""
    return int(layerwise.eot_positions(tokenize([ctx_init.replace("_", " ")]))[0]) - 1


def initial_context(clip_model, n_ctx, ctx_init):
    """The block-1 context [M, d_t] (in CLIP's dtype) and the words standing for it in the prompts.

    With an init phrase (and M <= 4) the context starts as the phrase's token embeddings at
    positions 1..M, and the prompt strings keep the whole phrase: for "a photo of a" and M = 2,
    "a photo" is learnable while "of a" stays a fixed part of the suffix, so at initialisation the
    prompt is exactly "a photo of a {class}.". Otherwise N(0, 0.02²) and "X" placeholders.
    """
    dtype = model_dtype(clip_model)
    if ctx_init and n_ctx <= MAX_INIT_CTX:
        phrase = ctx_init.replace("_", " ")
        with torch.no_grad():
            ctx = clip_model.token_embedding(tokenize([phrase]))[0, 1:1 + n_ctx].to(dtype)
        return ctx, phrase
    width = clip_model.token_embedding.weight.shape[1]
    return torch.empty(n_ctx, width, dtype=dtype).normal_(std=0.02), " ".join(["X"] * n_ctx)


# ---------------------------------------------------------------------------------------------
# Prompt learner
# ---------------------------------------------------------------------------------------------

class MaPLePrompts(NamedTuple):
    """Everything the prompt learner produces for one forward pass (M tokens per depth)."""

    text: torch.Tensor  # block-1 text input without positions [C, L, d_t]: [SOT, ctx, suffix]
    visual: torch.Tensor  # shallow vision prompt P^v_1 = F(ctx) [M, d_v]
    deep_text: List[torch.Tensor]  # T_k [M, d_t], k = 0..J-2, put in before block k + 2
    deep_visual: List[torch.Tensor]  # P^v_{k+2} = F_k(T_k) [M, d_v]


class MultiModalPromptLearner(nn.Module):
    """MaPLe's learnable prompts and couplings (maple.md §3.1), for one class list.

    ``ctx`` [M, d_t] and the shallow coupling ``proj`` (d_t -> d_v) follow CLIP's dtype (fp16 in
    the reference's fp16 mode); the deep prompts ``compound_prompts_text`` [M, d_t] and their
    couplings ``compound_prompt_projections`` stay fp32 and are cast where they enter a block. The
    J - 1 deep couplings start as copies of one Linear. Buffers (class-dependent, not saved):
    ``token_prefix`` [C, 1, d_t] (SOT), ``token_suffix`` [C, 77 - 1 - M, d_t], ``tokenized_prompts``.
    """

    def __init__(self, clip_model, classnames, n_ctx, ctx_init, depth):
        super().__init__()
        dtype = model_dtype(clip_model)
        text_width = clip_model.token_embedding.weight.shape[1]
        vision_width = clip_model.visual.transformer.width
        ctx, prefix = initial_context(clip_model, n_ctx, ctx_init)
        print(f'Prompts "{prefix} {{class}}.": the first {n_ctx} tokens learnable, prompt depth {depth}')
        self.n_ctx = n_ctx
        self.proj = nn.Linear(text_width, vision_width).to(dtype)  # F, the shallow coupling
        self.ctx = nn.Parameter(ctx)
        self.compound_prompts_text = nn.ParameterList(
            nn.Parameter(torch.empty(n_ctx, text_width).normal_(std=0.02)) for _ in range(depth - 1))
        coupling = nn.Linear(text_width, vision_width)
        self.compound_prompt_projections = nn.ModuleList(copy.deepcopy(coupling) for _ in range(depth - 1))

        prompts = [f"{prefix} {name.replace('_', ' ')}." for name in classnames]
        print(f"Prompts (first of {len(prompts)}): {prompts[0]!r}")
        tokens = tokenize(prompts)  # [C, 77]
        with torch.no_grad():
            embedding = clip_model.token_embedding(tokens).to(dtype)  # [C, 77, d_t]
        self.register_buffer("token_prefix", embedding[:, :1], persistent=False)
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx:], persistent=False)
        self.register_buffer("tokenized_prompts", tokens, persistent=False)

    def forward(self, length=None):
        """The prompts of every depth; the text input cut to ``length`` positions (default 77)."""
        n_cls = self.token_prefix.shape[0]
        suffix = self.token_suffix if length is None else self.token_suffix[:, :length - 1 - self.n_ctx]
        text = torch.cat([self.token_prefix, self.ctx.unsqueeze(0).expand(n_cls, -1, -1), suffix], dim=1)
        deep_text = list(self.compound_prompts_text)
        deep_visual = [coupling(t) for coupling, t in zip(self.compound_prompt_projections, deep_text)]
        return MaPLePrompts(text, self.proj(self.ctx), deep_text, deep_visual)


# ---------------------------------------------------------------------------------------------
# CLIP with the prompts wired in
# ---------------------------------------------------------------------------------------------


def _by_block(deep_prompts):
    """Deep prompt k goes in before block k + 2 (blocks numbered from 1)."""
    return {k + 2: prompt for k, prompt in enumerate(deep_prompts)}


class MaPLeCLIP(nn.Module):
    """Frozen CLIP plus the prompt learner; ``forward(images [B, 3, H, W]) -> logits [B, C]``.

    Caches (switchable; same numbers as the direct path): in eval mode the prompts and the text
    features are computed once per evaluation (``eval_cache``). The text tower runs on the
    positions up to the longest prompt's EOT (``truncate_text``): under the causal mask later
    positions cannot affect any EOT feature.
    """

    def __init__(self, clip_model, prompt_learner, truncate_text=True, cache_eval_text=True):
        super().__init__()
        self.clip = clip_model
        self.prompt_learner = prompt_learner
        tokens = prompt_learner.tokenized_prompts
        self.text_length = layerwise.prompt_length(tokens) if truncate_text else tokens.shape[1]
        # ŵ and the vision prompts, once per evaluation (trainers/common/eval_cache.py).
        self.eval_cache = TensorCache(self, learner=prompt_learner, enabled=cache_eval_text)

    def encode_text(self, text, deep_text):
        """Text features w [C, D]: positions added to the block-1 input, T_k replaces the context before block k + 2."""
        clip_model, length = self.clip, text.shape[1]
        x = text + clip_model.positional_embedding[:length].to(text.dtype)
        hook = layerwise.replace_before_blocks(_by_block(deep_text), start=1)
        eot = layerwise.eot_positions(self.prompt_learner.tokenized_prompts)
        x = layerwise.run_blocks(clip_model.transformer.resblocks, x, layerwise.causal_mask(clip_model, length),
                                 before_block=hook, rows=layerwise.Rows(index=eot))  # the EOT rows [C, 1, d_t]
        return layerwise.text_head(clip_model, x, torch.zeros_like(eot))

    def encode_image(self, images, visual_prompt, deep_visual):
        """Image features f [B, D]: [CLS, patches, P^v_1] through ``ln_pre``; P^v_i replaces the last M
        tokens before block i."""
        visual = self.clip.visual
        with torch.no_grad():  # the stem is frozen and sees no prompt
            x = layerwise.image_embeddings(visual, images)  # after ln_pre: [B, 1 + P, d_v]
        # ln_pre acts per token, so normalising P^v_1 on its own equals normalising the joined sequence.
        prompt = visual.ln_pre(visual_prompt).to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
        x = torch.cat([x, prompt], dim=1)  # [B, 1 + P + M, d_v]
        hook = layerwise.replace_before_blocks(_by_block(deep_visual), start=-visual_prompt.shape[0])
        x = layerwise.run_blocks(visual.transformer.resblocks, x, before_block=hook, rows=layerwise.Rows(0, 1))
        return layerwise.image_head(visual, x)  # x: the CLS row [B, 1, d_v]

    def text_side(self):
        """ŵ [C, D] (normalised), P^v_1 and the deep vision prompts, from the prompt learner."""
        prompts = self.prompt_learner(self.text_length)
        text_features = l2_normalize(self.encode_text(prompts.text, prompts.deep_text))
        return text_features, prompts.visual, prompts.deep_visual

    def forward(self, images):
        text_features, visual_prompt, deep_visual = self.eval_cache.get(self.text_side)  # once per evaluation
        image_features = l2_normalize(self.encode_image(images, visual_prompt, deep_visual))
        return self.clip.logit_scale.exp() * image_features @ text_features.t()


# ---------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------

@TRAINER_REGISTRY.register()
class MaPLe(TrainerX):
    """Trains the multi-modal prompts with cross-entropy; CLIP stays frozen (maple.md §4–§8)."""

    def check_cfg(self, cfg):
        node = cfg.TRAINER.MAPLE
        check_prec(node.PREC, "TRAINER.MAPLE.PREC")
        if node.N_CTX < 1:
            raise ValueError(f"TRAINER.MAPLE.N_CTX must be at least 1, got {node.N_CTX}")
        if node.PROMPT_DEPTH < 1:
            raise ValueError(f"TRAINER.MAPLE.PROMPT_DEPTH must be at least 1 (1 = first-layer prompts only), "
                             f"got {node.PROMPT_DEPTH}")
        n_init = init_phrase_tokens(node.CTX_INIT) if node.CTX_INIT and node.N_CTX <= MAX_INIT_CTX else node.N_CTX
        if n_init < node.N_CTX:
            # The reference would take EOT and the class name's first tokens into the context.
            raise ValueError(f'TRAINER.MAPLE.CTX_INIT "{node.CTX_INIT}" has {n_init} tokens, fewer than N_CTX '
                             f'{node.N_CTX}; use a longer phrase, a smaller N_CTX or CTX_INIT ""')

    def build_model(self):
        cfg = self.cfg
        node = cfg.TRAINER.MAPLE
        if node.CTX_INIT and node.N_CTX > MAX_INIT_CTX:
            print(f"Note: CTX_INIT is ignored for N_CTX > {MAX_INIT_CTX} (as in the reference); random context")
        clip_model, self.prec = frozen_clip(cfg, node.PREC, self.device)  # ctx and proj follow CLIP's dtype
        depth = min(len(clip_model.transformer.resblocks), len(clip_model.visual.transformer.resblocks))
        if node.PROMPT_DEPTH > depth:
            raise ValueError(f"TRAINER.MAPLE.PROMPT_DEPTH {node.PROMPT_DEPTH} exceeds the {depth} blocks "
                             "of the backbone")

        print("Building MaPLe (multi-modal prompt learner)")
        learner = MultiModalPromptLearner(clip_model, self.dm.dataset.classnames, node.N_CTX, node.CTX_INIT,
                                          node.PROMPT_DEPTH)
        self.model = MaPLeCLIP(clip_model, learner, node.TRUNCATE_TEXT, node.CACHE_EVAL_TEXT).to(self.device)
        report_trainable(self.model)
        # Registered: the learner under its reference attribute name (keys "prompt_learner.*").
        registered = nn.ModuleDict({"prompt_learner": learner})
        if cfg.MODEL.INIT_WEIGHTS:
            load_pretrained_weights(registered, cfg.MODEL.INIT_WEIGHTS)  # by name and shape; buffers stay
        register_trainable(self, LEARNER_NAME, registered, self.prec)
        install_image_cache(self)  # test/val images decoded once into the eval cache (EVAL_CACHE.IMAGES)

    def forward_backward(self, batch):
        return cross_entropy_step(self, *self.parse_batch_train(batch))  # loss = CE(logits, y)

    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def load_model(self, directory, epoch=None):
        """Ours or a reference output folder (whole model): only the prompt learner's trainable tensors load."""
        load_adapted_model(self, directory, epoch,
                           keep=lambda key: key.startswith("prompt_learner.") and key not in PROMPT_BUFFERS)
