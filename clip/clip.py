"""CLIP models from open_clip, addressed by OpenAI names (``ViT-B/16``) or any open_clip name.

Weights: the official ones (default), a local file (OpenAI JIT archive, OpenAI-format state dict or
open_clip checkpoint), or ``random`` for tests.
"""
import logging
import os.path as osp
import warnings

import open_clip
import torch

from harness.preflight import torch_file_problem
from harness.safe_load import CheckpointError

from .attention import adopt_blocks

__all__ = ["available_models", "load", "load_clip_to_cpu", "openclip_name", "model_dtype", "count_parameters",
           "WeightsError", "check_backbone"]


class WeightsError(CheckpointError, ValueError):
    """CLIP weights that cannot be found, read or loaded into the architecture (a bad MODEL.BACKBONE
    value); one line naming the file or name and the fix."""

# OpenAI's weights need QuickGELU; plain open_clip names build nn.GELU and give different features.
_OPENAI_TO_OPENCLIP = {
    "RN50": "RN50-quickgelu",
    "RN101": "RN101-quickgelu",
    "RN50x4": "RN50x4-quickgelu",
    "RN50x16": "RN50x16-quickgelu",
    "RN50x64": "RN50x64-quickgelu",
    "ViT-B/32": "ViT-B-32-quickgelu",
    "ViT-B/16": "ViT-B-16-quickgelu",
    "ViT-L/14": "ViT-L-14-quickgelu",
    "ViT-L/14@336px": "ViT-L-14-336-quickgelu",
}

# File names of OpenAI's releases (what OpenAI's clip package caches under ~/.cache/clip).
_OPENAI_FILES = {
    "RN50": "RN50.pt", "RN101": "RN101.pt", "RN50x4": "RN50x4.pt", "RN50x16": "RN50x16.pt",
    "RN50x64": "RN50x64.pt", "ViT-B/32": "ViT-B-32.pt", "ViT-B/16": "ViT-B-16.pt",
    "ViT-L/14": "ViT-L-14.pt", "ViT-L/14@336px": "ViT-L-14-336px.pt",
}

# A 12-block CLIP small enough for unit tests and the demo: every layer index used by the
# method configs (MMA blocks 5..12, MMRL from layer 6) exists, yet a forward takes milliseconds.
TEST_TINY = "test-tiny"
_TEST_TINY_CFG = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 224, "layers": 12, "width": 64, "head_width": 32, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 12},
}

# Keys of OpenAI's JIT archives that are not parameters.
_NON_PARAM_KEYS = ("input_resolution", "context_length", "vocab_size")


def available_models():
    """OpenAI names, ``test-tiny`` and every open_clip architecture."""
    return list(_OPENAI_TO_OPENCLIP) + [TEST_TINY] + open_clip.list_models()


def openclip_name(name):
    """open_clip architecture for an OpenAI name; other names are returned unchanged."""
    return _OPENAI_TO_OPENCLIP.get(name, name)


def _register_test_tiny():
    from open_clip.factory import _MODEL_CONFIGS
    _MODEL_CONFIGS.setdefault(TEST_TINY, _TEST_TINY_CFG)


def _create(arch):
    """Build ``arch`` with random weights in fp32 on the CPU."""
    _register_test_tiny()
    if arch not in open_clip.list_models() and arch != TEST_TINY:
        choices = ", ".join(list(_OPENAI_TO_OPENCLIP) + [TEST_TINY])
        raise WeightsError(
            f'Unknown CLIP model "{arch}" (MODEL.BACKBONE.NAME). Use one of {choices}, '
            "or any name from open_clip.list_models()."
        )
    # open_clip logs "No pretrained weights loaded ... initialized randomly" for pretrained=None; the
    # weights are loaded right after, so the message would be wrong.
    logging.disable(logging.WARNING)
    try:
        model = open_clip.create_model(arch, pretrained=None, precision="fp32", device="cpu")
    finally:
        logging.disable(logging.NOTSET)
    adopt_blocks(model)  # same blocks, faster where autograd records or autocast is on (clip/attention.py)
    return model


def check_backbone(name, weights):
    """Check ``MODEL.BACKBONE.NAME`` / ``WEIGHTS`` without building anything; ``WeightsError`` naming the fix."""
    _register_test_tiny()
    arch = openclip_name(name)
    if arch not in open_clip.list_models():
        raise WeightsError(f'MODEL.BACKBONE.NAME "{name}" is not a CLIP model: use one of '
                           f"{', '.join(list(_OPENAI_TO_OPENCLIP) + [TEST_TINY])} (or an open_clip name)")
    if weights in ("", "official", "openai"):
        if arch == TEST_TINY:
            raise WeightsError('"test-tiny" has no released weights: add MODEL.BACKBONE.WEIGHTS random')
        return
    if weights == "random":
        return
    path = osp.abspath(osp.expanduser(weights))
    if not osp.isfile(path):
        what = "is a folder, not a file" if osp.isdir(path) else "not found"
        raise WeightsError(f'MODEL.BACKBONE.WEIGHTS "{path}" {what}: pass a CLIP weights file such as '
                           "OpenAI's ViT-B-16.pt (docs/weights.md), or leave it empty for the official weights")
    problem = torch_file_problem(path)
    if problem:
        raise WeightsError(f'MODEL.BACKBONE.WEIGHTS "{path}" {problem}: download the weights again '
                           "(docs/weights.md lists URLs and SHA-256 sums)")


