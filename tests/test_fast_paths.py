"""Speed paths that must not change a number: the block's attention path, frozen weights cast once
under autocast, token replacement, and loss meters that read device tensors only at log lines."""
import contextlib
import io
import re

import open_clip
import pytest
import torch

import clip
import toy
from clip import attention, layerwise
from dassl.engine import TRAINER_REGISTRY, SimpleTrainer
from dassl.metrics import compute_accuracy
from dassl.utils import MetricMeter, meters
from helpers import run_train
from trainers.mmrl import representation_hook


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):
        return clip.load("test-tiny", weights="random")[0]


def open_clip_block_forward(block, x, attn_mask=None):
    """The block exactly as open_clip computes it (its own class's forward)."""
    return open_clip.transformer.ResidualAttentionBlock.forward(block, x, attn_mask=attn_mask)


def blocks_and_inputs(tiny):
    g = torch.Generator().manual_seed(3)
    visual = tiny.visual.transformer.resblocks[4], torch.randn(3, 50, 64, generator=g), None
    text = tiny.transformer.resblocks[7], torch.randn(5, 9, 32, generator=g), layerwise.causal_mask(tiny, 9)
    return [visual, text]


def test_clip_load_gives_every_block_the_fast_class(tiny):
    blocks = list(tiny.visual.transformer.resblocks) + list(tiny.transformer.resblocks)
    assert all(type(b) is attention.ResidualAttentionBlock for b in blocks)
    assert isinstance(blocks[0], open_clip.transformer.ResidualAttentionBlock)  # same parameters and keys
    assert not any(k.startswith("_") for k in tiny.state_dict())


def test_block_with_autograd_equals_open_clip_forward_and_gradients(tiny):
    for block, x, mask in blocks_and_inputs(tiny):
        attn_calls = []
        hook = block.attn.register_forward_hook(lambda *a: attn_calls.append(1))
        x_ours = x.clone().requires_grad_(True)
        x_ref = x.clone().requires_grad_(True)
        weight = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
        out = block(x_ours, attn_mask=mask)
        (out * weight).sum().backward()
        assert attn_calls == []  # the attention ran through self_attention, not nn.MultiheadAttention
        ref = open_clip_block_forward(block, x_ref, mask)
        (ref * weight).sum().backward()
        hook.remove()
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(x_ours.grad, x_ref.grad, atol=1e-5, rtol=1e-5)


def test_frozen_inference_stays_bit_equal_to_open_clip(tiny):
    """Eval mode without autograd or autocast: open_clip's own path (its fused attention kernel)."""
    for block, x, mask in blocks_and_inputs(tiny):
        with torch.no_grad():
            assert torch.equal(block(x, attn_mask=mask), open_clip_block_forward(block, x, mask))


def test_autocast_weights_cast_once_give_plain_autocast_numbers(tiny, monkeypatch):
    block, x, _ = blocks_and_inputs(tiny)[0]

    def forward_and_grad():
        x_in = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = block(x_in)
        out.float().sum().backward()
        return out, x_in.grad

    cached = forward_and_grad()
    monkeypatch.setattr(attention, "autocast_weight", lambda weight, device_type: weight)  # autocast casts each call
    plain = forward_and_grad()
    assert torch.equal(cached[0], plain[0]) and torch.equal(cached[1], plain[1])


def test_autocast_weight_cache_follows_the_weight():
    weight = torch.nn.Parameter(torch.randn(6, 4), requires_grad=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        first = attention.autocast_weight(weight, "cpu")
        assert first.dtype == torch.bfloat16 and torch.equal(first, weight.to(torch.bfloat16))
        assert attention.autocast_weight(weight, "cpu") is first  # cast once
        with torch.no_grad():
            weight.copy_(torch.randn(6, 4))  # as load_state_dict does
        second = attention.autocast_weight(weight, "cpu")
        assert torch.equal(second, weight.to(torch.bfloat16)) and not torch.equal(second, first)
        trainable = torch.nn.Parameter(torch.randn(6, 4))
        assert attention.autocast_weight(trainable, "cpu") is trainable  # autocast's own cache handles these
    assert attention.autocast_weight(weight, "cpu") is weight  # outside autocast


@pytest.mark.parametrize("autocast", [False, True])
def test_last_block_on_the_read_rows_equals_the_full_block_with_gradients(tiny, autocast):
    """``run_blocks(rows=...)``: the last block computes only the rows a head reads (CLS, CLS + K
    tokens, each prompt's EOT), with the values and input gradients of the full blocks' rows."""
    g = torch.Generator().manual_seed(11)
    text_x = torch.randn(5, 9, 32, generator=g)
    eot = torch.tensor([8, 3, 5, 0, 7])
    cases = [
        (tiny.visual.transformer.resblocks, torch.randn(3, 50, 64, generator=g), None, layerwise.Rows(0, 1)),
        (tiny.visual.transformer.resblocks, torch.randn(3, 50, 64, generator=g), None, layerwise.Rows(0, 4)),
        (tiny.transformer.resblocks, text_x, layerwise.causal_mask(tiny, 9), layerwise.Rows(index=eot)),
    ]
    for blocks, x, mask, rows in cases:
        results = []
        for pruned in (True, False):
            x_in = x.clone().requires_grad_()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                if pruned:
                    out = layerwise.run_blocks(blocks, x_in, mask, first=10, rows=rows)
                else:
                    out = rows.take(layerwise.run_blocks(blocks, x_in, mask, first=10))
            weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
            results.append((out.float(), torch.autograd.grad((out.float() * weight).sum(), x_in)[0]))
        (pruned_out, pruned_grad), (full_out, full_grad) = results
        assert pruned_out.shape == (x.shape[0], 1 if rows.index is not None else rows.stop, x.shape[2])
        tol = 2e-2 if autocast else 1e-5
        torch.testing.assert_close(pruned_out, full_out, rtol=tol, atol=tol)
        torch.testing.assert_close(pruned_grad, full_grad, rtol=tol, atol=tol)


def test_last_block_on_the_read_rows_runs_its_mlp_on_those_rows_only(tiny):
    block = tiny.visual.transformer.resblocks[11]
    seen = []
    handle = block.ln_2.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape))  # the MLP input
    try:
        with torch.no_grad():
            layerwise.run_blocks(tiny.visual.transformer.resblocks, torch.randn(3, 50, 64), first=12,
                                 rows=layerwise.Rows(0, 1))
    finally:
        handle.remove()
    assert seen == [torch.Size([3, 1, 64])]  # not [3, 50, 64]


