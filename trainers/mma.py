"""MMA, the Multi-Modal Adapter of Yang et al. (CVPR 2024): trainer ``MultiModalAdapter``.

Blocks ADAPTER_START..ADAPTER_END (1-based, inclusive) of both CLIP towers get a parallel branch
that reads the block input through the block's own frozen LN1 and is added after the block, on
all tokens:  out_i = block_i(x) + s * U_i(relu(S_i(relu(D_i(LN1_i(x)))))).  D/U are per tower and
per layer; S_i is one projection per layer shared by the two towers. The branch carries the
reference's gradient rescaling (adapter weights get 1/s times their plain gradient, the residual
stream the exact one). Text: the fixed prompt "<TEXT_CTX_INIT> <class>." Loss: cross-entropy.

Top to bottom: the gradient-scale operation, the adapter modules, the adapter learner (registered
as ``adapter_learner``; its state-dict keys are the reference code's), the CLIP wrapper with its
caches, the trainer. Spec: mma.md.
"""
from typing import List

import torch
import torch.nn as nn
from yacs.config import CfgNode as CN

from clip import layerwise, model_dtype, tokenize
from dassl.engine import TRAINER_REGISTRY, TrainerX

from .common.checkpoint import load_adapted_model, load_init_weights
from .common.eval_cache import TensorCache
from .common.eval_images import install_image_cache
from .common.precision import PRECISIONS, check_prec, frozen_clip
from .common.utils import cross_entropy_step, freeze_except, l2_normalize, register_trainable, report_trainable

# Registered model name = checkpoint folder, the reference code's, so its output folders load.
MODEL_NAME = "adapter_learner"
ADAPTER_LISTS = ("text_adapter", "visual_adapter", "shared_adapter")
# Buffers that depend on the class list: dropped when a checkpoint is loaded for other classes.
PROMPT_BUFFERS = ("token_embedding", "tokenized_prompts")


def add_config(cfg):
    """``TRAINER.MMADAPTER`` with the reference ``train.py`` defaults (every shipped YAML overrides START and SCALE)."""
    cfg.TRAINER.MMADAPTER = CN()
    node = cfg.TRAINER.MMADAPTER
    node.TEXT_CTX_INIT = ""  # prompt = TEXT_CTX_INIT + " " + class name + "."
    node.PREC = "amp"  # fp16, fp32 or amp
    node.ADAPTER_START = 4  # first adapted block (1-based); 0 also adapts the embeddings (slot 0)
    node.ADAPTER_END = 12  # last adapted block, inclusive
    node.ADAPTER_DIM = 32  # bottleneck width r, also the width of the shared projection
    node.ADAPTER_SCALE = 0.1  # s
    # Speed-ups that leave every number unchanged; switchable for benchmarks and equivalence tests.
    node.CACHE_FROZEN_TEXT = True  # text hidden states below ADAPTER_START computed once per run
    node.TRUNCATE_TEXT = True  # text tower runs on positions up to the longest prompt's end token
    node.CACHE_EVAL_TEXT = True  # in eval mode the text features are computed once


# Allowed values of this node's enumerated keys (checked before a run starts, trainers/config.py).
CONFIG_CHOICES = {"TRAINER.MMADAPTER.PREC": PRECISIONS}


# ---------------------------------------------------------------------------------------------
# Gradient rescaling (mma.md §6)
# ---------------------------------------------------------------------------------------------

class _ScaleGradient(torch.autograd.Function):
    """Identity in the forward pass; multiplies the incoming gradient by ``factor`` in the backward pass."""

    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


def scale_gradient(x, factor):
    return _ScaleGradient.apply(x, factor)


# ---------------------------------------------------------------------------------------------
# Adapter modules
# ---------------------------------------------------------------------------------------------

class BottleneckAdapter(nn.Module):
    """One tower's adapter at one depth: ``down`` width -> r (+ReLU) and ``up`` r -> width.

    The depth's shared projection runs between the two (``AdapterLearner.adapt``).
    """

    def __init__(self, width, bottleneck):
        super().__init__()
        self.down = nn.Sequential(nn.Linear(width, bottleneck), nn.ReLU())
        self.up = nn.Linear(bottleneck, width)


