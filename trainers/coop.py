"""CoOp, Context Optimization (Zhou et al., IJCV 2022): trainer ``CoOp``.

M learned context vectors V_1..V_M in CLIP's token-embedding space take the place of a prompt's
hand-written words. The prompt of class c is  t_c = [SOT] V_1 .. V_M [class c tokens] [.] [EOT]
(class tokens at the end, or in the middle / at the front of the context), and the logits are
CLIP's: exp(logit_scale) * cos(f(x), g(t_c)) with the frozen image and text towers f, g. The
context is shared by all classes, or one set per class (CSC). Loss: cross-entropy.

Top to bottom: the prompt learner (registered as ``prompt_learner``; its state-dict keys are the
reference code's, so reference output folders load), the model that feeds its prompts through
CLIP's text tower, and the trainer. CoCoOp (trainers/cocoop.py) builds on the same prompt learner
and trainer pieces. Spec: coop.md.

Speed, with the same numbers: the prompts do not depend on the image, so the text tower runs once
per training step for all classes and once per evaluation (cached while the learner is in eval
mode); it runs only up to the longest prompt's end-of-text token (later positions cannot matter
under the causal mask); the frozen image tower runs without autograd, and at evaluation its test
features come from the eval cache (``trainers/common/eval_inputs.py``; ``EVAL_CACHE.FEATURES``).
"""
import warnings

import torch
import torch.nn as nn
from yacs.config import CfgNode as CN

from clip import model_dtype, tokenize
from clip.layerwise import encode_text_embeddings, eot_positions, prompt_length
from dassl.engine import TRAINER_REGISTRY

from .common.checkpoint import load_adapted_model, load_init_weights
from .common.eval_cache import TensorCache
from .common.eval_inputs import clip_image_features, install_clip_feature_cache
from .common.precision import PRECISIONS, check_prec, frozen_clip
from .common.trainer import CrossEntropyTrainer
from .common.utils import l2_normalize, register_trainable, report_trainable

__all__ = [
    "add_config", "PromptLearner", "CoOpCLIP", "CoOp", "frozen_image_features", "setup_prompt_learner",
    "load_prompt_learner",
]

MODEL_NAME = "prompt_learner"  # registered name = checkpoint folder, as in the reference
CLASS_BUFFERS = ("token_prefix", "token_suffix")  # depend on the class list: dropped when loading
CLASS_TOKEN_POSITIONS = ("end", "middle", "front")


def add_config(cfg):
    """``TRAINER.COOP`` with the reference defaults, plus the project's speed switches."""
    cfg.TRAINER.COOP = CN()
    node = cfg.TRAINER.COOP
    node.N_CTX = 16  # M (ignored when CTX_INIT is set: M is then its word count)
    node.CSC = False  # class-specific context (ignored when CTX_INIT is set)
    node.CTX_INIT = ""  # initialisation words, e.g. "a photo of a"
    node.PREC = "fp16"  # fp16, fp32 or amp
    node.CLASS_TOKEN_POSITION = "end"  # end, middle or front
    # Speed switches that leave every number unchanged (for benchmarks and equivalence tests).
    node.TRUNCATE_TEXT = True  # text tower up to the longest prompt's end-of-text token
    node.CACHE_EVAL_TEXT = True  # text features computed once per evaluation


# Allowed values of this node's enumerated keys (checked before a run starts, trainers/config.py).
CONFIG_CHOICES = {"TRAINER.COOP.PREC": PRECISIONS, "TRAINER.COOP.CLASS_TOKEN_POSITION": CLASS_TOKEN_POSITIONS}


# ---------------------------------------------------------------------------------------------
# Prompt learner
# ---------------------------------------------------------------------------------------------

def _name_length(text):
    """BPE tokens of ``text`` without SOT/EOT."""
    return int(eot_positions(tokenize(text))[0]) - 1


def initial_context(clip_model, n_ctx, ctx_init, n_cls, csc):
    """The initial context vectors and the words that stand for them in the prompt strings.

    With ``ctx_init``: the frozen token embeddings of its first M tokens, M = its word count (the
    reference's rule; a word of several BPE tokens leaves the rest as fixed prompt tokens).
    Otherwise N(0, 0.02^2) vectors, [M, d] or [n_cls, M, d] with CSC, written "X X .. X".
    """
    dtype = model_dtype(clip_model)
    if ctx_init:
        ctx_init = ctx_init.replace("_", " ")
        n_ctx = len(ctx_init.split(" "))
        if _name_length(ctx_init) != n_ctx:
            warnings.warn(f'CTX_INIT "{ctx_init}" has {n_ctx} words but {_name_length(ctx_init)} BPE tokens: '
                          f"the context takes the first {n_ctx} token embeddings, the rest stay fixed words")
        with torch.no_grad():
            embedding = clip_model.token_embedding(tokenize(ctx_init)).to(dtype)
        return embedding[0, 1:1 + n_ctx].clone(), ctx_init
    width = clip_model.ln_final.weight.shape[0]
    shape = (n_cls, n_ctx, width) if csc else (n_ctx, width)
    return torch.empty(shape, dtype=dtype).normal_(std=0.02), " ".join(["X"] * n_ctx)


