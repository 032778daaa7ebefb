"""CLIP-Adapter (trainer CLIP_Adapter): the adapter, the blend, the text cache, steps and checkpoints."""
import contextlib
import io
import os.path as osp

import pytest
import torch
import torch.nn.functional as F

from clip import load, tokenize
from dassl.config import get_cfg_default
from helpers import build_toy_trainer
from toy import make_toy_root, toy_classnames
from trainers.clip_adapter import Adapter, AdapterCLIP
from trainers.common.precision import autocast_for
from trainers.common.templates import class_prompts, template_for
from trainers.config import extend_cfg

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CLASSNAMES = ["abyssinian", "great_pyrenees", "yorkshire_terrier"]


def tiny_model(*opts, dataset="OxfordPets"):
    cfg = get_cfg_default()
    extend_cfg(cfg)
    cfg.merge_from_list(["DATASET.NAME", dataset] + list(opts))
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):
        clip_model = load("test-tiny", weights="random")[0]
        node = cfg.TRAINER.CLIP_ADAPTER
        prompts = class_prompts(template_for(dataset), CLASSNAMES)
        return AdapterCLIP(clip_model, prompts, node.RATIO, node.REDUCTION, node.CACHE_TEXT_FEATURES)


def images(n=3, seed=1):
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


def test_trainable_parameters_vit_b16():
    with contextlib.redirect_stdout(io.StringIO()):
        vit_b16 = load("ViT-B/16", weights="random")[0]
    adapter = Adapter(vit_b16.visual.output_dim, 4)  # the width the trainer reads: 512 -> 128 -> 512
    assert sum(p.numel() for p in adapter.parameters()) == 131_072
    assert {k: tuple(v.shape) for k, v in adapter.state_dict().items()} == {"fc.0.weight": (128, 512),
                                                                           "fc.2.weight": (512, 128)}


def test_logits_follow_the_blend_formula():
    model = tiny_model()
    assert model.prompts == [f"a photo of a {n.replace('_', ' ')}, a type of pet." for n in CLASSNAMES]
    with torch.no_grad():
        model.adapter.fc[2].weight.mul_(20)  # make the adapter's share visible in the logits
    imgs = images()
    logits = model(imgs)
    assert logits.shape == (3, 3)

    clip_model = model.clip_model
    with torch.no_grad():
        f = clip_model.encode_image(imgs)  # raw, unnormalised
        w1, w2 = model.adapter.fc[0].weight, model.adapter.fc[2].weight
        adapted = torch.relu(torch.relu(f @ w1.t()) @ w2.t())
        assert (adapted >= 0).all() and adapted.abs().max() > 0
        blended = F.normalize(0.2 * adapted + 0.8 * f, dim=-1)
        text = F.normalize(clip_model.encode_text(tokenize(model.prompts)), dim=-1)
        expected = clip_model.logit_scale.exp() * blended @ text.t()
        zero_shot = clip_model.logit_scale.exp() * F.normalize(f, dim=-1) @ text.t()
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    assert (logits - zero_shot).abs().max() > 1e-3

    other = tiny_model("TRAINER.CLIP_ADAPTER.RATIO", 0.6, "TRAINER.CLIP_ADAPTER.REDUCTION", 2)
    assert other.adapter.fc[0].weight.shape == (16, 32)
    with torch.no_grad():
        f_adapted = other.adapter(f)
        expected = clip_model.logit_scale.exp() * F.normalize(0.6 * f_adapted + 0.4 * f, dim=-1) @ text.t()
        torch.testing.assert_close(other(imgs), expected, rtol=1e-5, atol=1e-5)


