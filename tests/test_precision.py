"""Precision modes: one helper for OpenAI's fp16 CLIP, fp16's CPU fallback, and PREC amp (bf16
autocast on a CPU) agreeing with fp32 within stated tolerances."""
import contextlib
import io

import pytest
import torch

import clip
import toy
from precision_check import agreement
from trainers.common.precision import PRECISIONS, check_prec, run_precision, to_openai_fp16

# amp against fp32 at test-tiny with random weights, one training step and one evaluation: bf16
# keeps 8 significant bits, so the tolerances are loose; a wrong cast or a lost autocast region
# gives errors of order 1.
AMP_LOGIT_TOLERANCE = 0.15  # max |logits - logits_fp32| / max |logits_fp32|
AMP_LOSS_TOLERANCE = 0.1  # |loss - loss_fp32| / |loss_fp32|


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    return toy.make_toy_root(str(tmp_path_factory.mktemp("toy")))


def test_openai_fp16_keeps_layernorms_and_embeddings_in_fp32():
    with contextlib.redirect_stdout(io.StringIO()):
        model = to_openai_fp16(clip.load("test-tiny", weights="random")[0])
    block = model.visual.transformer.resblocks[0]
    assert block.attn.in_proj_weight.dtype == block.mlp.c_fc.weight.dtype == torch.float16
    assert model.visual.conv1.weight.dtype == model.visual.proj.dtype == model.text_projection.dtype == torch.float16
    assert block.ln_1.weight.dtype == model.ln_final.weight.dtype == torch.float32
    assert model.positional_embedding.dtype == model.logit_scale.dtype == torch.float32


def test_fp16_needs_a_gpu(capsys):
    assert run_precision("fp16", torch.device("cpu"), "MMA") == "fp32"
    assert capsys.readouterr().out == "Note: PREC fp16 needs a GPU; MMA runs in fp32 on the CPU\n"
    assert run_precision("fp16", torch.device("cuda"), "MMA") == "fp16"
    assert run_precision("amp", torch.device("cpu"), "MMA") == "amp"
    assert PRECISIONS == ("fp16", "fp32", "amp")
    with pytest.raises(ValueError, match="TRAINER.X.PREC"):
        check_prec("bf16", "TRAINER.X.PREC")


@pytest.mark.parametrize("name", ["MultiModalAdapter", "MMRL", "CoOp", "MaPLe"])
def test_amp_on_the_cpu_agrees_with_fp32(name, toy_root, tmp_path):
    logit_err, loss_err, change = agreement(name, toy_root, str(tmp_path), "amp")
    assert logit_err <= AMP_LOGIT_TOLERANCE and loss_err <= AMP_LOSS_TOLERANCE
    assert change > 0  # the step trained
