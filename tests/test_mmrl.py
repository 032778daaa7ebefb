"""MMRL: parameter counts, forward against an independent oracle, loss, decoupled inference,
per-dataset settings, caches, and checkpoints (own and reference format)."""
import argparse
import math
import os
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from yacs.config import CfgNode as CN

import toy
import train
from clip import tokenize
from dassl.engine import build_trainer
from dassl.utils import set_random_seed
from harness.preflight import ConfigError
from helpers import read, run_train
from trainers.mmrl import (
    MMRLCLIP, MultiModalRepresentationLearner, mmrl_loss, uses_fused_logits,
)

CFG_DIR = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), "configs", "trainers", "MMRL")
TINY = ["MODEL.BACKBONE.NAME", "test-tiny", "MODEL.BACKBONE.WEIGHTS", "random"]


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    return toy.make_toy_root(str(tmp_path_factory.mktemp("toy")), per_class=4, num_classes=4)


def mmrl_args(root, out, *opts, cfg="vit_b16", flags=()):
    return ["--root", root, "--trainer", "MMRL", "--config-file", osp.join(CFG_DIR, f"{cfg}.yaml"),
            "--output-dir", out, "--seed", "1", *flags,
            "DATASET.NAME", "ToyColours", "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
            "DATALOADER.TEST.BATCH_SIZE", "8", "TRAINER.MMRL.PREC", "fp32", *TINY, *opts]


def build(root, out, *opts, seed=1):
    cfg = train.setup_cfg(train.build_parser().parse_args(mmrl_args(root, out, *opts)))
    set_random_seed(seed)
    return build_trainer(cfg)


@pytest.fixture
def trainer(toy_root, tmp_path):
    """A fresh test-tiny MMRL trainer (fp32, few-shot task: fused logits); tests may change it."""
    return build(toy_root, str(tmp_path / "fixture-run"), "TASK", "FS")


def images(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 224, 224, generator=g)


