"""MMA (trainer MultiModalAdapter): structure, parameter counts, gradient rescaling, caches, checkpoints.

Model-level tests use the 12-block ``test-tiny`` CLIP (text width 32, vision width 64); ViT-B/16
with random weights is built once, only to count parameters.
"""
import argparse
import contextlib
import io
import os.path as osp

import pytest
import torch
import torch.nn.functional as F

import train
from clip import layerwise, load, tokenize
from dassl.config import get_cfg_default
from helpers import build_toy_trainer
from toy import make_toy_root, toy_classnames
from trainers.common.precision import autocast_for
from trainers.common.utils import freeze_except
from trainers.config import extend_cfg
from trainers.mma import ADAPTER_LISTS, AdapterLearner, build_mma_clip

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CLASSNAMES = ["red_square", "green_thing", "blue_sky", "a_much_longer_class_name_than_the_others"]


def mma_cfg(*opts):
    cfg = get_cfg_default()
    extend_cfg(cfg)
    cfg.merge_from_list(["TRAINER.MMADAPTER.TEXT_CTX_INIT", "a photo of a", "TRAINER.MMADAPTER.ADAPTER_START", 5,
                         "TRAINER.MMADAPTER.ADAPTER_SCALE", 0.001] + list(opts))
    return cfg


def tiny_clip():
    with contextlib.redirect_stdout(io.StringIO()):
        return load("test-tiny", weights="random")[0]


def tiny_model(*opts, seed=0):
    """A test-tiny MMA model; the same seed gives the same CLIP and adapter weights."""
    torch.manual_seed(seed)
    clip_model = tiny_clip()
    with contextlib.redirect_stdout(io.StringIO()):
        model = build_mma_clip(clip_model, CLASSNAMES, mma_cfg(*opts).TRAINER.MMADAPTER)
    freeze_except(model, ADAPTER_LISTS)
    return model


def images(n=2, seed=1):
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


def adapter_grads(model):
    return {k: p.grad.clone() for k, p in model.adapter_learner.named_parameters()}


# --- an independent "plain" MMA forward: the branch added with weight s and ordinary autograd ---

def plain_blocks(model, modality, x, attn_mask=None):
    tower = model.clip_model if modality == "text" else model.clip_model.visual
    learner = model.adapter_learner
    s = learner.scale
    for i, block in enumerate(tower.transformer.resblocks, start=1):
        out = block(x, attn_mask=attn_mask)
        if learner.start <= i <= learner.end:
            out = out + s * learner.adapt(modality, i, block.ln_1(x))
        x = out
    return x


def plain_logits(model, imgs):
    clip_model = model.clip_model
    tokens = model.adapter_learner.tokenized_prompts
    x = model.adapter_learner.token_embedding + clip_model.positional_embedding
    x = plain_blocks(model, "text", x, clip_model.attn_mask)
    text = layerwise.text_head(clip_model, x, tokens.argmax(-1))
    x = plain_blocks(model, "visual", layerwise.image_embeddings(clip_model.visual, imgs))
    image = layerwise.image_head(clip_model.visual, x)
    text = text / text.norm(dim=-1, keepdim=True)
    image = image / image.norm(dim=-1, keepdim=True)
    return clip_model.logit_scale.exp() * image @ text.t()


# ---------------------------------------------------------------------------------------------
# Structure and parameter counts
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vit_b16():
    with contextlib.redirect_stdout(io.StringIO()):
        return load("ViT-B/16", weights="random")[0]


def _count(module, substring=""):
    return sum(p.numel() for n, p in module.named_parameters() if substring in n)


