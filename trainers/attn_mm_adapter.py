"""Attention-based Multi-Modal Adapter (Seputis, Mihailov, Chatterjee, Xiao, 2024; arXiv 2409.02958).

CLIP stays frozen; only its final, L2-normalised embeddings are used. Per image, the adapter reads
the C class-text embeddings followed by the image embedding (C + 1 tokens):

    downsampler (512 -> 32 -> 128)  ->  masked multi-head attention (4 heads)  ->  upsampler (128 -> 32 -> GELU -> 512)

and its normalised outputs are blended into the embeddings with ratio λ = 0.2, so every image gets
its own class embeddings:

    v'_b  = normalize((1 - λ) v_b + λ â_v,b)        t'_c,b = normalize((1 - λ) t_c + λ â_t,c,b)
    logit[b, c] = exp(logit_scale) · <v'_b, t'_c,b>

The paper's mask lets a text token attend only to the image, the image only to the texts. Nothing
is class-dependent, so weights trained on base classes evaluate on new classes and datasets as is.
Training: Adam, no augmentation, early stopping on val accuracy; the frozen features of the training
and val images are computed once (``feature_cache.py``; with ``NOISE_STD`` the training images are
noised afresh every step and encoded every step) and test/val features go to the on-disk eval cache
(``eval_inputs.py``, ``EVAL_CACHE.FEATURES``). Specification: ``attn_mm_adapter.md`` §10.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from clip import layerwise
from dassl.data.transforms import build_transform
from dassl.engine import TRAINER_REGISTRY, TrainerX

from .common.checkpoint import find_reference_file, load_adapted_model, load_init_weights, load_reference_weights
from .common.early_stopping import EarlyStopping, EarlyStoppingTrainerMixin
from .common.eval_inputs import CachedFeatureLoader, install_feature_cache
from .common.feature_cache import FEATURE_KEY, cache_epoch_features
from .common.precision import PRECISIONS, autocast_for, check_prec, frozen_clip
from .common.templates import class_prompts, template_for
from .common.utils import finish_step, l2_normalize, register_trainable, report_trainable, text_features_for_prompts

__all__ = ["add_config", "CONFIG_CHOICES", "cross_modal_attention_mask", "MultiModalAttentionAdapter",
           "AttnMMAdapterCLIP", "AttnMMAdapter"]

MASKS = ("cross_modal", "additive_01", "none")
# The reference code (github dqmis/clip-mma) saves the whole model (``model_best.pth.tar``, its
# adapter under ``adapter.*``, our layout) or the adapter alone (``adapter_state_dict.pt``).
REFERENCE_FILES = ("model_best.pth.tar", "adapter_state_dict.pt")
BLOCKS = ("mha", "transformer")
ACTIVATIONS = ("none", "gelu")


def add_config(cfg):
    """``TRAINER.ATTN_MM_ADAPTER`` (attn_mm_adapter.md §10.1)."""
    node = CN()
    node.DOWN_DIMS = [32, 128]  # downsampler Linear output widths; the last is the attention width
    node.DOWN_ACT = "none"  # between downsampler layers: "none" (public main branch) or "gelu"
    node.N_HEADS = 4
    node.UP_DIMS = [32]  # upsampler hidden widths (GELU between layers); the last layer maps to CLIP's width
    node.RATIO = 0.2  # λ of the blend, both modalities
    node.MASK = "cross_modal"  # the paper's -inf mask; "none" = full attention; "additive_01" = public main branch
    node.ADAPT_TEXT = True  # False: only the image is blended; the plain text embeddings classify
    node.BLOCK = "mha"  # or "transformer": a post-LN encoder layer (feed-forward 2048, ReLU, dropout 0.1)
    node.PREC = "fp32"  # frozen CLIP forward: fp16, fp32 or amp; the adapter always computes in fp32
    node.PATIENCE = 0  # early stopping on val accuracy (epochs without improvement); 0 = off; needs best_val
    node.TRAIN_AUG = True  # False: training images get the test transform (the paper: no augmentation)
    node.CACHE_FEATURES = True  # compute train (if deterministic) and val features once instead of per step
    node.NOISE_STD = 0.0  # noise ablation (appendix A.2): std of Gaussian noise on normalised training images
    cfg.TRAINER.ATTN_MM_ADAPTER = node


# Allowed values of this node's enumerated keys (checked before a run starts, trainers/config.py).
CONFIG_CHOICES = {"TRAINER.ATTN_MM_ADAPTER.PREC": PRECISIONS, "TRAINER.ATTN_MM_ADAPTER.DOWN_ACT": ACTIVATIONS,
                  "TRAINER.ATTN_MM_ADAPTER.MASK": MASKS, "TRAINER.ATTN_MM_ADAPTER.BLOCK": BLOCKS}


# --- The adapter ------------------------------------------------------------------------------------

def cross_modal_attention_mask(num_texts, kind="cross_modal", device=None):
    """Additive mask [T, T] for ``num_texts`` texts then one image (T = C + 1). ``cross_modal``: 0 where
    exactly one of (query, key) is the image, else -inf (texts see only the image, the image only the
    texts); ``additive_01``: 1.0 there, else 0.0 (public main branch; masks nothing); ``none``: None."""
    if kind == "none":
        return None
    if kind not in MASKS:
        raise ValueError(f'TRAINER.ATTN_MM_ADAPTER.MASK must be one of {MASKS}, got "{kind}"')
    is_image = torch.zeros(num_texts + 1, dtype=torch.bool, device=device)
    is_image[num_texts] = True
    cross_modal = is_image[:, None] != is_image[None, :]  # [T, T]: query and key of different modality
    if kind == "additive_01":
        return cross_modal.float()
    mask = torch.full((num_texts + 1, num_texts + 1), float("-inf"), device=device)
    return mask.masked_fill(cross_modal, 0.0)


def linear_stack(in_dim, out_dims, activation):
    """Linear layers (with bias) ``in_dim -> out_dims[0] -> ... -> out_dims[-1]``, ``activation`` between them."""
    layers = []
    for i, out_dim in enumerate(out_dims):
        if i > 0 and activation == "gelu":
            layers.append(nn.GELU())
        layers.append(nn.Linear(in_dim, out_dim))
        in_dim = out_dim
    return nn.Sequential(*layers)


class MultiModalAttentionAdapter(nn.Module):
    """Downsampler -> masked attention over the tokens of each sequence -> upsampler.

    Default (public main branch, 107,712 parameters at width 512): Linear 512 -> 32, Linear 32 -> 128
    (no activation between), MultiheadAttention(128, 4 heads), Linear 128 -> 32, GELU, Linear 32 -> 512.
    No residual, LayerNorm or dropout inside (except in the ``transformer`` block); PyTorch init.
    """

    def __init__(self, embed_dim, down_dims=(32, 128), down_act="none", n_heads=4, up_dims=(32,), block="mha"):
        super().__init__()
        down_dims, up_dims = list(down_dims), list(up_dims)
        if not down_dims:
            raise ValueError("TRAINER.ATTN_MM_ADAPTER.DOWN_DIMS must name at least one layer")
        width = down_dims[-1]
        if width % n_heads:
            raise ValueError(f"attention width {width} (last DOWN_DIMS entry) is not divisible by N_HEADS {n_heads}")
        self.block = block
        self.downsampler = linear_stack(embed_dim, down_dims, down_act)
        if block == "mha":
            self.mha = nn.MultiheadAttention(width, n_heads, batch_first=True)
        else:
            self.transformer = nn.TransformerEncoderLayer(
                width, n_heads, dim_feedforward=2048, dropout=0.1, activation="relu", batch_first=True,
            )
        self.upsampler = linear_stack(width, up_dims + [embed_dim], "gelu")

    def attend(self, tokens, attn_mask):
        """Attention over ``tokens`` [B, T, d] with the additive ``attn_mask`` [T, T] (or None) -> [B, T, d]."""
        if self.block == "mha":
            mixed, _ = self.mha(tokens, tokens, tokens, attn_mask=attn_mask, need_weights=False)
            return mixed
        # The post-LN encoder layer written out with its own submodules: calling the layer would
        # take PyTorch's inference fast path (eval, no grad), which reads a float mask as a boolean
        # one, so the additive 0/1 mask would mask the cross-modal pairs instead of adding 1.
        layer = self.transformer
        attended, _ = layer.self_attn(tokens, tokens, tokens, attn_mask=attn_mask, need_weights=False)
        x = layer.norm1(tokens + layer.dropout1(attended))
        feed_forward = layer.linear2(layer.dropout(layer.activation(layer.linear1(x))))
        return layer.norm2(x + layer.dropout2(feed_forward))

    def cross_modal_mha(self, down_text, down_image):
        """``attend`` of the ``mha`` block under the ``cross_modal`` mask in O(B·C), not O(B·C²): ``down_text``
        [C, d] (the same for every image), ``down_image`` [B, d] -> (text outputs [B, 1, d], image output
        [B, d]); equal to ``attend`` on the [B, C+1, d] sequence up to float rounding."""
        mha = self.mha
        batch, width = down_image.shape
        heads = mha.num_heads
        head_width = width // heads
        w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
        b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
        image_value = F.linear(down_image, w_v, b_v)  # [B, d]
        # A text query has a single allowed key, the image: its softmax weight is exactly 1, so every
        # text position receives the image's value (the same output for all C texts).
        text_out = mha.out_proj(image_value).unsqueeze(1)  # [B, 1, d]
        # The image query attends over the C text keys only.
        query = F.linear(down_image, w_q, b_q).view(batch, heads, head_width)  # [B, h, d/h]
        keys = F.linear(down_text, w_k, b_k).view(-1, heads, head_width)  # [C, h, d/h]
        values = F.linear(down_text, w_v, b_v).view(-1, heads, head_width)  # [C, h, d/h]
        weights = (torch.einsum("bhk,chk->bhc", query, keys) / head_width ** 0.5).softmax(dim=-1)  # [B, h, C]
        image_out = mha.out_proj(torch.einsum("bhc,chk->bhk", weights, values).reshape(batch, width))  # [B, d]
        return text_out, image_out

    def forward(self, tokens, attn_mask):
        """``tokens`` [B, T, embed_dim] -> adapter outputs [B, T, embed_dim] (not normalised)."""
        return self.upsampler(self.attend(self.downsampler(tokens), attn_mask))


# --- The model: frozen CLIP features -> per-image adapted embeddings -> logits ----------------------

class AttnMMAdapterCLIP(nn.Module):
    """Frozen CLIP, fixed class-text features and the (only trainable) adapter: ``encode_images(images)``
    -> normalised fp32 image features [B, E]; ``forward(image_features)`` -> logits [B, C]."""

    def __init__(self, clip_model, adapter, text_features, logit_scale, ratio=0.2, mask="cross_modal",
                 adapt_text=True, prec="fp32"):
        super().__init__()
        self.clip_model = clip_model
        self.adapter = adapter
        self.ratio = ratio
        self.mask_kind = mask
        self.adapt_text = adapt_text
        self.prec = prec
        num_classes = text_features.shape[0]
        # Depend only on the class list (rebuilt with the trainer for new classes), never saved.
        self.register_buffer("text_features", text_features, persistent=False)  # [C, E], normalised fp32
        self.register_buffer("attn_mask", cross_modal_attention_mask(num_classes, mask), persistent=False)
        self.register_buffer("logit_scale", logit_scale, persistent=False)  # exp(CLIP's logit_scale), frozen
        # The paper's mask with plain MHA has a closed form (MultiModalAttentionAdapter.cross_modal_mha)
        # that avoids the [B, heads, C+1, C+1] scores; False forces the general masked attention.
        self.cross_modal_shortcut = mask == "cross_modal" and adapter.block == "mha"

    @torch.no_grad()
    def encode_images(self, images):
        """Frozen CLIP image features [B, E], L2-normalised in fp32."""
        images = images.to(self.clip_model.visual.conv1.weight.dtype)
        with autocast_for(images.device, enabled=self.prec == "amp"):
            features = layerwise.encode_image(self.clip_model, images)
        return l2_normalize(features.float())

    def blend(self, original, adapted):
        """normalize((1 - λ) · original + λ · normalize(adapted))."""
        return l2_normalize((1 - self.ratio) * original + self.ratio * l2_normalize(adapted))

    def forward(self, image_features):
        """``image_features`` [B, E] (normalised fp32) -> logits [B, C]."""
        text = self.text_features
        batch, num_classes = image_features.shape[0], text.shape[0]
        # Sequence per image: the C texts, then the image. The downsampler acts on each token
        # alone, so the texts (the same for every image) are downsampled once.
        down_text = self.adapter.downsampler(text)  # [C, d]
        down_image = self.adapter.downsampler(image_features)  # [B, d]
        if self.cross_modal_shortcut:
            text_mixed, image_mixed = self.adapter.cross_modal_mha(down_text, down_image)  # [B, 1, d], [B, d]
        else:
            sequence = torch.cat([down_text.expand(batch, num_classes, -1), down_image.unsqueeze(1)], dim=1)
            mixed = self.adapter.attend(sequence, self.attn_mask)  # [B, C+1, d]
            text_mixed, image_mixed = mixed[:, :num_classes], mixed[:, num_classes]  # [B, C, d], [B, d]

        image_adapted = self.blend(image_features, self.adapter.upsampler(image_mixed))  # [B, E]
        if not self.adapt_text:  # image-only ablation: the text half of the output is unused
            return self.logit_scale * image_adapted @ text.t()
        # [B, C, E]: each image gets its own adapted class embeddings.
        text_adapted = self.blend(text.unsqueeze(0), self.adapter.upsampler(text_mixed))
        return self.logit_scale * torch.einsum("be,bce->bc", image_adapted, text_adapted)


# --- The trainer ------------------------------------------------------------------------------------

@TRAINER_REGISTRY.register()
class AttnMMAdapter(EarlyStoppingTrainerMixin, TrainerX):
    """Trains the adapter (registered as ``attn_mm_adapter``) on frozen CLIP features; ``PATIENCE > 0``
    stops once val accuracy has not improved for that many epochs (``TEST.FINAL_MODEL best_val``)."""

    def check_cfg(self, cfg):
        node = cfg.TRAINER.ATTN_MM_ADAPTER
        check_prec(node.PREC, "TRAINER.ATTN_MM_ADAPTER.PREC")
        if node.PATIENCE > 0 and (cfg.TEST.FINAL_MODEL != "best_val" or cfg.TEST.NO_TEST):
            raise ValueError("TRAINER.ATTN_MM_ADAPTER.PATIENCE > 0 (early stopping) needs "
                             "TEST.FINAL_MODEL best_val and TEST.NO_TEST False: it watches val accuracy")
        if node.NOISE_STD < 0:
            raise ValueError("TRAINER.ATTN_MM_ADAPTER.NOISE_STD must be >= 0")

    def build_train_transform(self):
        """``TRAIN_AUG False``: the test transform (not INPUT.TRANSFORMS without random_resized_crop,
        which would resize to a square instead of resizing the shorter side and center-cropping)."""
        if self.cfg.TRAINER.ATTN_MM_ADAPTER.TRAIN_AUG:
            return None
        if self.__dict__.get("train_transform") is None:  # built once, kept for the training-feature cache
            self.train_transform = build_transform(self.cfg, is_train=False)
        return self.train_transform

    def build_model(self):
        cfg = self.cfg
        node = cfg.TRAINER.ATTN_MM_ADAPTER
        classnames = self.dm.dataset.classnames
        train_transform = self.build_train_transform()
        if train_transform is not None:
            print("No training augmentation (TRAIN_AUG False): training images get the test transform")
            # Upstream Dassl's build_data_loader does not call build_train_transform.
            self.train_loader_x.dataset.transform = train_transform

        clip_model, prec = frozen_clip(cfg, node.PREC, self.device)  # fp16: the reference's; the adapter stays fp32
        clip_model = clip_model.to(self.device)
        logit_scale = clip_model.logit_scale.detach().float().exp()  # fp32 in every precision

        # The class texts are fixed: encoded once here, for this run's class list.
        prompts = class_prompts(template_for(cfg.DATASET.NAME), classnames)
        print(f"Prompts (first of {len(prompts)}): {prompts[0]!r}")
        with autocast_for(self.device, enabled=prec == "amp"):
            text_features = text_features_for_prompts(clip_model, prompts, self.device)
        text_features = l2_normalize(text_features.float())

        print("Building the multi-modal attention adapter")
        adapter = MultiModalAttentionAdapter(
            text_features.shape[1], down_dims=node.DOWN_DIMS, down_act=node.DOWN_ACT, n_heads=node.N_HEADS,
            up_dims=node.UP_DIMS, block=node.BLOCK,
        )
        if cfg.MODEL.INIT_WEIGHTS:  # the adapter has no class-dependent tensors
            load_init_weights(adapter, cfg.MODEL.INIT_WEIGHTS)
        self.model = AttnMMAdapterCLIP(
            clip_model, adapter, text_features, logit_scale, ratio=node.RATIO, mask=node.MASK,
            adapt_text=node.ADAPT_TEXT, prec=prec,
        ).to(self.device)
        report_trainable(self.model)

        register_trainable(self, "attn_mm_adapter", adapter)  # fp32 adapter: no gradient scaler
        self.early_stopping = EarlyStopping(node.PATIENCE)  # EarlyStoppingTrainerMixin's hooks
        install_feature_cache(self, self.model.encode_images, clip_model.visual,
                              f"AttnMMAdapterCLIP.encode_images (prec {prec})")

    # --- features: cached, or computed from the images of the batch -------------------------

    def trains_on_cached_features(self):
        """Training features can be cached when the training images are the same in every epoch."""
        node = self.cfg.TRAINER.ATTN_MM_ADAPTER
        return node.CACHE_FEATURES and not node.TRAIN_AUG and node.NOISE_STD == 0

    def image_features(self, batch, train):
        """[B, E] image features of a batch of cached features or of images (noised when training)."""
        if FEATURE_KEY in batch:
            return batch[FEATURE_KEY].to(self.device)
        images = batch["img"].to(self.device)
        noise_std = self.cfg.TRAINER.ATTN_MM_ADAPTER.NOISE_STD
        if train and noise_std > 0:
            # A fresh draw at every step, so every epoch sees new noise (as the public code's
            # transform does); unlike the public code, val and test images stay clean.
            images = images + noise_std * torch.randn_like(images)
        return self.model.encode_images(images)

    def parse_batch_train(self, batch):
        return self.image_features(batch, train=True), batch["label"].to(self.device)

    def parse_batch_test(self, batch):
        return self.image_features(batch, train=False), batch["label"].to(self.device)

    def prepare_bench_batch(self, batch):
        """For bench/bench_step.py: with the training cache on, the epoch loop feeds features, not images."""
        if not self.trains_on_cached_features():
            return batch
        return {FEATURE_KEY: self.model.encode_images(batch["img"].to(self.device)), "label": batch["label"]}

    # --- training -----------------------------------------------------------------------------

    def forward_backward(self, batch):
        image_features, label = self.parse_batch_train(batch)
        logits = self.model(image_features)
        loss = F.cross_entropy(logits, label)
        # The adapter computes in fp32 and CLIP has no gradients, so no gradient scaler is needed.
        self.model_backward_and_update(loss)
        return finish_step(self, loss, logits, label)

    def before_train(self):
        super().before_train()  # resumes an interrupted run, early-stopping counter included
        node = self.cfg.TRAINER.ATTN_MM_ADAPTER
        if not node.CACHE_FEATURES:
            print("Feature cache off (CACHE_FEATURES False): images are encoded at every step")
            return
        if not self.trains_on_cached_features():
            why = "Gaussian noise on training images" if node.NOISE_STD > 0 else "Training augmentation on"
            print(f"{why}: training features are recomputed at every step")
        cache_epoch_features(self, self.model.encode_images,
                             self.train_transform if self.trains_on_cached_features() else None,
                             val_cached=isinstance(self.val_loader, CachedFeatureLoader))  # EVAL_CACHE.FEATURES

    def load_model(self, directory, epoch=None):
        """Our checkpoints or the reference code's files (``--model-dir``: its output folder or a file);
        nothing is class-dependent, so nothing is dropped for new classes or datasets."""
        reference = find_reference_file(self, directory, REFERENCE_FILES, epoch)
        if reference is None:
            load_adapted_model(self, directory, epoch)
        else:
            load_reference_weights(self, reference, "attn_mm_adapter", prefix="adapter.")