def class_token_order(n_ctx, name_lens, position, length):
    """Per class, the source position of each prompt position [C, length], or None for ``end``.

    Prompts are assembled in the ``end`` layout [SOT, ctx 1..M, class tokens, ., EOT, pad]; ``front``
    moves the class tokens before the context, ``middle`` between ctx 1..floor(M/2) and the rest.
    Positions from the "." on (EOT included) keep their place.
    """
    if position == "end":
        return None
    orders = []
    for n in name_lens:
        ctx = list(range(1, 1 + n_ctx))
        name = list(range(1 + n_ctx, 1 + n_ctx + n))
        half = n_ctx // 2 if position == "middle" else 0
        orders.append([0] + ctx[:half] + name + ctx[half:] + list(range(1 + n_ctx + n, length)))
    return torch.tensor(orders, dtype=torch.long)


class PromptLearner(nn.Module):
    """The context ``ctx`` and, per class, the frozen token embeddings around it.

    ``token_prefix`` [C, 1, d] is SOT; ``token_suffix`` [C, 77 - 1 - M, d] holds what follows the
    context in "<context words> <class name>.": the class-name tokens, ".", EOT and the padding.
    """

    def __init__(self, clip_model, classnames, n_ctx, ctx_init="", csc=False, position="end"):
        super().__init__()
        if ctx_init:
            print(f'CTX_INIT "{ctx_init}" sets the context (M = its word count): N_CTX {n_ctx} and CSC {csc} '
                  "are not used")
            csc = False
        ctx, prompt_prefix = initial_context(clip_model, n_ctx, ctx_init, len(classnames), csc)
        print(f'Initial context: "{prompt_prefix}"')
        print(f"Number of context words (tokens): {ctx.shape[-2]}")
        self.ctx = nn.Parameter(ctx)  # [M, d] shared, or [C, M, d] class-specific
        self.n_cls, self.n_ctx = len(classnames), ctx.shape[-2]

        names = [name.replace("_", " ") for name in classnames]
        tokens = tokenize([f"{prompt_prefix} {name}." for name in names])  # [C, 77]; too long raises
        with torch.no_grad():
            embedding = clip_model.token_embedding(tokens).to(model_dtype(clip_model))
        self.register_buffer("token_prefix", embedding[:, :1].clone())  # SOT
        self.register_buffer("token_suffix", embedding[:, 1 + self.n_ctx:].clone())  # class, ".", EOT, pad
        self.register_buffer("tokenized_prompts", tokens, persistent=False)  # for the EOT index only
        self.name_lens = [_name_length(name) for name in names]
        self.register_buffer("position_order", class_token_order(self.n_ctx, self.name_lens, position,
                                                                 tokens.shape[1]), persistent=False)

    def assemble(self, ctx, length=None):
        """Prompt embeddings [*lead, C, length, d] from context ``ctx`` [*lead, C or 1, M, d].

        ``length`` (default 77) cuts the prompts after that many positions (see ``prompt_length``).
        """
        length = length or self.tokenized_prompts.shape[1]
        shape = (*ctx.shape[:-3], self.n_cls)
        prefix = self.token_prefix.expand(*shape, -1, -1)
        suffix = self.token_suffix[:, :length - 1 - self.n_ctx].expand(*shape, -1, -1)
        ctx = ctx.expand(*shape, -1, -1).to(prefix.dtype)  # e.g. CoCoOp's ctx + pi(x) from autocast
        prompts = torch.cat([prefix, ctx, suffix], dim=-2)
        if self.position_order is None:
            return prompts
        order = self.position_order[:, :length, None].expand(*shape, -1, prompts.shape[-1])
        return prompts.gather(-2, order)

    def forward(self, length=None):
        """The C prompts [C, length, d]."""
        ctx = self.ctx if self.ctx.dim() == 3 else self.ctx.unsqueeze(0)
        return self.assemble(ctx, length)


# ---------------------------------------------------------------------------------------------
# CLIP with learned prompts
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def frozen_image_features(clip_model, images):
    """Normalised f(x) [B, D] from CLIP's frozen image tower (no autograd), or from its cached output [B, D]."""
    return l2_normalize(clip_image_features(clip_model, images))