def test_text_feature_cache_same_logits():
    cached = tiny_model("TRAINER.CLIP_ADAPTER.CACHE_TEXT_FEATURES", True)
    direct = tiny_model("TRAINER.CLIP_ADAPTER.CACHE_TEXT_FEATURES", False)
    calls = {"cached": 0, "direct": 0}
    for name, model in (("cached", cached), ("direct", direct)):
        model.clip_model.transformer.resblocks[0].register_forward_hook(
            lambda m, i, o, name=name: calls.__setitem__(name, calls[name] + 1))
    imgs, labels = images(), torch.tensor([0, 1, 2])
    for _ in range(2):
        a, b = cached(imgs), direct(imgs)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    F.cross_entropy(a, labels).backward()
    F.cross_entropy(b, labels).backward()
    torch.testing.assert_close(cached.adapter.fc[0].weight.grad, direct.adapter.fc[0].weight.grad,
                               rtol=1e-5, atol=1e-7)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the classifier is computed outside autocast
        torch.testing.assert_close(cached(imgs), direct(imgs), rtol=0, atol=0)
    assert calls == {"cached": 1, "direct": 3}


def build_adapter_trainer(root, *opts, num_classes=4):
    make_toy_root(root, per_class=4, num_classes=num_classes)
    return build_toy_trainer(
        ["--root", str(root), "--trainer", "CLIP_Adapter", "--output-dir", str(root / "out"),
         "--config-file", osp.join(REPO, "configs/trainers/CLIP_Adapter/vit_b16.yaml"), "--seed", "1",
         "DATASET.NAME", "ToyColours", "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
         "MODEL.BACKBONE.NAME", "test-tiny", "MODEL.BACKBONE.WEIGHTS", "random", "OPTIM.MAX_EPOCH", "1"]
        + list(opts), seed=0)


@pytest.mark.parametrize("prec", ["fp32", "amp"])
def test_training_step(tmp_path, prec):
    trainer, log = build_adapter_trainer(tmp_path, "TRAINER.CLIP_ADAPTER.PREC", prec, "OPTIM.LR", "0.5")
    assert "Number of trainable parameters: 512\n" in log  # test-tiny: 32 -> 8 -> 32
    assert trainer.get_model_names() == ["clip_adapter"]
    trainer.set_model_mode("train")
    trainer.batch_idx, trainer.num_batches = 0, 10**6
    batch = next(iter(trainer.train_loader_x))
    image, label = trainer.parse_batch_train(batch)
    with torch.no_grad(), autocast_for(trainer.device, enabled=prec == "amp"):
        expected = F.cross_entropy(trainer.model(image), label).item()  # the batch's loss before the step
    before = trainer.model.adapter.fc[0].weight.clone()
    summary = trainer.forward_backward(batch)
    assert set(summary) == {"loss", "acc"} and float(summary["loss"]) == pytest.approx(expected, rel=1e-5)
    assert (trainer.model.adapter.fc[0].weight - before).abs().max() > 0
    assert not any(p.requires_grad for p in trainer.model.clip_model.parameters())
    assert not trainer.model.clip_model.training and trainer.model.adapter.training


def test_checkpoint_reload_on_new_class_set(tmp_path):
    trainer, _ = build_adapter_trainer(tmp_path / "base")
    with torch.no_grad():
        trainer.model.adapter.fc[2].weight.normal_()
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.save_model(4, str(tmp_path / "run"))
    other, _ = build_adapter_trainer(tmp_path / "new", num_classes=6)
    with contextlib.redirect_stdout(io.StringIO()):
        other.load_model(str(tmp_path / "run"), epoch=5)
    for key, value in trainer.model.adapter.state_dict().items():
        assert torch.equal(other.model.adapter.state_dict()[key], value)
    other.set_model_mode("eval")
    with torch.no_grad():
        logits = other.model_inference(images())
    assert logits.shape == (3, 6)
    assert other.model.prompts[5] == f"a photo of a {toy_classnames(6)[5].replace('_', ' ')}."
    with pytest.raises(FileNotFoundError, match="Model not found"):
        other.load_model(str(tmp_path / "run"), epoch=3)