def test_trainable_parameters_vit_b16(vit_b16):
    torch.manual_seed(0)  # the std check below samples the initialisation
    learner = AdapterLearner(vit_b16, ["a photo of a cat."], 5, 12, 32, 0.001)
    assert _count(learner) == 674_560
    assert len(list(learner.parameters())) == 80
    assert (_count(learner, "text_adapter"), _count(learner, "visual_adapter"), _count(learner, "shared_adapter")) \
        == (266_496, 399_616, 8_448)
    assert _count(AdapterLearner(vit_b16, ["a photo of a cat."], 9, 12, 32, 0.001)) == 337_280
    assert _count(AdapterLearner(vit_b16, ["a photo of a cat."], 4, 12, 32, 0.001)) == 758_880

    # Kaiming-normal (fan_out, relu): std sqrt(2 / out_features); zero biases.
    for weight, std in ((learner.text_adapter[5].down[0].weight, 0.25), (learner.shared_adapter[7][0].weight, 0.25),
                        (learner.text_adapter[12].up.weight, 2 ** 0.5 / 512 ** 0.5),
                        (learner.visual_adapter[9].up.weight, 2 ** 0.5 / 768 ** 0.5)):
        assert weight.std().item() == pytest.approx(std, rel=0.06)
    assert all(b.abs().sum() == 0 for n, b in learner.named_parameters() if n.endswith("bias"))


def test_reference_key_layout():
    """13 slots per list; only 5..12 hold modules; keys as in the reference checkpoints."""
    learner = tiny_model().adapter_learner
    assert all(len(getattr(learner, name)) == 13 for name in ADAPTER_LISTS)
    expected = {"token_embedding", "tokenized_prompts"}
    for i in range(5, 13):
        for tower in ("text_adapter", "visual_adapter"):
            expected |= {f"{tower}.{i}.down.0.weight", f"{tower}.{i}.down.0.bias",
                         f"{tower}.{i}.up.weight", f"{tower}.{i}.up.bias"}
        expected |= {f"shared_adapter.{i}.0.weight", f"shared_adapter.{i}.0.bias"}
    assert set(learner.state_dict()) == expected
    assert learner.token_embedding.shape == (4, 77, 32) and learner.tokenized_prompts.shape == (4, 77)
    assert torch.equal(learner.tokenized_prompts[0], tokenize("a photo of a red square.")[0])


def test_bad_layer_range():
    with pytest.raises(ValueError, match="ADAPTER_START"):
        tiny_model("TRAINER.MMADAPTER.ADAPTER_START", 10, "TRAINER.MMADAPTER.ADAPTER_END", 9)
    with pytest.raises(ValueError, match="ADAPTER_END"):
        tiny_model("TRAINER.MMADAPTER.ADAPTER_END", 13)


# ---------------------------------------------------------------------------------------------
# Forward: shapes, placement of the branch, slot 0
# ---------------------------------------------------------------------------------------------

def test_shapes_and_branch_placement():
    model = tiny_model("TRAINER.MMADAPTER.ADAPTER_SCALE", 0.5)
    imgs = images()
    logits = model(imgs)
    assert logits.shape == (2, 4)
    assert model.encode_text().shape == (4, 32) and model.encode_image(imgs).shape == (2, 32)
    # out_i = block_i(x) + s * A_i(LN1_i(x)) on all tokens, blocks 5..12 of both towers.
    torch.testing.assert_close(logits, plain_logits(model, imgs), rtol=1e-5, atol=1e-5)
    # The adapters matter (s = 0.5 is large here), and with zero up-projections MMA is plain CLIP.
    with torch.no_grad():
        for name in ("text_adapter", "visual_adapter"):
            for adapter in getattr(model.adapter_learner, name)[5:]:
                adapter.up.weight.zero_()
                adapter.up.bias.zero_()
        clip_model = model.clip_model
        text = clip_model.encode_text(tokenize([f"a photo of a {n.replace('_', ' ')}." for n in CLASSNAMES]))
        image = clip_model.encode_image(imgs)
        text, image = F.normalize(text, dim=-1), F.normalize(image, dim=-1)
        zero_shot = clip_model.logit_scale.exp() * image @ text.t()
    assert (logits - zero_shot).abs().max() > 1e-3
    torch.testing.assert_close(model(imgs), zero_shot, rtol=1e-5, atol=1e-5)


