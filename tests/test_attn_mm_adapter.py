"""Tests for the attention-based Multi-Modal Adapter (trainers/attn_mm_adapter.py) and the shared
feature cache (trainers/common/feature_cache.py): mask semantics, parameter counts, cached == direct
path, early stopping, training-only noise, loading base-trained weights for another class list."""
import contextlib
import io
import math
import os

import pytest
import torch

import toy
from helpers import REPO, build_toy_trainer
from trainers.attn_mm_adapter import (
    AttnMMAdapterCLIP, MultiModalAttentionAdapter, cross_modal_attention_mask,
)
from trainers.common.feature_cache import FEATURE_KEY, compute_image_features, feature_loader_like, sequential_loader

CONFIG = os.path.join(REPO, "configs", "trainers", "AttnMMAdapter", "vit_b16_paper.yaml")


def build(root, out, *opts, classes_root=None, backbone="test-tiny"):
    """An AttnMMAdapter trainer on the toy dataset, seeded as train.main does."""
    return build_toy_trainer([
        "--root", classes_root or root, "--trainer", "AttnMMAdapter", "--config-file", CONFIG,
        "--output-dir", out, "--seed", "1",
        "DATASET.NAME", "ToyColours", "DATALOADER.NUM_WORKERS", "0", "MODEL.BACKBONE.NAME", backbone,
        "MODEL.BACKBONE.WEIGHTS", "random", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
        "DATALOADER.TEST.BATCH_SIZE", "5", "OPTIM.MAX_EPOCH", "2", "TRAIN.PRINT_FREQ", "100", *opts,
    ], quiet=False)[0]


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    return toy.make_toy_root(str(tmp_path_factory.mktemp("toy")), per_class=6, num_classes=4)


# --- attention mask ------------------------------------------------------------------------------

def test_mask_values():
    c = 3  # tokens 0, 1, 2 are texts, 3 is the image
    allowed = torch.tensor([[0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 1], [1, 1, 1, 0]], dtype=torch.bool)
    hard = cross_modal_attention_mask(c, "cross_modal")
    assert hard.shape == (4, 4)
    assert torch.all(hard[allowed] == 0) and torch.all(torch.isneginf(hard[~allowed]))
    assert torch.equal(cross_modal_attention_mask(c, "additive_01"), allowed.float())
    assert cross_modal_attention_mask(c, "none") is None
    with pytest.raises(ValueError):
        cross_modal_attention_mask(c, "soft")


