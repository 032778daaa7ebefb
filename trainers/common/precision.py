"""Precision modes (``PREC``), once for every trainer.

- ``fp32``: CLIP and the learner in fp32.
- ``amp``: fp32 weights, the forward under autocast (fp16 on CUDA with a GradScaler, bf16 on a CPU,
  which needs no scaling). Frozen CLIP weights are cast to the autocast dtype once, not at every
  call (``clip/attention.py``); the numbers are those of plain autocast.
- ``fp16``: OpenAI's fp16 CLIP, as its ``clip.load`` builds it and the reference code trains it:
  matmul and convolution weights and the two projections in fp16, LayerNorms in fp32
  (``to_openai_fp16``). It needs a GPU: on a CPU a run uses fp32 instead, with a note
  (``run_precision``).
"""
import torch
from open_clip.model import convert_weights_to_lp

from clip import load_clip_to_cpu

__all__ = [
    "PRECISIONS", "check_prec", "run_precision", "to_openai_fp16", "frozen_clip", "autocast_for", "make_grad_scaler",
]

PRECISIONS = ("fp16", "fp32", "amp")


def check_prec(prec, key):
    if prec not in PRECISIONS:
        raise ValueError(f'{key} must be one of {PRECISIONS}, got "{prec}"')


def run_precision(prec, device, subject):
    """The precision a run on ``device`` uses for ``PREC`` ``prec``: fp16 only on CUDA, else fp32 with a note."""
    if prec == "fp16" and device.type != "cuda":
        print(f"Note: PREC fp16 needs a GPU; {subject} runs in fp32 on the CPU")
        return "fp32"
    return prec


def to_openai_fp16(clip_model):
    """OpenAI's fp16 CLIP in place: Linear/Conv/attention weights, ``proj`` and ``text_projection`` in
    fp16; LayerNorms, embeddings and ``logit_scale`` stay fp32. Returns the model."""
    convert_weights_to_lp(clip_model, dtype=torch.float16)
    return clip_model


def frozen_clip(cfg, prec, device):
    """CLIP for a trainer, frozen and in the run's precision, and that precision: ``(clip_model, prec)``.

    ``fp16`` is OpenAI's mixed fp16 (LayerNorms fp32) and needs a GPU; on a CPU the run uses fp32.
    """
    prec = run_precision(prec, device, cfg.TRAINER.NAME)
    print(f"Loading CLIP (backbone: {cfg.MODEL.BACKBONE.NAME})")
    clip_model = load_clip_to_cpu(cfg)
    size = clip_model.visual.image_size
    size = size if isinstance(size, int) else size[0]
    if cfg.INPUT.SIZE[0] != size:
        raise ValueError(f"INPUT.SIZE {tuple(cfg.INPUT.SIZE)} must match the input size {size} of "
                         f"{cfg.MODEL.BACKBONE.NAME}; set INPUT.SIZE ({size}, {size})")
    for param in clip_model.parameters():
        param.requires_grad_(False)
    if prec == "fp16":
        to_openai_fp16(clip_model)
    return clip_model, prec


def autocast_for(device, enabled=True):
    """Mixed precision: fp16 autocast on CUDA, bf16 autocast on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16, enabled=enabled)
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


def make_grad_scaler(prec, device):
    """A GradScaler for ``amp`` on CUDA; None otherwise (bf16 autocast on CPU needs no scaling)."""
    if prec == "amp" and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None