def test_slot_zero_adapts_embeddings():
    """START 0: slot 0 acts on the token embeddings (before positions) and on ln_pre's output."""
    model = tiny_model("TRAINER.MMADAPTER.ADAPTER_START", 0, "TRAINER.MMADAPTER.ADAPTER_END", 2,
                       "TRAINER.MMADAPTER.ADAPTER_SCALE", 0.5)
    learner, clip_model = model.adapter_learner, model.clip_model
    s = learner.scale
    assert _count(learner.text_adapter[0]) > 0 and _count(learner.text_adapter[3]) == 0
    imgs = images()
    e = learner.token_embedding
    x = e + s * learner.adapt("text", 0, e) + clip_model.positional_embedding
    learner.start = 1  # plain_blocks adapts blocks start..end; slot 0 was applied above
    x = plain_blocks(model, "text", x, clip_model.attn_mask)
    text = layerwise.text_head(clip_model, x, learner.tokenized_prompts.argmax(-1))
    v = layerwise.image_embeddings(clip_model.visual, imgs)
    v = plain_blocks(model, "visual", v + s * learner.adapt("visual", 0, v))
    image = layerwise.image_head(clip_model.visual, v)
    learner.start = 0
    expected = clip_model.logit_scale.exp() * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).t()
    torch.testing.assert_close(model(imgs), expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Gradient rescaling (mma.md §6)
# ---------------------------------------------------------------------------------------------

def test_adapter_gradients_are_rescaled_by_one_over_s():
    s = 0.01
    model = tiny_model("TRAINER.MMADAPTER.ADAPTER_SCALE", s)
    imgs, labels = images(), torch.tensor([0, 3])
    logits = model(imgs)
    F.cross_entropy(logits, labels).backward()
    rescaled = adapter_grads(model)
    model.adapter_learner.zero_grad()
    plain = plain_logits(model, imgs)
    torch.testing.assert_close(logits, plain, rtol=1e-5, atol=1e-5)  # forward unchanged
    F.cross_entropy(plain, labels).backward()
    assert len(rescaled) == 8 * 10
    for name, grad in adapter_grads(model).items():
        scale = grad.abs().max().item()
        assert scale > 0, name
        assert (rescaled[name] * s - grad).abs().max().item() < 1e-5 * scale, name


@pytest.mark.parametrize("modality", ["text", "visual"])
def test_backbone_stream_gets_the_exact_gradient(modality):
    """Through blocks with branches, the gradient reaching the residual stream is the plain one."""
    s = 0.01
    model = tiny_model("TRAINER.MMADAPTER.ADAPTER_SCALE", s, "TRAINER.MMADAPTER.ADAPTER_START", 1)
    width = 32 if modality == "text" else 64
    mask = model.clip_model.attn_mask[:9, :9] if modality == "text" else None
    x = torch.randn(3, 9, width, generator=torch.Generator().manual_seed(2), requires_grad=True)
    weights = torch.randn(3, 9, width, generator=torch.Generator().manual_seed(3))
    (model.adapted_blocks(modality, x, mask) * weights).sum().backward()
    rescaled = x.grad.clone()
    x.grad = None
    (plain_blocks(model, modality, x, mask) * weights).sum().backward()
    torch.testing.assert_close(rescaled, x.grad, rtol=1e-5, atol=1e-6)
    # The branches' share of that gradient is far above the tolerance, so a wrong factor would show.
    x.grad = None
    model.adapter_learner.end = 0
    (plain_blocks(model, modality, x, mask) * weights).sum().backward()
    assert (rescaled - x.grad).abs().max() > 1e-3 * rescaled.abs().max()


# ---------------------------------------------------------------------------------------------
# Caches: same numbers as the direct path
# ---------------------------------------------------------------------------------------------

def _count_calls(module):
    calls = []
    module.register_forward_hook(lambda m, inp, out: calls.append(inp[0].shape))
    return calls


def test_frozen_text_cache_same_logits_and_gradients():
    cached = tiny_model("TRAINER.MMADAPTER.CACHE_FROZEN_TEXT", True)
    direct = tiny_model("TRAINER.MMADAPTER.CACHE_FROZEN_TEXT", False)
    calls_cached = _count_calls(cached.clip_model.transformer.resblocks[0])
    calls_direct = _count_calls(direct.clip_model.transformer.resblocks[0])
    cached.adapter_learner.train()
    direct.adapter_learner.train()
    imgs, labels = images(), torch.tensor([1, 2])
    for _ in range(2):
        a, b = cached(imgs), direct(imgs)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    F.cross_entropy(a, labels).backward()
    F.cross_entropy(b, labels).backward()
    for name, grad in adapter_grads(cached).items():
        torch.testing.assert_close(grad, adapter_grads(direct)[name], rtol=1e-5, atol=1e-7)
    assert len(calls_cached) == 1 and len(calls_direct) == 2  # block 1 of the text tower ran once


def test_frozen_text_cache_under_autocast():
    cached = tiny_model("TRAINER.MMADAPTER.CACHE_FROZEN_TEXT", True)
    direct = tiny_model("TRAINER.MMADAPTER.CACHE_FROZEN_TEXT", False)
    with torch.no_grad():
        fp32 = cached(images())  # a cache entry made outside autocast must not be used inside it
        for _ in range(2):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                a, b = cached(images()), direct(images())
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a.float() - fp32).abs().max() > 0