def manual_attention(mha, x, mask):
    """softmax(Q K^T / sqrt(d_h) + mask) V per head, then the output projection (the paper's formula)."""
    d, h = mha.embed_dim, mha.num_heads
    q, k, v = torch.nn.functional.linear(x, mha.in_proj_weight, mha.in_proj_bias).split(d, dim=-1)
    split = lambda t: t.view(t.shape[0], t.shape[1], h, d // h).transpose(1, 2)  # noqa: E731
    logits = split(q) @ split(k).transpose(-1, -2) / math.sqrt(d // h)
    if mask is not None:
        logits = logits + mask
    out = (logits.softmax(-1) @ split(v)).transpose(1, 2).reshape(x.shape)
    return mha.out_proj(out)


@pytest.mark.parametrize("kind", ["cross_modal", "additive_01", "none"])
def test_attention_matches_formula(kind):
    torch.manual_seed(0)
    adapter = MultiModalAttentionAdapter(16, down_dims=[8], n_heads=2, up_dims=[]).eval()
    x = torch.randn(3, 5, 8)
    mask = cross_modal_attention_mask(4, kind)
    with torch.no_grad():
        torch.testing.assert_close(adapter.attend(x, mask), manual_attention(adapter.mha, x, mask),
                                   atol=1e-6, rtol=1e-5)


def changed_outputs(attend, x, position):
    """Which output positions change when the input token at ``position`` is perturbed."""
    with torch.no_grad():
        before = attend(x)
        y = x.clone()
        y[:, position] += torch.randn_like(y[:, position])
        after = attend(y)
    return [(before[:, i] - after[:, i]).abs().max().item() > 1e-5 for i in range(x.shape[1])]


def test_cross_modal_mask_semantics_mha():
    torch.manual_seed(0)
    c = 4
    adapter = MultiModalAttentionAdapter(16, down_dims=[8], n_heads=2, up_dims=[]).eval()
    mask = cross_modal_attention_mask(c, "cross_modal")
    attend = lambda t: adapter.attend(t, mask)  # noqa: E731
    x = torch.randn(2, c + 1, 8)
    out = attend(x).detach()
    # A text query has one allowed key (the image): every text position gets the same output.
    for i in range(1, c):
        torch.testing.assert_close(out[:, i], out[:, 0], atol=0, rtol=0)
    # A text token influences only the image position (no self-attention, no text-text attention).
    for j in range(c):
        assert changed_outputs(attend, x, j) == [False] * c + [True]
    # The image influences every position (texts read it; its own query comes from it).
    assert changed_outputs(attend, x, c) == [True] * (c + 1)


@pytest.mark.parametrize("kind", ["none", "additive_01"])
def test_unmasked_variants_mix_texts(kind):
    torch.manual_seed(0)
    adapter = MultiModalAttentionAdapter(16, down_dims=[8], n_heads=2, up_dims=[]).eval()
    mask = cross_modal_attention_mask(3, kind)
    x = torch.randn(2, 4, 8)
    assert changed_outputs(lambda t: adapter.attend(t, mask), x, 0) == [True] * 4


def test_cross_modal_mask_semantics_transformer_block():
    torch.manual_seed(0)
    c = 3
    adapter = MultiModalAttentionAdapter(16, down_dims=[8], n_heads=2, up_dims=[], block="transformer").eval()
    mask = cross_modal_attention_mask(c, "cross_modal")
    x = torch.randn(2, c + 1, 8)
    # Text j reaches its own output through the residual, other texts not at all, the image through attention.
    for j in range(c):
        expected = [i == j for i in range(c)] + [True]
        assert changed_outputs(lambda t: adapter.attend(t, mask), x, j) == expected


def reference_logits(model, image_features):
    """The method as written: the full [B, C+1, E] sequence through the adapter, split, blend, cosine."""
    text, ratio = model.text_features, model.ratio
    batch, num_classes = image_features.shape[0], text.shape[0]
    tokens = torch.cat([text.expand(batch, num_classes, -1), image_features.unsqueeze(1)], dim=1)
    out = model.adapter(tokens, cross_modal_attention_mask(num_classes, model.mask_kind))
    out = out / out.norm(dim=-1, keepdim=True)
    norm = lambda x: x / x.norm(dim=-1, keepdim=True)  # noqa: E731
    image = norm((1 - ratio) * image_features + ratio * out[:, num_classes])
    texts = norm((1 - ratio) * text + ratio * out[:, :num_classes]) if model.adapt_text else text.expand_as(out[:, :-1])
    return model.logit_scale * (image.unsqueeze(1) * texts).sum(-1)


@pytest.mark.parametrize("mask", ["cross_modal", "additive_01", "none"])
@pytest.mark.parametrize("block", ["mha", "transformer"])
@pytest.mark.parametrize("adapt_text", [True, False])
def test_model_matches_method_as_written(mask, block, adapt_text):
    torch.manual_seed(0)
    embed, classes = 16, 5
    adapter = MultiModalAttentionAdapter(embed, down_dims=[4, 8], n_heads=2, up_dims=[4], block=block).eval()
    text = torch.nn.functional.normalize(torch.randn(classes, embed), dim=-1)
    model = AttnMMAdapterCLIP(torch.nn.Identity(), adapter, text, torch.tensor(100.0), mask=mask,
                              adapt_text=adapt_text)
    image = torch.nn.functional.normalize(torch.randn(3, embed), dim=-1)
    label = torch.tensor([0, 3, 4])
    with torch.no_grad():
        expected = reference_logits(model, image)
    assert model.cross_modal_shortcut == (mask == "cross_modal" and block == "mha")
    results = []
    for shortcut in (model.cross_modal_shortcut, False):  # as built, then the general masked attention
        model.cross_modal_shortcut = shortcut
        adapter.zero_grad()
        logits = model(image)
        torch.nn.functional.cross_entropy(logits, label).backward()
        torch.testing.assert_close(logits.detach(), expected, atol=1e-5, rtol=0)
        results.append([p.grad.clone() for p in adapter.parameters()])
    for grad_a, grad_b in zip(*results):
        torch.testing.assert_close(grad_a, grad_b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["cross_modal", "additive_01", "none"])
def test_transformer_block_evaluates_like_it_trains(kind):
    # PyTorch's encoder-layer fast path (eval + no grad) reads a float mask as boolean; the block
    # must give the training-path numbers at evaluation too.
    torch.manual_seed(0)
    adapter = MultiModalAttentionAdapter(16, down_dims=[8], n_heads=2, up_dims=[], block="transformer").eval()
    x = torch.randn(3, 5, 8)
    mask = cross_modal_attention_mask(4, kind)
    training_path = adapter.transformer(x, src_mask=mask).detach()  # grad enabled: no fast path
    with torch.no_grad():
        torch.testing.assert_close(adapter.attend(x, mask), training_path, atol=1e-5, rtol=0)


# --- parameter counts ----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, expected", [
    (dict(), 107_712),  # public main branch (the reported count)
    (dict(down_dims=[128]), 152_736),  # the paper's single-layer downsampler formula
    (dict(down_dims=[128], up_dims=[]), 197_760),  # ablation: linear sampling
    (dict(down_dims=[128, 128], down_act="gelu", up_dims=[128]), 230_784),  # ablation: MLP sampling
    (dict(down_dims=[128], up_dims=[], block="transformer"), 724_736),
    (dict(down_dims=[128, 128], down_act="gelu", up_dims=[128], block="transformer"), 757_760),
    (dict(block="transformer"), 634_688),
])
def test_parameter_counts(kwargs, expected):
    adapter = MultiModalAttentionAdapter(512, **kwargs)
    assert sum(p.numel() for p in adapter.parameters()) == expected