def _state_dict_from_file(path):
    """Read a weights file in any supported format into an open_clip/OpenAI-format state dict."""
    problem = torch_file_problem(path)
    if problem:
        raise WeightsError(f'weights file "{path}" {problem} (MODEL.BACKBONE.WEIGHTS): download it again')
    try:  # OpenAI's release files are TorchScript archives
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            archive = torch.jit.load(path, map_location="cpu")
        state_dict = archive.state_dict()
    except RuntimeError:
        try:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise WeightsError(f'cannot read weights file "{path}" ({detail}) (MODEL.BACKBONE.WEIGHTS): pass '
                               "OpenAI's .pt file, an OpenAI-format state dict or an open_clip checkpoint") from None
        if isinstance(state_dict, dict) and "state_dict" in state_dict:  # open_clip training checkpoint
            state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, dict):
        raise WeightsError(f'"{path}" does not hold a CLIP state dict (found {type(state_dict).__name__}) '
                           "(MODEL.BACKBONE.WEIGHTS)")
    state_dict = {(k[7:] if k.startswith("module.") else k): v for k, v in state_dict.items()}
    return {k: v for k, v in state_dict.items() if k not in _NON_PARAM_KEYS}


def _load_file(model, path, name):
    state_dict = _state_dict_from_file(path)
    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise WeightsError(
            f'Weights file "{path}" does not match the architecture of "{name}" '
            f"(check MODEL.BACKBONE.NAME against the file): {str(e).splitlines()[-1].strip()}"
        ) from None
    if missing or unexpected:
        raise WeightsError(
            f'Weights file "{path}" does not match the architecture of "{name}": '
            f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected keys "
            f"(e.g. {unexpected[:3]}). Check MODEL.BACKBONE.NAME against the file."
        )
    model.float()  # OpenAI's files are stored in fp16


def _load_official(model, name, arch):
    """Official weights: OpenAI's ~/.cache/clip file if present, else open_clip's download/cache."""
    openai_file = _OPENAI_FILES.get(name)
    if openai_file:
        cached = osp.expanduser(osp.join("~", ".cache", "clip", openai_file))
        if osp.isfile(cached):
            _load_file(model, cached, name)
            return cached
    tag = "openai" if openai_file else None
    if tag is None:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if not tags:
            raise WeightsError(f'open_clip has no official weights for "{arch}"; pass a file in MODEL.BACKBONE.WEIGHTS')
        tag = tags[0]
    try:
        from open_clip.factory import load_checkpoint as _openclip_load_checkpoint
        from open_clip.pretrained import download_pretrained, get_pretrained_cfg
        cfg = get_pretrained_cfg(arch, tag)
        checkpoint_path = download_pretrained(cfg)
    except Exception as e:
        provide = openai_file or f"the {arch} ({tag}) checkpoint"
        raise WeightsError(
            f'The official weights of "{name}" are not cached and could not be downloaded '
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). Run once with network "
            f"access, or download {provide} and pass its path: MODEL.BACKBONE.WEIGHTS /path/to/{openai_file or 'weights.pt'}"
        ) from None
    _openclip_load_checkpoint(model, checkpoint_path)
    model.float()
    return checkpoint_path


def load(name, weights="", device="cpu"):
    """Build CLIP ``name`` and load ``weights``; returns ``(model, preprocess)`` in eval mode, fp32.

    ``weights``: ``""``/``"official"`` for the released weights, a file path, or ``"random"``.
    """
    arch = openclip_name(name)
    model = _create(arch)
    if weights == "random":
        print("*" * 72)
        print(f"* WARNING: CLIP {name} is randomly initialised; results are not meaningful")
        print("*" * 72)
        source = "random"
    elif weights in ("", "official", "openai"):
        if arch == TEST_TINY:
            raise WeightsError('"test-tiny" has no released weights; use MODEL.BACKBONE.WEIGHTS random')
        source = _load_official(model, name, arch)
    else:
        path = osp.abspath(osp.expanduser(weights))
        if not osp.isfile(path):
            raise FileNotFoundError(f'CLIP weights file not found: "{path}" (MODEL.BACKBONE.WEIGHTS)')
        _load_file(model, path, name)
        source = path
    print(f"Loaded CLIP {name} (open_clip {arch}) weights: {source}")
    model = model.to(device).eval()
    size = model.visual.image_size
    preprocess = open_clip.image_transform(size if isinstance(size, int) else size[0], is_train=False)
    return model, preprocess


def load_clip_to_cpu(cfg):
    """CLIP for ``MODEL.BACKBONE.NAME`` / ``MODEL.BACKBONE.WEIGHTS`` on the CPU in fp32, eval mode."""
    model, _ = load(cfg.MODEL.BACKBONE.NAME, weights=cfg.MODEL.BACKBONE.WEIGHTS, device="cpu")
    return model


def model_dtype(model):
    """The dtype CLIP computes in (open_clip has no ``model.dtype``)."""
    return model.visual.conv1.weight.dtype


def count_parameters(module, trainable_only=False):
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