def test_text_truncation_same_logits():
    truncated = tiny_model("TRAINER.MMADAPTER.TRUNCATE_TEXT", True)
    full = tiny_model("TRAINER.MMADAPTER.TRUNCATE_TEXT", False)
    lengths = _count_calls(truncated.clip_model.transformer.resblocks[11])
    with torch.no_grad():
        torch.testing.assert_close(truncated(images()), full(images()), rtol=1e-5, atol=1e-5)
    longest = int(tokenize(["a photo of a a much longer class name than the others."]).argmax()) + 1
    assert lengths == [torch.Size([4, longest, 32])]


def test_eval_text_cache_same_logits_and_invalidated_by_training():
    cached = tiny_model("TRAINER.MMADAPTER.CACHE_EVAL_TEXT", True)
    direct = tiny_model("TRAINER.MMADAPTER.CACHE_EVAL_TEXT", False)
    calls = _count_calls(cached.clip_model.transformer.resblocks[11])
    optims = [torch.optim.SGD(m.adapter_learner.parameters(), lr=1.0) for m in (cached, direct)]
    imgs, labels = images(), torch.tensor([0, 1])
    before = None
    for _ in range(2):
        for m in (cached, direct):
            m.adapter_learner.eval()
        with torch.no_grad():
            for _ in range(2):
                torch.testing.assert_close(cached(imgs), direct(imgs), rtol=1e-5, atol=1e-5)
            if before is not None:
                assert (cached(imgs) - before).abs().max() > 1e-4  # the step changed the model
            before = cached(imgs)
        for m, optim in zip((cached, direct), optims):  # one training step on each
            m.adapter_learner.train()
            optim.zero_grad()
            F.cross_entropy(m(imgs), labels).backward()
            optim.step()
    assert len(calls) == 2 + 2  # eval: once per eval phase; training: once per step


def test_frozen_vision_blocks_run_without_autograd():
    model = tiny_model()
    blocks = model.clip_model.visual.transformer.resblocks
    grad_enabled = {}
    for i in (1, 4, 5, 12):
        blocks[i - 1].register_forward_hook(
            lambda m, inp, out, i=i: grad_enabled.__setitem__(i, torch.is_grad_enabled()))
    model(images())
    assert grad_enabled == {1: False, 4: False, 5: True, 12: True}


# ---------------------------------------------------------------------------------------------
# Trainer: steps, log line, checkpoints
# ---------------------------------------------------------------------------------------------

def build_mma_trainer(root, *opts, num_classes=4):
    make_toy_root(root, per_class=4, num_classes=num_classes)
    return build_toy_trainer(
        ["--root", str(root), "--trainer", "MultiModalAdapter", "--output-dir", str(root / "out"),
         "--config-file", osp.join(REPO, "configs/trainers/MultiModalAdapter/vit_b16_ep5.yaml"), "--seed", "1",
         "DATASET.NAME", "ToyColours", "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
         "DATALOADER.TEST.BATCH_SIZE", "4", "MODEL.BACKBONE.NAME", "test-tiny", "MODEL.BACKBONE.WEIGHTS", "random",
         "OPTIM.MAX_EPOCH", "1", "TRAINER.MMADAPTER.PREC", "fp32"] + list(opts), seed=0)