def test_default_adapter_layout():
    adapter = MultiModalAttentionAdapter(512)
    assert [k for k, _ in adapter.named_parameters()] == [
        "downsampler.0.weight", "downsampler.0.bias", "downsampler.1.weight", "downsampler.1.bias",
        "mha.in_proj_weight", "mha.in_proj_bias", "mha.out_proj.weight", "mha.out_proj.bias",
        "upsampler.0.weight", "upsampler.0.bias", "upsampler.2.weight", "upsampler.2.bias",
    ]
    assert isinstance(adapter.upsampler[1], torch.nn.GELU) and adapter.mha.num_heads == 4
    with pytest.raises(ValueError):
        MultiModalAttentionAdapter(512, down_dims=[30], n_heads=4)


@pytest.fixture(scope="module")
def vit_b16_trainer(toy_root, tmp_path_factory):
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        trainer = build(toy_root, str(tmp_path_factory.mktemp("vitb16")), backbone="ViT-B/16")
    return trainer, log.getvalue()


def test_vit_b16_logs_107712(vit_b16_trainer):
    trainer, log = vit_b16_trainer
    assert "Number of trainable parameters: 107,712" in log.splitlines()
    assert trainer.get_model_names() == ["attn_mm_adapter"]
    assert sum(p.numel() for g in trainer.optim.param_groups for p in g["params"]) == 107_712
    assert not any(p.requires_grad for p in trainer.model.clip_model.parameters())
    assert trainer.model.text_features.shape == (4, 512)


# --- feature cache == direct path ---------------------------------------------------------------