class CoOpCLIP(nn.Module):
    """Frozen CLIP plus ``prompt_learner``;
    ``forward(images [B, 3, H, W] or cached features [B, D]) -> logits [B, C]``."""

    def __init__(self, clip_model, prompt_learner, truncate_text=True, cache_eval_text=True):
        super().__init__()
        self.clip_model = clip_model
        self.prompt_learner = prompt_learner
        tokens = prompt_learner.tokenized_prompts
        self.text_length = prompt_length(tokens) if truncate_text else tokens.shape[1]
        self.text_cache = TensorCache(self, learner=prompt_learner, enabled=cache_eval_text)

    def encode_text(self):
        """g(t_c) for all C prompts [C, D] (not normalised)."""
        learner = self.prompt_learner
        prompts = learner(self.text_length)  # [C, L, d]
        return encode_text_embeddings(self.clip_model, prompts, eot_positions(learner.tokenized_prompts))

    def text_features(self):
        """Normalised text features [C, D]: every call in training, once per evaluation."""
        return self.text_cache.get(lambda: l2_normalize(self.encode_text()))

    def forward(self, images):
        text_features = self.text_features()
        image_features = frozen_image_features(self.clip_model, images)
        return self.clip_model.logit_scale.exp() * image_features @ text_features.t()


# ---------------------------------------------------------------------------------------------
# Trainer (the pieces CoCoOp shares come first)
# ---------------------------------------------------------------------------------------------

def setup_prompt_learner(trainer, learner):
    """Report what trains; MODEL.INIT_WEIGHTS, optimiser and scheduler of ``learner``, registered as
    ``prompt_learner`` (``trainer.model`` holds CLIP and the learner)."""
    cfg = trainer.cfg
    report_trainable(trainer.model)
    if cfg.MODEL.INIT_WEIGHTS:
        load_init_weights(learner, cfg.MODEL.INIT_WEIGHTS, keep_buffers=CLASS_BUFFERS)
    trainer.model.to(trainer.device)
    register_trainable(trainer, MODEL_NAME, learner, trainer.prec)
    install_clip_feature_cache(trainer, trainer.model.clip_model)  # test/val: the image tower is not prompted


def load_prompt_learner(trainer, directory, epoch=None):
    """``<dir>/prompt_learner/model.pth.tar-<epoch>`` (ours or the reference's): the class buffers
    are dropped (this run keeps its own classes), everything else must fit."""
    learner = trainer.model.prompt_learner

    def check(name, state_dict, path):
        ctx = state_dict.get("ctx")
        if ctx is not None and ctx.shape != learner.ctx.shape:
            csc = "; a class-specific (CSC) context loads only for the same number of classes" \
                if ctx.dim() == 3 or learner.ctx.dim() == 3 else ""
            raise ValueError(f'Checkpoint "{path}" has a context ctx of shape {list(ctx.shape)} but this model\'s '
                             f"is {list(learner.ctx.shape)}: use the N_CTX / CTX_INIT / CSC it was trained with{csc}")

    load_adapted_model(trainer, directory, epoch, drop_keys=CLASS_BUFFERS, check=check)


@TRAINER_REGISTRY.register()
class CoOp(CrossEntropyTrainer):
    """CoOp: trains the context with cross-entropy; CLIP stays frozen (coop.md §4-§6)."""

    def check_cfg(self, cfg):
        node = cfg.TRAINER.COOP
        check_prec(node.PREC, "TRAINER.COOP.PREC")
        if node.CLASS_TOKEN_POSITION not in CLASS_TOKEN_POSITIONS:
            raise ValueError(f'TRAINER.COOP.CLASS_TOKEN_POSITION must be one of {CLASS_TOKEN_POSITIONS}, '
                             f'got "{node.CLASS_TOKEN_POSITION}"')
        if not node.CTX_INIT and node.N_CTX < 1:
            raise ValueError(f"TRAINER.COOP.N_CTX must be at least 1 (or set CTX_INIT), got {node.N_CTX}")

    def build_model(self):
        cfg = self.cfg
        node = cfg.TRAINER.COOP
        clip_model, self.prec = frozen_clip(cfg, node.PREC, self.device)
        print("Building CoOp (prompt learner)")
        learner = PromptLearner(clip_model, self.dm.dataset.classnames, node.N_CTX, node.CTX_INIT, node.CSC,
                                node.CLASS_TOKEN_POSITION)
        self.model = CoOpCLIP(clip_model, learner, node.TRUNCATE_TEXT, node.CACHE_EVAL_TEXT)
        setup_prompt_learner(self, learner)

    def load_model(self, directory, epoch=None):
        load_prompt_learner(self, directory, epoch)