def test_token_replacement_equals_the_concatenation_with_gradients():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 9, 8, generator=g, requires_grad=True)
    tokens = torch.randn(2, 8, generator=g, requires_grad=True)
    weight = torch.randn(3, 9, 8, generator=g)

    def value_and_grads(out):
        return (out, *torch.autograd.grad((out * weight).sum(), (x, tokens)))

    expanded = tokens.unsqueeze(0).expand(3, -1, -1)
    cases = [
        (layerwise.replace_tokens(x, tokens, -2), torch.cat([x[:, :7], expanded], 1)),
        (representation_hook({4: tokens}, 2, 2)(4, x), torch.cat([x[:, :1], expanded, x[:, 3:]], 1)),
        (representation_hook({4: tokens}, 2, 2, beta=0.7)(4, x),
         torch.cat([x[:, :1], 0.7 * expanded + 0.3 * x[:, 1:3], x[:, 3:]], 1)),
    ]
    for ours, reference in cases:
        for a, b in zip(value_and_grads(ours), value_and_grads(reference)):
            assert torch.equal(a, b)


# --------------------------------------------------------------------------- meters and the log


def test_meters_read_tensors_once_per_log_line(monkeypatch):
    reads = []
    real = meters._as_floats
    monkeypatch.setattr(meters, "_as_floats", lambda values: reads.append(1) or real(values))
    lazy, eager = MetricMeter(), MetricMeter()
    g = torch.Generator().manual_seed(6)
    for _ in range(5):
        loss, acc = torch.rand(1, generator=g)[0] * 3, torch.tensor([62.5])
        lazy.update({"loss": loss, "acc": acc})
        eager.update({"loss": loss.item(), "acc": acc.item()})
    assert reads == []  # nothing read while training
    line = str(lazy)
    assert len(reads) == 1  # one read for all pending values of all meters
    assert line == str(eager)
    assert lazy.meters["loss"].count == 5 and lazy.meters["loss"].sum == pytest.approx(eager.meters["loss"].sum, abs=0)


class _Recorder:
    def __init__(self):
        self.scalars = []

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def close(self):
        pass


@TRAINER_REGISTRY.register(force=True)
class ToyProbeTensors(toy.ToyProbe):
    """ToyProbe returning its loss and accuracy as tensors, as the CLIP trainers now do."""

    def forward_backward(self, batch):
        image, label = batch["img"].to(self.device), batch["label"].to(self.device)
        output = self.model(image)
        loss = torch.nn.functional.cross_entropy(output, label)
        self.model_backward_and_update(loss)
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {"loss": loss.detach(), "acc": compute_accuracy(output, label)[0]}


def test_training_log_and_scalars_are_those_of_reading_every_step(tmp_path, monkeypatch):
    root = toy.make_toy_root(str(tmp_path / "toy"))
    recorders = []

    def init_writer(self, log_dir):
        self._writer = _Recorder()
        recorders.append(self._writer)
    monkeypatch.setattr(SimpleTrainer, "init_writer", init_writer)
    logs = []
    for name in ("ToyProbe", "ToyProbeTensors"):
        run_train(["--root", root, "--trainer", name, "--output-dir", str(tmp_path / name), "--seed", "1",
                   "DATASET.NAME", "ToyColours", "DATALOADER.NUM_WORKERS", "0", "INPUT.SIZE", "(32, 32)",
                   "INPUT.TRANSFORMS", "('normalize',)", "DATALOADER.TRAIN_X.BATCH_SIZE", "2",
                   "TRAIN.PRINT_FREQ", "4", "OPTIM.NAME", "sgd", "OPTIM.LR", "0.1", "OPTIM.MAX_EPOCH", "2",
                   "OPTIM.LR_SCHEDULER", "cosine", "TEST.NO_TEST", "True"])
        with open(tmp_path / name / "log.txt") as f:  # the upstream progress lines go to log.txt only
            out = f.read()
        # the progress lines without their timings
        logs.append([re.sub(r"(time|data) \S+ \(\S+\) |eta \S+", "", line)
                     for line in out.splitlines() if line.startswith("epoch [")])
    assert logs[0] == logs[1] and len(logs[0]) == 2  # 6 batches per epoch, printed at batch 4
    plain, lazy = (r.scalars for r in recorders)
    assert lazy == plain and len(plain) == 2 * 6 * 3  # loss, acc and lr at every step, same values
