"""CUDA only (``pytest -m gpu``; skipped without a GPU): every trainer's amp and fp16 against fp32,
GradScaler steps, and the benchmarks on CUDA in amp and fp16."""
import os.path as osp
import subprocess
import sys

import pytest
import torch

import toy
from precision_check import CONFIGS, agreement, build, one_step

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# fp16 keeps 11 significant bits, fp16 autocast computes in fp16 with fp32 accumulation; test-tiny,
# random weights, one step. The same bounds as bf16 on a CPU (test_precision.py) hold with margin.
LOGIT_TOLERANCE = 0.15  # max |logits - logits_fp32| / max |logits_fp32|
LOSS_TOLERANCE = 0.1  # |loss - loss_fp32| / |loss_fp32|
FP16_TRAINERS = [name for name in CONFIGS if name != "MMRLpp"]  # MMRL++ refuses fp16 (the reference crashes)


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    return toy.make_toy_root(str(tmp_path_factory.mktemp("toy")))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_amp_on_cuda_agrees_with_fp32(name, toy_root, tmp_path):
    logit_err, loss_err, change = agreement(name, toy_root, str(tmp_path), "amp", cuda=True)
    assert logit_err <= LOGIT_TOLERANCE and loss_err <= LOSS_TOLERANCE and change > 0


@pytest.mark.parametrize("name", FP16_TRAINERS)
def test_fp16_on_cuda_agrees_with_fp32(name, toy_root, tmp_path):
    logit_err, loss_err, change = agreement(name, toy_root, str(tmp_path), "fp16", cuda=True)
    assert logit_err <= LOGIT_TOLERANCE and loss_err <= LOSS_TOLERANCE and change > 0


@pytest.mark.parametrize("name", ["MultiModalAdapter", "MMRL", "CoOp", "MaPLe", "CLIP_Adapter"])
def test_amp_steps_through_a_grad_scaler(name, toy_root, tmp_path):
    trainer = build(name, toy_root, str(tmp_path), "amp", cuda=True)
    assert isinstance(trainer.scaler, torch.amp.GradScaler) and trainer.scaler.is_enabled()
    g = torch.Generator().manual_seed(0)
    images = torch.randn(4, 3, 224, 224, generator=g).cuda()
    labels = torch.randint(0, 4, (4,), generator=g).cuda()
    changes = [one_step(trainer, images, labels)[1] for _ in range(3)]
    assert all(c > 0 for c in changes)
    scale = trainer.scaler.get_scale()
    assert 0 < scale <= 2.0**16 and all(torch.isfinite(p).all() for p in trainer.model.parameters())


@pytest.mark.parametrize("prec", ["amp", "fp16"])
def test_benchmarks_run_on_cuda(prec, tmp_path):
    common = ["--prec", prec, "MODEL.BACKBONE.NAME", "test-tiny"]
    commands = [
        [sys.executable, "bench/bench_step.py", "--trainer", "MultiModalAdapter", "--iters", "2", *common],
        [sys.executable, "bench/bench_step.py", "--trainer", "MMRL", "--mode", "eval", "--iters", "2", *common],
        [sys.executable, "bench/bench_e2e.py", "--trainer", "MultiModalAdapter", "--classes", "4", "--shots", "2",
         "--test-per-class", "2", "--epochs", "1", "--work-dir", str(tmp_path), *common],
    ]
    for command in commands:
        proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        assert lines and all("MiB-GPU" in line for line in lines), proc.stdout[-2000:]