@pytest.mark.parametrize("opts", [[], ["TRAINER.ATTN_MM_ADAPTER.ADAPT_TEXT", "False"],
                                  ["TRAINER.ATTN_MM_ADAPTER.MASK", "none"]])
def test_cached_features_give_direct_logits(toy_root, tmp_path, opts):
    trainer = build(toy_root, str(tmp_path), *opts)
    trainer.set_model_mode("eval")
    image_loader = trainer.dm.test_loader  # trainer.test_loader serves the eval cache's features
    cache = compute_image_features(trainer.model.encode_images, image_loader, trainer.device)
    cached_loader = feature_loader_like(image_loader, cache)
    assert len(cached_loader) == len(image_loader)
    with torch.no_grad():
        for image_batch, feature_batch in zip(image_loader, cached_loader):
            assert torch.equal(image_batch["index"], feature_batch["index"])
            assert torch.equal(image_batch["label"], feature_batch["label"])
            direct = trainer.model_inference(trainer.parse_batch_test(image_batch)[0])
            cached = trainer.model_inference(trainer.parse_batch_test(feature_batch)[0])
            assert direct.shape == (len(image_batch["label"]), 4)
            torch.testing.assert_close(cached, direct, atol=1e-5, rtol=0)


def test_feature_loader_shuffles_like_image_loader(toy_root, tmp_path):
    trainer = build(toy_root, str(tmp_path), "DATALOADER.TRAIN_X.BATCH_SIZE", "5")
    image_loader = trainer.train_loader_x  # 12 items, batch 5: drop_last leaves 2 batches
    items = trainer.dm.dataset.train_x
    cache = compute_image_features(trainer.model.encode_images,
                                   sequential_loader(trainer.cfg, items, trainer.dm.tfm_train), trainer.device)
    feature_loader = feature_loader_like(image_loader, cache)
    torch.manual_seed(123)
    image_order = [b["index"].tolist() for b in image_loader]
    after_images = torch.rand(1)
    torch.manual_seed(123)
    feature_order = [b["index"].tolist() for b in feature_loader]
    assert feature_order == image_order and len(feature_order) == 2
    assert torch.equal(torch.rand(1), after_images)  # the same random draws were consumed


def test_cached_training_equals_direct_training(toy_root, tmp_path):
    trainers = {}
    for cache in ("True", "False"):
        trainer = build(toy_root, str(tmp_path / cache), "TRAINER.ATTN_MM_ADAPTER.CACHE_FEATURES", cache)
        trainer.train()
        trainers[cache] = trainer
    cached, direct = trainers["True"], trainers["False"]
    assert FEATURE_KEY in next(iter(cached.train_loader_x)) and FEATURE_KEY in next(iter(cached.val_loader))
    assert FEATURE_KEY not in next(iter(direct.train_loader_x))
    assert cached.best_result == direct.best_result
    batch = next(iter(direct.dm.test_loader))
    with torch.no_grad():
        features = direct.parse_batch_test(batch)[0]
        torch.testing.assert_close(cached.model_inference(features), direct.model_inference(features),
                                   atol=1e-5, rtol=0)
    # Weights agree too, except the attention key bias: its gradient is exactly zero (a shift of
    # all keys does not change a softmax), so Adam turns rounding noise into steps there, without
    # any effect on the outputs (checked above).
    width = cached.model.adapter.mha.embed_dim
    for (name, a), (_, b) in zip(cached.model.adapter.state_dict().items(), direct.model.adapter.state_dict().items()):
        if name == "mha.in_proj_bias":
            a, b = torch.cat([a[:width], a[2 * width:]]), torch.cat([b[:width], b[2 * width:]])
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=name)
    # bench/bench_step.py times the step the epoch loop runs: on features with the cache, on images without.
    bench_batch = {"img": batch["img"][:2], "label": batch["label"][:2]}
    assert set(cached.prepare_bench_batch(bench_batch)) == {FEATURE_KEY, "label"}
    assert direct.prepare_bench_batch(bench_batch) is bench_batch


# --- early stopping, noise, augmentation, loading ------------------------------------------------