def perturb(learner, seed):
    """Move every trainable tensor away from its initialisation (so identical results are meaningful)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in learner.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


# ---------------------------------------------------------------- parameters


@pytest.fixture(scope="module")
def vit_b16_run(toy_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("vitb16"))
    args = mmrl_args(toy_root, out, "MODEL.BACKBONE.NAME", "ViT-B/16", flags=("--no-train",))
    return run_train(args), out


def test_vit_b16_parameter_count_and_names(vit_b16_run):
    trainer, out = vit_b16_run
    assert "Number of trainable parameters: 4,992,256" in read(osp.join(out, "log.txt"))
    learner = trainer.model.learner
    shapes = {k: tuple(v.shape) for k, v in learner.state_dict().items()}
    expected = {"representation_learner.compound_rep_tokens": (5, 512), "image_encoder.proj_rep": (768, 512)}
    for k in range(7):
        expected.update({
            f"representation_learner.compound_rep_tokens_r2vproj.{k}.weight": (768, 512),
            f"representation_learner.compound_rep_tokens_r2vproj.{k}.bias": (768,),
            f"representation_learner.compound_rep_tokens_r2tproj.{k}.weight": (512, 512),
            f"representation_learner.compound_rep_tokens_r2tproj.{k}.bias": (512,),
        })
    assert shapes == expected  # the checkpoint holds exactly the trainable tensors, reference names
    assert not any(p.requires_grad for p in trainer.model.clip.parameters())
    eurosat = MultiModalRepresentationLearner.for_clip(trainer.model.clip, 5, 2048, 7)
    assert sum(p.numel() for p in eurosat.parameters()) == 18_762_496


def test_initialisation(trainer):
    learner = trainer.model.learner
    rl = learner.representation_learner
    for aligners in (rl.compound_rep_tokens_r2vproj, rl.compound_rep_tokens_r2tproj):
        for a in aligners[1:]:  # copies of one Linear: identical at init, separate parameters
            assert torch.equal(a.weight, aligners[0].weight) and torch.equal(a.bias, aligners[0].bias)
            assert a.weight is not aligners[0].weight
    proj_rep = learner.image_encoder.proj_rep
    assert not torch.equal(proj_rep, trainer.model.clip.visual.proj)  # random, not the frozen proj
    assert abs(proj_rep.std().item() - 64 ** -0.5) < 0.02  # scale 1/sqrt(d_v), d_v = 64 for test-tiny
    assert abs(rl.compound_rep_tokens.std().item() - 0.02) < 0.005


# ---------------------------------------------------------------- forward vs an independent oracle


def oracle(clip_model, learner, prompts, x_images, rep_layers):
    """The reference's computation written out: full 77 + K text context, explicit masks, no caches."""
    K = learner.n_tokens
    vision, text = learner.representation_learner()
    vision, text = dict(zip(rep_layers, vision)), dict(zip(rep_layers, text))
    first = rep_layers[0]

    def put(x, tokens, i):
        tokens = tokens.unsqueeze(0).expand(x.shape[0], -1, -1)
        return torch.cat([x[:, :1], tokens, x[:, 1:] if i == first else x[:, 1 + K:]], dim=1)

    tokens = tokenize(prompts)  # [C, 77]
    x = clip_model.token_embedding(tokens) + clip_model.positional_embedding
    for i, block in enumerate(clip_model.transformer.resblocks, start=1):
        if i in text:
            x = put(x, text[i], i)
        n = x.shape[1]
        x = block(x, attn_mask=torch.full((n, n), float("-inf")).triu(1))
    x = clip_model.ln_final(x)
    w = x[torch.arange(len(prompts)), tokens.argmax(-1) + K] @ clip_model.text_projection

    v = clip_model.visual
    x = v.conv1(x_images).flatten(2).transpose(1, 2)
    x = torch.cat([v.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + v.positional_embedding
    x = v.ln_pre(x)
    for i, block in enumerate(v.transformer.resblocks, start=1):
        if i in vision:
            x = put(x, vision[i], i)
        x = block(x)
    x = v.ln_post(x)
    f_c = x[:, 0] @ v.proj
    f_r = x[:, 1:1 + K].mean(1) @ learner.image_encoder.proj_rep
    return w, f_c, f_r


@pytest.mark.parametrize("rep_layers", [[6, 7, 8, 9, 10, 11, 12], [3, 5]])  # [3, 5]: tokens carried through 4
def test_forward_matches_oracle(trainer, rep_layers):
    clip_model = trainer.model.clip
    learner = MultiModalRepresentationLearner.for_clip(clip_model, 5, 16, len(rep_layers))
    perturb(learner, 1)
    # The longest prompt fills all 77 positions, so the text tower runs 77 + K tokens (a rebuilt mask).
    prompts = ["a photo of a cat.", " ".join(["a"] * 74) + ".", "x."]
    model = MMRLCLIP(clip_model, learner, prompts, rep_layers)
    x = images()
    with torch.no_grad():
        w, f_c, f_r = oracle(clip_model, learner, prompts, x, rep_layers)
        vision, text = learner.representation_learner()
        got_w = model.encode_text(dict(zip(rep_layers, text)))
        got_c, got_r = model.encode_image(model.image_lower_states(x), dict(zip(rep_layers, vision)))
        out = model(x)
    torch.testing.assert_close(got_w, w, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_c, f_c, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_r, f_r, atol=1e-5, rtol=0)
    expected = 100 * F.normalize(f_c, dim=-1) @ F.normalize(w, dim=-1).t()
    torch.testing.assert_close(out.class_logits, expected, atol=1e-4, rtol=0)
    expected = 100 * F.normalize(f_r, dim=-1) @ F.normalize(w, dim=-1).t()
    torch.testing.assert_close(out.rep_logits, expected, atol=1e-4, rtol=0)


# ---------------------------------------------------------------- loss


def test_loss_terms_by_hand():
    class_logits = torch.tensor([[0.0, 0.0]])  # CE = ln 2
    rep_logits = torch.tensor([[math.log(3.0), 0.0]])  # p(y) = 3/4, CE = ln 4/3
    labels = torch.tensor([0])
    class_features = torch.tensor([[2.0, 0.0]])
    zs_image = torch.tensor([[0.0, 1.0]])  # orthogonal: distance 1
    text = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    zs_text = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # cosines 1 and 1/sqrt(2)
    loss, terms = mmrl_loss(class_logits, rep_logits, labels, class_features, zs_image, text, zs_text,
                            alpha=0.7, reg_weight=2.0)
    text_reg = 1 - (1 + 2 ** -0.5) / 2
    assert terms["ce_class"].item() == pytest.approx(math.log(2))
    assert terms["ce_rep"].item() == pytest.approx(math.log(4 / 3))
    assert terms["image_reg"].item() == pytest.approx(1.0)
    assert terms["text_reg"].item() == pytest.approx(text_reg)
    expected = 0.7 * math.log(2) + 0.3 * math.log(4 / 3) + 2.0 * 1.0 + 2.0 * text_reg
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_training_step_uses_the_mmrl_loss(toy_root, tmp_path):
    t = build(toy_root, str(tmp_path), "TASK", "FS", "TRAINER.MMRL.REG_WEIGHT", "3.0")
    perturb(t.model.learner, 2)
    x, y = images(4), torch.tensor([0, 1, 2, 3])
    t.set_model_mode("train")
    with torch.no_grad():
        out = t.model(x, zero_shot_target=True)
        expected, _ = mmrl_loss(out.class_logits, out.rep_logits, y, out.class_features,
                                out.zero_shot_image_features, out.text_features, t.zero_shot_text_features, 0.7, 3.0)
    before = [p.detach().clone() for p in t.model.learner.parameters()]
    t.batch_idx, t.num_batches = 0, 10
    summary = t.forward_backward({"img": x, "label": y})
    assert summary["loss"] == pytest.approx(expected.item(), rel=1e-5)
    assert all(not torch.equal(a, b) for a, b in zip(before, t.model.learner.parameters()))


# ---------------------------------------------------------------- decoupled inference


def test_decoupled_inference_rule():
    def cfg(task, subsample="all", name="Caltech101"):
        c = CN()
        c.TASK, c.DATASET = task, CN()
        c.DATASET.SUBSAMPLE_CLASSES, c.DATASET.NAME = subsample, name
        return c

    assert uses_fused_logits(cfg("B2N", "base"))
    assert not uses_fused_logits(cfg("B2N", "new"))
    assert not uses_fused_logits(cfg("B2N", "all"))
    assert uses_fused_logits(cfg("FS"))
    assert uses_fused_logits(cfg("CD", name="ImageNet"))
    for target in ("EuroSAT", "ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR"):
        assert not uses_fused_logits(cfg("CD", name=target))
    with pytest.raises(ValueError, match="TASK must be either B2N, CD, or FS"):
        uses_fused_logits(cfg("DG"))


def test_decoupled_inference_in_the_trainer(toy_root, tmp_path):
    base = build(toy_root, str(tmp_path), "TASK", "B2N", "DATASET.SUBSAMPLE_CLASSES", "base")
    new = build(toy_root, str(tmp_path), "TASK", "B2N", "DATASET.SUBSAMPLE_CLASSES", "new")
    x = images()
    for t in (base, new):
        t.set_model_mode("eval")
    with torch.no_grad():
        out = base.model(x)
        fused = 0.7 * out.class_logits + 0.3 * out.rep_logits
        torch.testing.assert_close(base.model_inference(x), fused)
        torch.testing.assert_close(new.model_inference(x), new.model(x).class_logits)
    assert not torch.allclose(fused, out.class_logits, atol=1e-3)
    with pytest.raises(ConfigError, match='TASK "DG" is not allowed: use one of B2N, CD, FS'):  # before building
        build(toy_root, str(tmp_path), "TASK", "DG")


# ---------------------------------------------------------------- per-dataset settings


def test_per_dataset_table_precedence(tmp_path):
    def cfg_for(dataset, *opts, cfg="vit_b16", trainer="MMRL"):
        ds = tmp_path / f"{dataset}.yaml"
        ds.write_text(f"DATASET:\n  NAME: {dataset}\n")
        args = ["--dataset-config-file", str(ds), "--config-file", osp.join(CFG_DIR, f"{cfg}.yaml"),
                "--trainer", trainer, *opts]
        return train.setup_cfg(train.build_parser().parse_args(args)).TRAINER.MMRL

    assert cfg_for("StanfordCars").REG_WEIGHT == 7.0  # table over YAML (1.0)
    assert cfg_for("StanfordCars", "TRAINER.MMRL.REG_WEIGHT", "0.3").REG_WEIGHT == 0.3  # opts over table
    assert cfg_for("ImageNet", cfg="vit_b16_imagenet").REG_WEIGHT == 0.5
    assert cfg_for("OxfordPets", cfg="vit_b16_few_shot").REG_WEIGHT == 0.2  # few-shot YAML's 0.5 is dead
    assert cfg_for("ImageNetV2", cfg="vit_b16_cross_datasets").REG_WEIGHT == 0.2  # no entry: YAML
    assert cfg_for("ImageNet", "TRAINER.MMRL.REG_WEIGHT", "0.2", cfg="vit_b16_cross_datasets").REG_WEIGHT == 0.2
    eurosat = cfg_for("EuroSAT")
    assert (eurosat.REG_WEIGHT, eurosat.REP_DIM) == (0.01, 2048)
    eurosat = cfg_for("EuroSAT", "TRAINER.MMRL.REP_DIM", "512", cfg="vit_b16_cross_datasets")
    assert (eurosat.REG_WEIGHT, eurosat.REP_DIM) == (0.01, 512)
    other = cfg_for("StanfordCars", trainer="ZeroshotCLIP")  # only MMRL runs use the table
    assert (other.REG_WEIGHT, other.REP_DIM) == (1.0, 512)
    # The table does not depend on TASK.
    c = train.setup_cfg(train.build_parser().parse_args(
        ["--dataset-config-file", str(tmp_path / "StanfordCars.yaml"), "--trainer", "MMRL", "TASK", "CD"]))
    assert c.TRAINER.MMRL.REG_WEIGHT == 7.0 and c.TASK == "CD"


# ---------------------------------------------------------------- caches


def test_shared_lower_layers_zero_shot_target_equals_a_full_frozen_forward(trainer):
    model = trainer.model
    clip_model = model.clip
    x = images(4)
    shared = model.zero_shot_image_features(x, model.image_lower_states(x))
    separate = model.zero_shot_image_features(x)
    with torch.no_grad():
        open_clip_direct = F.normalize(clip_model.encode_image(x), dim=-1)
    torch.testing.assert_close(shared, open_clip_direct, atol=1e-5, rtol=0)
    torch.testing.assert_close(separate, open_clip_direct, atol=1e-5, rtol=0)
    # Same training loss with and without the shared path.
    model.learner.train()
    y = torch.tensor([0, 1, 2, 3])
    losses = []
    for share in (True, False):
        model.share_lower_layers = share
        with torch.no_grad():
            out = model(x, zero_shot_target=True)
        losses.append(mmrl_loss(out.class_logits, out.rep_logits, y, out.class_features,
                                out.zero_shot_image_features, out.text_features, trainer.zero_shot_text_features,
                                0.7, 1.0)[0])
    torch.testing.assert_close(losses[0], losses[1], atol=1e-5, rtol=0)


def test_zero_shot_text_features_equal_recomputed(trainer):
    prompts = [f"a photo of a {c.replace('_', ' ')}." for c in trainer.dm.dataset.classnames]
    with torch.no_grad():
        recomputed = F.normalize(trainer.model.clip.encode_text(tokenize(prompts)), dim=-1)
    torch.testing.assert_close(trainer.zero_shot_text_features, recomputed, atol=1e-5, rtol=0)


def test_text_lower_layer_cache_equals_direct_path(trainer):
    model = trainer.model
    _, text = model.learner.representation_learner()
    by_layer = dict(zip(model.rep_layers, text))
    cached = model.encode_text(by_layer)
    assert len(model.text_lower_cache) == 1 and not model.text_lower_states().requires_grad
    model.text_lower_cache.enabled = False
    direct = model.encode_text(by_layer)
    torch.testing.assert_close(cached, direct, atol=1e-5, rtol=0)
    assert cached.requires_grad  # gradients reach the text aligners through blocks J..12


def test_eval_text_cache_is_dropped_when_training(trainer):
    model, x = trainer.model, images(2)
    trainer.set_model_mode("eval")
    with torch.no_grad():
        first = model(x).class_logits
        assert model.eval_cache.value is not None
        again = model(x).class_logits
    torch.testing.assert_close(first, again, atol=0, rtol=0)
    trainer.set_model_mode("train")
    perturb(model.learner, 3)
    with torch.no_grad():
        model(x)  # a training forward invalidates the cache
        assert model.eval_cache.value is None
        trainer.set_model_mode("eval")
        after = model(x).class_logits
        model.eval_cache.clear()
        recomputed = model(x).class_logits
    torch.testing.assert_close(after, recomputed, atol=0, rtol=0)
    assert not torch.allclose(first, after, atol=1e-4)


# ---------------------------------------------------------------- checkpoints


def reference_checkpoint(trainer, n_classes=7):
    """A checkpoint in the reference's layout: the whole model, incl. frozen CLIP and prompt_embeddings."""
    clip_model, learner = trainer.model.clip, trainer.model.learner
    state = {f"representation_learner.{k}": v for k, v in learner.representation_learner.state_dict().items()}
    state.update({f"image_encoder.{k}": v for k, v in clip_model.visual.state_dict().items()})
    state["image_encoder.proj_rep"] = learner.image_encoder.proj_rep.detach()
    for k, v in clip_model.state_dict().items():
        if not k.startswith("visual."):
            state[f"text_encoder.{k}"] = v
    state["logit_scale"] = clip_model.logit_scale.detach()
    state["prompt_embeddings"] = torch.randn(n_classes, 77, clip_model.transformer.width)
    return {"state_dict": {k: v.clone() for k, v in state.items()}, "epoch": 5, "optimizer": None,
            "scheduler": None, "val_result": None}


def test_reference_checkpoint_loads_with_identical_logits(trainer, toy_root, tmp_path):
    source = trainer
    perturb(source.model.learner, 4)
    x = images()
    source.set_model_mode("eval")
    source.model.eval_cache.clear()
    expected = source.model_inference(x)
    target = build(toy_root, str(tmp_path / "b"), "TASK", "FS", seed=1)  # same random CLIP, initial learner
    target.set_model_mode("eval")
    initial = {k: v.clone() for k, v in target.model.learner.state_dict().items()}
    # Released weights use the folder MultiModalRepresentationLearner, older ones MultiModalPromptLearner.
    for epoch, folder in ((5, "MultiModalPromptLearner"), (7, "MultiModalRepresentationLearner")):
        target.model.learner.load_state_dict(initial)
        target.model.eval_cache.clear()
        # Different before loading; this also fills the eval cache, which loading must drop.
        assert not torch.allclose(target.model_inference(x), expected, atol=1e-3)
        os.makedirs(tmp_path / f"ref{epoch}" / folder)
        ckpt = reference_checkpoint(source)
        ckpt["epoch"] = epoch
        torch.save(ckpt, tmp_path / f"ref{epoch}" / folder / f"model.pth.tar-{epoch}")
        target.load_model(str(tmp_path / f"ref{epoch}"), epoch=epoch)
        torch.testing.assert_close(target.model_inference(x), expected, atol=0, rtol=0)


def test_checkpoint_errors(trainer, tmp_path, monkeypatch):
    folder = tmp_path / "MultiModalRepresentationLearner"
    os.makedirs(folder)
    path = folder / "model.pth.tar-5"

    pickled = reference_checkpoint(trainer)
    pickled["scheduler"] = argparse.Namespace(successor="an object, as upstream Dassl pickles")
    torch.save(pickled, path)
    monkeypatch.delenv("DASSL_TRUST_CHECKPOINT", raising=False)
    trainer.load_model(str(tmp_path), epoch=5)  # for evaluation the scheduler object stays inert
    monkeypatch.setenv("DASSL_TRUST_CHECKPOINT", "1")
    trainer.load_model(str(tmp_path), epoch=5)  # explicit opt-in: fully unpickled
    monkeypatch.delenv("DASSL_TRUST_CHECKPOINT")

    missing = reference_checkpoint(trainer)
    del missing["state_dict"]["image_encoder.proj_rep"]
    torch.save(missing, path)
    with pytest.raises(RuntimeError, match="missing trainable tensors"):
        trainer.load_model(str(tmp_path), epoch=5)

    extra = reference_checkpoint(trainer)  # trained with more insertion layers
    extra["state_dict"]["representation_learner.compound_rep_tokens_r2vproj.7.bias"] = torch.zeros(64)
    torch.save(extra, path)
    with pytest.raises(RuntimeError, match="unexpected keys"):
        trainer.load_model(str(tmp_path), epoch=5)

    wider = reference_checkpoint(trainer)  # another REP_DIM (EuroSAT's 2048 against ImageNet's 512)
    wider["state_dict"]["representation_learner.compound_rep_tokens"] = torch.zeros(5, 1024)
    torch.save(wider, path)
    with pytest.raises(RuntimeError, match="size mismatch"):
        trainer.load_model(str(tmp_path), epoch=5)


# ---------------------------------------------------------------- end to end


def test_train_then_eval_on_other_classes(toy_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("b2n"))
    run_train(mmrl_args(toy_root, out, "TASK", "B2N", "DATASET.SUBSAMPLE_CLASSES", "base", "OPTIM.MAX_EPOCH", "1",
                        "DATASET.NUM_SHOTS", "1"))
    log = read(osp.join(out, "log.txt"))
    assert "fused" in log and "* accuracy:" in log
    ckpt = torch.load(osp.join(out, "MultiModalRepresentationLearner", "model.pth.tar-1"), weights_only=True)
    assert all(k.startswith(("representation_learner.compound_rep_tokens", "image_encoder.proj_rep"))
               for k in ckpt["state_dict"])
    assert len(ckpt["state_dict"]) == 1 + 4 * 7 + 1

    other_root = toy.make_toy_root(str(tmp_path_factory.mktemp("toy6")), per_class=2, num_classes=6)
    test_out = str(tmp_path_factory.mktemp("new"))
    run_train(mmrl_args(other_root, test_out, "TASK", "B2N", "DATASET.SUBSAMPLE_CLASSES", "new",
                        flags=("--eval-only", "--model-dir", out, "--load-epoch", "1")))
    log = read(osp.join(test_out, "log.txt"))
    assert "class-feature" in log and "Loading weights to MultiModalRepresentationLearner" in log
    assert "* total: 6" in log


def test_init_weights_are_loaded(trainer, toy_root, tmp_path):
    """MODEL.INIT_WEIGHTS: the learner starts from the file's tensors (by name and shape, as Dassl does)."""
    perturb(trainer.model.learner, 11)
    torch.save({"state_dict": trainer.model.learner.state_dict()}, tmp_path / "init.pth")
    started = build(toy_root, str(tmp_path / "out"), "TASK", "FS", "MODEL.INIT_WEIGHTS", str(tmp_path / "init.pth"))
    for key, value in trainer.model.learner.state_dict().items():
        assert torch.equal(started.model.learner.state_dict()[key], value), key
    fresh = build(toy_root, str(tmp_path / "fresh"), "TASK", "FS")
    assert not torch.equal(fresh.model.learner.image_encoder.proj_rep, trainer.model.learner.image_encoder.proj_rep)


def test_per_dataset_tables_are_config_nodes(tmp_path):
    """The tables are what a YAML or the command line edits; the resolved value is in the run's config."""
    import datasets  # noqa: F401 (registers the dataset names checked by setup_cfg)

    def mmrl_node(dataset, *opts, cfg="vit_b16"):
        ds = tmp_path / f"{dataset}.yaml"
        ds.write_text(f"DATASET:\n  NAME: {dataset}\n")
        args = ["--dataset-config-file", str(ds), "--config-file", osp.join(CFG_DIR, f"{cfg}.yaml"),
                "--trainer", "MMRL", *opts]
        return train.setup_cfg(train.build_parser().parse_args(args)).TRAINER.MMRL

    assert mmrl_node("StanfordCars", "TRAINER.MMRL.DATASET_REG_WEIGHT.StanfordCars", "5.0").REG_WEIGHT == 5.0
    assert mmrl_node("StanfordCars", "TRAINER.MMRL.DATASET_REG_WEIGHT.StanfordCars", "5.0",
                     "TRAINER.MMRL.REG_WEIGHT", "0.3").REG_WEIGHT == 0.3  # REG_WEIGHT itself beats the table
    yaml = tmp_path / "edited.yaml"
    yaml.write_text(open(osp.join(CFG_DIR, "vit_b16.yaml")).read().replace(
        "  MMRL:\n", "  MMRL:\n    DATASET_REG_WEIGHT:\n      StanfordCars: 5.0\n      ToyColours: 2.5\n"))
    assert mmrl_node("StanfordCars", cfg=str(yaml)[:-5]).REG_WEIGHT == 5.0  # an edited table entry runs
    assert mmrl_node("ToyColours", cfg=str(yaml)[:-5]).REG_WEIGHT == 2.5  # and datasets may be added
    # Cross-dataset: λ 0.2 on the ImageNet source and d_r 512 on EuroSAT come from the YAML, not the command line.
    xd = "vit_b16_cross_datasets"
    assert (mmrl_node("ImageNet", cfg=xd).REG_WEIGHT, mmrl_node("ImageNet", cfg=xd).REP_DIM) == (0.2, 512)
    assert mmrl_node("EuroSAT", cfg=xd).REP_DIM == 512 and mmrl_node("EuroSAT").REP_DIM == 2048
    for name in ("vit_b16", "vit_b16_few_shot", "vit_b16_imagenet"):  # no YAML line the tables would replace
        text = open(osp.join(CFG_DIR, f"{name}.yaml")).read()
        assert "REG_WEIGHT:" not in text and "REP_DIM:" not in text, name