def one_step(trainer):
    """One training step; returns its summary, the loss of the same batch computed here before the
    step (the model's forward and cross-entropy, in the run's precision) and the largest change of
    a text-adapter weight."""
    trainer.set_model_mode("train")
    trainer.batch_idx, trainer.num_batches = 0, 10**6
    batch = next(iter(trainer.train_loader_x))
    image, label = trainer.parse_batch_train(batch)
    with torch.no_grad(), autocast_for(trainer.device, enabled=trainer.prec == "amp"):
        expected = F.cross_entropy(trainer.model(image), label).item()
    before = {k: v.clone() for k, v in trainer.model.adapter_learner.state_dict().items()}
    summary = trainer.forward_backward(batch)
    after = trainer.model.adapter_learner.state_dict()
    change = max((after[k] - before[k]).abs().max().item() for k in before if k.startswith("text_adapter"))
    return summary, expected, change


@pytest.mark.parametrize("prec", ["fp32", "amp"])
def test_training_step(tmp_path, prec):
    trainer, log = build_mma_trainer(tmp_path, "TRAINER.MMADAPTER.PREC", prec)
    assert "Number of trainable parameters: 58,880\n" in log  # 8 layers x (2,112 + 4,192 + 1,056)
    summary, expected, change = one_step(trainer)
    assert set(summary) == {"loss", "acc"} and float(summary["loss"]) == pytest.approx(expected, rel=1e-5)
    assert change > 0
    clip_params = [p for n, p in trainer.model.named_parameters() if n.startswith("clip_model.")]
    assert clip_params and not any(p.requires_grad for p in clip_params)
    assert not trainer.model.clip_model.training and trainer.model.adapter_learner.training


def _eval_logits(trainer):
    trainer.set_model_mode("eval")
    with torch.no_grad():
        return trainer.model(images(3))


def test_checkpoint_reload_on_new_class_set(tmp_path):
    trainer, _ = build_mma_trainer(tmp_path / "base")
    one_step(trainer)
    trainer.save_model(0, str(tmp_path / "run"))
    saved = {k: v.clone() for k, v in trainer.model.adapter_learner.state_dict().items()}

    other, _ = build_mma_trainer(tmp_path / "new", num_classes=6)
    with contextlib.redirect_stdout(io.StringIO()):
        other.load_model(str(tmp_path / "run"), epoch=1)
    loaded = other.model.adapter_learner.state_dict()
    for key, value in saved.items():
        if key in ("token_embedding", "tokenized_prompts"):  # this run's 6 classes are kept
            assert loaded[key].shape[0] == 6
        else:
            assert torch.equal(loaded[key], value), key
    assert _eval_logits(other).shape == (3, 6)
    assert other.model.adapter_learner.tokenized_prompts[5].tolist() == \
        tokenize(f"a photo of a {toy_classnames(6)[5].replace('_', ' ')}.")[0].tolist()