def test_early_stopping_keeps_best_val_model(toy_root, tmp_path):
    out = str(tmp_path / "run")
    # LR 0: val accuracy never improves after epoch 1, so PATIENCE 2 stops after epoch 3 of 6.
    trainer = build(toy_root, out, "OPTIM.LR", "0.0", "OPTIM.MAX_EPOCH", "6", "TRAINER.ATTN_MM_ADAPTER.PATIENCE", "2")
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        trainer.train()
    lines = log.getvalue().splitlines()
    assert lines.count("Evaluate on the *val* set") == 3
    assert any(line.startswith("Early stopping after epoch 3:") for line in lines)
    tail = lines[lines.index("Finish training"):]
    assert tail[1] == "Deploy the model with the best val performance"
    assert "(epoch = 1)" in tail[2] and "Evaluate on the *test* set" in tail
    files = sorted(os.listdir(os.path.join(out, "attn_mm_adapter")))
    assert files == ["checkpoint", "model-best.pth.tar", "model.pth.tar-3"]


def test_patience_needs_best_val(toy_root, tmp_path):
    with pytest.raises(ValueError, match="best_val"):
        build(toy_root, str(tmp_path), "TEST.FINAL_MODEL", "last_step")


def test_noise_only_on_training_images(toy_root, tmp_path):
    trainer = build(toy_root, str(tmp_path), "TRAINER.ATTN_MM_ADAPTER.NOISE_STD", "0.5")
    assert not trainer.trains_on_cached_features()
    batch = next(iter(trainer.dm.test_loader))
    train_a, train_b = (trainer.image_features(batch, train=True) for _ in range(2))
    test_a, test_b = (trainer.image_features(batch, train=False) for _ in range(2))
    assert torch.equal(test_a, test_b)
    assert not torch.allclose(train_a, train_b) and not torch.allclose(train_a, test_a)
    trainer.before_train()  # training stays on images (fresh noise per step), val is cached
    assert "img" in next(iter(trainer.train_loader_x)) and FEATURE_KEY in next(iter(trainer.val_loader))


def test_no_augmentation_uses_test_transform(toy_root, tmp_path):
    trainer = build(toy_root, str(tmp_path))
    names = [type(t).__name__ for t in trainer.dm.tfm_train.transforms]
    assert names == [type(t).__name__ for t in trainer.dm.tfm_test.transforms]
    assert "CenterCrop" in names and "RandomResizedCrop" not in names
    augmented = build(toy_root, str(tmp_path / "aug"), "TRAINER.ATTN_MM_ADAPTER.TRAIN_AUG", "True")
    assert "RandomResizedCrop" in [type(t).__name__ for t in augmented.dm.tfm_train.transforms]
    assert not augmented.trains_on_cached_features()


def test_weights_load_for_another_class_list(toy_root, tmp_path):
    out = str(tmp_path / "base")
    trainer = build(toy_root, out, "OPTIM.MAX_EPOCH", "1")
    trainer.train()
    other_root = toy.make_toy_root(str(tmp_path / "toy3"), per_class=2, num_classes=3)
    other = build(toy_root, str(tmp_path / "new"), classes_root=other_root)
    other.load_model(out, epoch=1)
    assert other.model.text_features.shape[0] == 3 and other.model.attn_mask.shape == (4, 4)
    for (name, a), (_, b) in zip(trainer.model.adapter.state_dict().items(), other.model.adapter.state_dict().items()):
        assert torch.equal(a, b), name
    # Its test accuracy is that of the loaded adapter computed here on the 3-class test images.
    other.set_model_mode("eval")
    correct = total = 0
    with torch.no_grad():
        for batch in other.test_loader:
            features = other.model.encode_images(batch["img"]) if "img" in batch else batch[FEATURE_KEY]
            correct += (other.model(features).argmax(1) == batch["label"]).sum().item()
            total += len(batch["label"])
    assert total == 3 and other.test() == pytest.approx(100.0 * correct / total)