class EmptySlot(nn.Module):
    """A depth without adapters: no parameters, but unlike ``None`` it makes ``load_state_dict``
    report a checkpoint's tensors for this depth as unexpected (a different layer range)."""


def shared_projection(bottleneck):
    """S_i: Linear r -> r and ReLU, used by both towers at depth i."""
    return nn.Sequential(nn.Linear(bottleneck, bottleneck), nn.ReLU())


class AdapterLearner(nn.Module):
    """All MMA parameters plus the fixed prompt buffers; the owner of START, END and s.

    Each list has one slot per depth 0..L (13 for 12-block towers); slot i holds the adapters of
    block i, slot 0 those of the embeddings (used only when ``start`` is 0), and slots outside
    [start, end] hold an ``EmptySlot`` (no parameters, no state-dict keys). Keys therefore read
    ``text_adapter.<i>.down.0.weight``, ``text_adapter.<i>.up.bias``, ``shared_adapter.<i>.0.weight``,
    as in the reference code.
    """

    def __init__(self, clip_model, prompts: List[str], start: int, end: int, bottleneck: int, scale: float):
        super().__init__()
        depth = len(clip_model.transformer.resblocks)
        vision_depth = len(clip_model.visual.transformer.resblocks)
        if depth != vision_depth:
            raise ValueError(f"MMA needs towers of equal depth; got text {depth}, vision {vision_depth}")
        if not 0 <= start <= end <= depth:
            raise ValueError(
                f"Need 0 <= ADAPTER_START <= ADAPTER_END <= {depth}; got START {start}, END {end}")
        self.start, self.end, self.scale = start, end, scale
        adapted = range(start, end + 1)
        text_width = clip_model.transformer.width
        vision_width = clip_model.visual.transformer.width
        self.text_adapter = nn.ModuleList(
            [BottleneckAdapter(text_width, bottleneck) if i in adapted else EmptySlot() for i in range(depth + 1)])
        self.visual_adapter = nn.ModuleList(
            [BottleneckAdapter(vision_width, bottleneck) if i in adapted else EmptySlot() for i in range(depth + 1)])
        self.shared_adapter = nn.ModuleList(
            [shared_projection(bottleneck) if i in adapted else EmptySlot() for i in range(depth + 1)])
        self._init_weights()

        # The prompts are fixed: tokenised and embedded once with the frozen token embedding.
        tokens = tokenize(prompts)  # [n_cls, 77]
        with torch.no_grad():
            embedding = clip_model.token_embedding(tokens).to(model_dtype(clip_model))
        self.register_buffer("token_embedding", embedding)  # [n_cls, 77, d_t]
        self.register_buffer("tokenized_prompts", tokens)  # [n_cls, 77]

    def _init_weights(self):
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    @property
    def first_block(self) -> int:
        """The first adapted block (1-based); below it both towers are frozen CLIP."""
        return max(self.start, 1)

    def adapt(self, modality: str, i: int, z: torch.Tensor) -> torch.Tensor:
        """A^m_i(z) = U(relu(S(relu(D(z))))) for ``modality`` "text" or "visual"; ``z`` [N, tokens, width]."""
        adapter = (self.text_adapter if modality == "text" else self.visual_adapter)[i]
        return adapter.up(self.shared_adapter[i](adapter.down(z)))

    def adapt_embeddings(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """Slot 0 (START 0): x + s * A_0(x) on the embeddings, without LayerNorm or gradient rescaling."""
        return x + self.scale * self.adapt(modality, 0, x) if self.start == 0 else x

    def branch(self, modality: str, i: int, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The branch of block i on its input ``x``: s * A(LN1(x)), with the reference's gradient rescaling.

        The gradient is scaled by s on the way into LN1 and by 1/s on the way out of the scaled
        adapter output: the adapter weights get 1/s times their plain gradient while the gradient
        that reaches the residual stream through the branch is exact (the two factors cancel).
        """
        z = block.ln_1(scale_gradient(x, self.scale))
        return scale_gradient(self.scale * self.adapt(modality, i, z), 1.0 / self.scale)


def mma_prompts(prefix: str, classnames: List[str]) -> List[str]:
    """The fixed prompts "<TEXT_CTX_INIT> <class name>."."""
    return [f"{prefix} {name.replace('_', ' ')}." for name in classnames]


# ---------------------------------------------------------------------------------------------
# CLIP with the adapters wired in
# ---------------------------------------------------------------------------------------------


class MultiModalAdapterCLIP(nn.Module):
    """Frozen CLIP plus ``adapter_learner``; ``forward(images [B,3,H,W]) -> logits [B, n_cls]``.

    Caches (``trainers/common/eval_cache.py``; each switchable, same numbers as the direct path):
    ``lower_text`` holds the text hidden states entering the first adapted block (fixed prompts
    through frozen blocks: once per run), ``text_cache`` the text features in eval mode (once per
    evaluation). The text tower runs only up to the longest prompt's end-of-text position
    (``truncate_text``): under the causal mask later positions cannot affect the features. The
    vision tower below the first adapted block runs without autograd (images change every batch).
    """

    def __init__(self, clip_model, adapter_learner: AdapterLearner, truncate_text: bool = True,
                 cache_frozen_text: bool = True, cache_eval_text: bool = True):
        super().__init__()
        self.clip_model = clip_model
        self.adapter_learner = adapter_learner
        tokens = adapter_learner.tokenized_prompts
        self.text_length = layerwise.prompt_length(tokens) if truncate_text else tokens.shape[1]
        self.lower_text = TensorCache(self, enabled=cache_frozen_text)
        self.text_cache = TensorCache(self, learner=adapter_learner, enabled=cache_eval_text)

    def adapted_blocks(self, modality: str, x: torch.Tensor, attn_mask=None, rows=None) -> torch.Tensor:
        """Blocks first..L of a tower on ``x`` [N, tokens, width], with the MMA branches added up to END;
        the last block computes only the ``rows`` the head reads (``layerwise.Rows``): [N, R, width]."""
        learner = self.adapter_learner
        tower = self.clip_model if modality == "text" else self.clip_model.visual
        blocks = tower.transformer.resblocks

        def add_branch(i, x_in, x_out):
            return x_out + learner.branch(modality, i, blocks[i - 1], x_in) if i <= learner.end else x_out

        return layerwise.run_blocks(blocks, x, attn_mask, first=learner.first_block, after_block=add_branch, rows=rows)

    def text_input(self) -> torch.Tensor:
        """Prompt embeddings (slot 0 applied) plus positions: ``[n_cls, L, d_t]``."""
        x = self.adapter_learner.adapt_embeddings("text", self.adapter_learner.token_embedding[:, :self.text_length])
        return x + self.clip_model.positional_embedding[:self.text_length].to(x.dtype)

    @torch.no_grad()
    def lower_text_states(self) -> torch.Tensor:
        """Frozen text blocks below the first adapted one on the fixed prompts: ``[n_cls, L, d_t]``."""
        return layerwise.run_blocks(self.clip_model.transformer.resblocks, self.text_input(),
                                    layerwise.causal_mask(self.clip_model, self.text_length),
                                    last=self.adapter_learner.first_block - 1)

    def encode_text(self) -> torch.Tensor:
        """Text features of all class prompts, through the adapted text tower: ``[n_cls, embed_dim]``."""
        # With slot 0 the very first step trains, so nothing is frozen below the adapters.
        x = self.text_input() if self.adapter_learner.start == 0 else self.lower_text.get(self.lower_text_states)
        eot = layerwise.eot_positions(self.adapter_learner.tokenized_prompts)
        x = self.adapted_blocks("text", x, layerwise.causal_mask(self.clip_model, self.text_length),
                                rows=layerwise.Rows(index=eot))  # [n_cls, 1, d_t]: the EOT rows
        return layerwise.text_head(self.clip_model, x, torch.zeros_like(eot))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Image features through the adapted vision tower: ``[B, embed_dim]``."""
        visual = self.clip_model.visual
        with torch.no_grad():  # the stem and the blocks below the first adapted block are frozen
            x = layerwise.image_embeddings(visual, images)
            x = layerwise.run_blocks(visual.transformer.resblocks, x, last=self.adapter_learner.first_block - 1)
        x = self.adapter_learner.adapt_embeddings("visual", x)  # slot 0 on ln_pre's output
        return layerwise.image_head(visual, self.adapted_blocks("visual", x, rows=layerwise.Rows(0, 1)))  # CLS

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        text_features = self.text_cache.get(lambda: l2_normalize(self.encode_text()))  # once per evaluation
        image_features = l2_normalize(self.encode_image(images))
        return self.clip_model.logit_scale.exp() * image_features @ text_features.t()


def build_mma_clip(clip_model, classnames: List[str], node) -> MultiModalAdapterCLIP:
    """MMA's model from the ``TRAINER.MMADAPTER`` config node."""
    prompts = mma_prompts(node.TEXT_CTX_INIT, classnames)
    print(f"Prompts (first of {len(prompts)}): {prompts[0]!r}")
    learner = AdapterLearner(clip_model, prompts, node.ADAPTER_START, node.ADAPTER_END, node.ADAPTER_DIM,
                             node.ADAPTER_SCALE)
    return MultiModalAdapterCLIP(clip_model, learner, node.TRUNCATE_TEXT, node.CACHE_FROZEN_TEXT,
                                 node.CACHE_EVAL_TEXT)


# ---------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------

@TRAINER_REGISTRY.register()
class MultiModalAdapter(TrainerX):
    """MMA: trains the adapter learner with cross-entropy; CLIP stays frozen (mma.md §11)."""

    def check_cfg(self, cfg):
        check_prec(cfg.TRAINER.MMADAPTER.PREC, "TRAINER.MMADAPTER.PREC")
        if cfg.INPUT.SIZE[0] != 224:
            raise ValueError(f"MMA expects INPUT.SIZE 224 (as the reference asserts); got {cfg.INPUT.SIZE}")

    def build_model(self):
        cfg = self.cfg
        node = cfg.TRAINER.MMADAPTER
        # fp16 is OpenAI's fp16 build (mma.md §9): LayerNorms stay fp32.
        clip_model, self.prec = frozen_clip(cfg, node.PREC, self.device)

        print("Building MMA (multi-modal adapters)")
        self.model = build_mma_clip(clip_model, self.dm.dataset.classnames, node)
        if self.prec == "fp16":
            self.model.adapter_learner.half()
        freeze_except(self.model, ADAPTER_LISTS)
        report_trainable(self.model)
        if cfg.MODEL.INIT_WEIGHTS:
            self.load_init_weights(cfg.MODEL.INIT_WEIGHTS)

        self.model.to(self.device)
        learner = self.model.adapter_learner
        register_trainable(self, MODEL_NAME, learner, self.prec)
        install_image_cache(self)  # test/val images decoded once into the eval cache (EVAL_CACHE.IMAGES)

    def load_init_weights(self, path):
        """MODEL.INIT_WEIGHTS into the learner; the prompt buffers of this run's classes are kept."""
        load_init_weights(self.model.adapter_learner, path, keep_buffers=PROMPT_BUFFERS)

    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def forward_backward(self, batch):
        image, label = self.parse_batch_train(batch)
        return cross_entropy_step(self, image, label)

    def load_model(self, directory, epoch=None):
        """Ours or a reference output folder: ``<dir>/adapter_learner/model.pth.tar-<epoch>``.

        The prompt buffers belong to the training classes and are dropped; this run keeps its own.
        """
        load_adapted_model(self, directory, epoch, drop_keys=PROMPT_BUFFERS)