def _reference_state_dict(seed, n_cls=7):
    """A checkpoint as the reference code writes it (keys spelled out), with random adapter weights."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i in range(5, 13):
        for tower, width in (("text_adapter", 32), ("visual_adapter", 64)):
            sd[f"{tower}.{i}.down.0.weight"] = torch.randn(32, width, generator=g)
            sd[f"{tower}.{i}.down.0.bias"] = torch.randn(32, generator=g)
            sd[f"{tower}.{i}.up.weight"] = torch.randn(width, 32, generator=g)
            sd[f"{tower}.{i}.up.bias"] = torch.randn(width, generator=g)
        sd[f"shared_adapter.{i}.0.weight"] = torch.randn(32, 32, generator=g)
        sd[f"shared_adapter.{i}.0.bias"] = torch.randn(32, generator=g)
    sd["token_embedding"] = torch.randn(n_cls, 77, 32, generator=g)  # training classes: dropped on load
    sd["tokenized_prompts"] = torch.randint(0, 49407, (n_cls, 77), generator=g)
    return sd


def _write_reference_checkpoint(directory, state_dict, epoch=5, scheduler=None):
    path = directory / "adapter_learner" / f"model.pth.tar-{epoch}"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": state_dict, "epoch": epoch, "optimizer": None, "scheduler": scheduler,
                "val_result": None}, path)


def _assign_by_attribute(learner, sd):
    """The expected model: each reference tensor copied to the module its name describes."""
    with torch.no_grad():
        for i in range(5, 13):
            for tower in ("text_adapter", "visual_adapter"):
                adapter = getattr(learner, tower)[i]
                adapter.down[0].weight.copy_(sd[f"{tower}.{i}.down.0.weight"])
                adapter.down[0].bias.copy_(sd[f"{tower}.{i}.down.0.bias"])
                adapter.up.weight.copy_(sd[f"{tower}.{i}.up.weight"])
                adapter.up.bias.copy_(sd[f"{tower}.{i}.up.bias"])
            learner.shared_adapter[i][0].weight.copy_(sd[f"shared_adapter.{i}.0.weight"])
            learner.shared_adapter[i][0].bias.copy_(sd[f"shared_adapter.{i}.0.bias"])


def test_reference_checkpoint_loads_with_identical_logits(tmp_path):
    sd = _reference_state_dict(seed=5)
    _write_reference_checkpoint(tmp_path / "reference_output", sd)
    loaded, _ = build_mma_trainer(tmp_path / "a")
    with contextlib.redirect_stdout(io.StringIO()):
        loaded.load_model(str(tmp_path / "reference_output"), epoch=5)
    expected, _ = build_mma_trainer(tmp_path / "b")
    _assign_by_attribute(expected.model.adapter_learner, sd)
    logits = _eval_logits(loaded)
    torch.testing.assert_close(logits, _eval_logits(expected), rtol=0, atol=0)
    fresh, _ = build_mma_trainer(tmp_path / "c")
    assert (logits - _eval_logits(fresh)).abs().max() > 1e-3  # the loaded weights do matter
    assert loaded.model.adapter_learner.token_embedding.shape[0] == 4


def test_reference_checkpoint_with_a_pickled_scheduler_loads_for_evaluation_without_trust(tmp_path, monkeypatch):
    """The scheduler object is read as an inert stand-in (no code runs); the weights load exactly."""
    sd = _reference_state_dict(seed=6)
    _write_reference_checkpoint(tmp_path / "ref", sd, scheduler=argparse.Namespace(last_epoch=5))
    trainer, _ = build_mma_trainer(tmp_path / "a")
    monkeypatch.delenv("DASSL_TRUST_CHECKPOINT", raising=False)
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.load_model(str(tmp_path / "ref"), epoch=5)
    assert torch.equal(trainer.model.adapter_learner.text_adapter[7].up.weight, sd["text_adapter.7.up.weight"])


def test_checkpoint_from_other_layer_range_is_rejected(tmp_path):
    sd = _reference_state_dict(seed=7)
    _write_reference_checkpoint(tmp_path / "ref", sd)
    trainer, _ = build_mma_trainer(tmp_path / "a", "TRAINER.MMADAPTER.ADAPTER_START", "9")
    with pytest.raises(RuntimeError, match="does not match"):
        with contextlib.redirect_stdout(io.StringIO()):
            trainer.load_model(str(tmp_path / "ref"), epoch=5)


def test_init_weights_keep_this_runs_prompts(tmp_path):
    sd = _reference_state_dict(seed=8, n_cls=4)  # same class count: the buffers would fit by shape
    torch.save({"state_dict": sd}, tmp_path / "init.pth")
    trainer, _ = build_mma_trainer(tmp_path / "a", "MODEL.INIT_WEIGHTS", str(tmp_path / "init.pth"))
    learner = trainer.model.adapter_learner
    assert torch.equal(learner.shared_adapter[6][0].bias, sd["shared_adapter.6.0.bias"])
    assert torch.equal(learner.tokenized_prompts[1], tokenize("a photo of a green thing.")[0])
