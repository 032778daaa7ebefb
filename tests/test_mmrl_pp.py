"""MMRL++: parameter count, SRRA / projection initialisation, PRC at the block boundaries, reduction to
MMRL at β = 1, the TASK-dependent per-dataset table, precision, caches, checkpoints (own, reference,
MMRL's refused) and the base-to-novel and cross-dataset protocols through the scripts."""
import contextlib
import io
import os
import os.path as osp
import shutil

import pytest
import torch
import torch.nn.functional as F

import toy
import train
from dassl.engine import build_trainer
from dassl.utils import set_random_seed
from helpers import read, run_train, script_runs
from trainers.mmrl import MMRLCLIP, MultiModalRepresentationLearner, mmrl_loss
from trainers.mmrl_pp import MMRLppLearner

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CFG_DIR = osp.join(REPO, "configs", "trainers")
TINY = ["MODEL.BACKBONE.NAME", "test-tiny", "MODEL.BACKBONE.WEIGHTS", "random"]
K = 5
REP_LAYERS = [6, 7, 8, 9, 10, 11, 12]


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    return toy.make_toy_root(str(tmp_path_factory.mktemp("toy")), per_class=4, num_classes=4)


def toy_args(root, out, *opts, trainer="MMRLpp", flags=()):
    """A test-tiny run on the toy dataset (fp32, the base-to-novel YAML)."""
    return ["--root", root, "--trainer", trainer, "--config-file", osp.join(CFG_DIR, trainer, "vit_b16.yaml"),
            "--output-dir", out, "--seed", "1", *flags, "DATASET.NAME", "ToyColours", "DATALOADER.NUM_WORKERS", "0",
            "DATALOADER.TRAIN_X.BATCH_SIZE", "4", f"TRAINER.{trainer}.PREC", "fp32", *TINY, *opts]


def build(root, out, *opts, trainer="MMRLpp"):
    cfg = train.setup_cfg(train.build_parser().parse_args(toy_args(root, out, *opts, trainer=trainer)))
    set_random_seed(1)
    with contextlib.redirect_stdout(io.StringIO()):
        return build_trainer(cfg)


@pytest.fixture
def quick_env(monkeypatch):
    """train.py's environment report shells out to pip and lscpu (~3 s a run); these tests do not read it."""
    monkeypatch.setattr(train, "collect_env_info", lambda: "(environment report skipped in tests)")


@pytest.fixture(scope="module")
def trainer(toy_root, tmp_path_factory):
    """A test-tiny MMRL++ trainer, few-shot task (fused logits), β 0.9."""
    return build(toy_root, str(tmp_path_factory.mktemp("out")), "TASK", "FS")


def images(n=3, seed=0):
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


def perturb(module, seed):
    """Move every tensor away from its initialisation (zero B included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def fresh_model(trainer, beta, seed=1, prompts=("a photo of a cat.", "x.", "a photo of a big red bus.")):
    """A perturbed MMRL++ model on the trainer's frozen CLIP (no caches filled yet)."""
    learner = MMRLppLearner.for_clip(trainer.model.clip, trainer.cfg.TRAINER.MMRLpp)
    perturb(learner, seed)
    return MMRLCLIP(trainer.model.clip, learner, list(prompts), REP_LAYERS, beta=beta)


# ---------------------------------------------------------------- parameters and initialisation


def test_vit_b16_parameter_count_and_keys(toy_root, tmp_path, quick_env):
    out = str(tmp_path)
    t = run_train(toy_args(toy_root, out, "MODEL.BACKBONE.NAME", "ViT-B/16", flags=("--no-train",)))
    assert "Number of trainable parameters: 813,312\n" in read(osp.join(out, "log.txt"))
    shapes = {k: tuple(v.shape) for k, v in t.model.learner.state_dict().items()}
    expected = {"representation_learner.compound_rep_tokens": (5, 512),
                "representation_learner.srra_r2vproj.weight": (768, 512),
                "representation_learner.srra_r2tproj.weight": (512, 512),
                "image_encoder.A": (768, 64), "image_encoder.B": (64, 512)}
    for i in range(7):
        for tower, width in (("v", 768), ("t", 512)):
            expected.update({f"representation_learner.srra_r2{tower}proj.srra.{i}.A": (width, 4),
                             f"representation_learner.srra_r2{tower}proj.srra.{i}.B": (4, 512),
                             f"representation_learner.srra_r2{tower}proj.srra.{i}.bias": (width,)})
    assert shapes == expected and len(shapes) == 47  # exactly the reference's trainable keys
    assert not any(p.requires_grad for p in t.model.clip.parameters())  # visual.proj (P_c) stays frozen


def test_initialisation(trainer):
    learner = trainer.model.learner
    rl = learner.representation_learner
    vision, text = rl()
    for srra, tokens in ((rl.srra_r2vproj, vision), (rl.srra_r2tproj, text)):
        assert len(tokens) == len(REP_LAYERS) == len(srra.srra)
        for layer, t in zip(srra.srra, tokens):
            assert not layer.B.any() and torch.equal(layer.bias, srra.srra[0].bias)
            assert layer.A.abs().max() <= 0.5 and layer.A.abs().max() > 0.4  # U(±1/sqrt(rank 4))
            torch.testing.assert_close(t, tokens[0], atol=0, rtol=0)  # all layers the same map at init
    assert rl.srra_r2vproj.srra[0].bias is not rl.srra_r2vproj.srra[1].bias  # separate parameters
    assert abs(rl.compound_rep_tokens.std().item() - 0.02) < 0.005
    proj = learner.image_encoder
    assert not proj.B.any() and 0.1 < proj.A.abs().max() <= 0.125  # U(±1/sqrt(64))
    pooled = torch.randn(3, proj.A.shape[0])
    frozen = trainer.model.clip.visual.proj
    torch.testing.assert_close(proj(pooled, frozen), pooled @ frozen, atol=0, rtol=0)  # P_r == P_c at init


def test_aligned_tokens_are_the_summed_weight_linear(trainer):
    learner = MMRLppLearner.for_clip(trainer.model.clip, trainer.cfg.TRAINER.MMRLpp)
    perturb(learner, 5)
    rl = learner.representation_learner
    R = rl.compound_rep_tokens
    vision, text = rl()
    for srra, tokens in ((rl.srra_r2vproj, vision), (rl.srra_r2tproj, text)):
        for layer, t in zip(srra.srra, tokens):
            expected = R @ srra.weight.t() + (R @ layer.B.t()) @ layer.A.t() + layer.bias
            torch.testing.assert_close(t, expected, atol=1e-5, rtol=0)
    pooled = torch.randn(2, learner.image_encoder.A.shape[0])
    frozen = trainer.model.clip.visual.proj
    p = learner.image_encoder
    torch.testing.assert_close(p(pooled, frozen), pooled @ frozen + (pooled @ p.A) @ p.B, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- forward: PRC and the reduction to MMRL


def record_blocks(blocks):
    """Forward hooks storing every block's input and output; returns (records, remove)."""
    records, handles = {}, []
    for i, block in enumerate(blocks, start=1):
        handles.append(block.register_forward_hook(
            lambda m, args, out, i=i: records.__setitem__(i, (args[0].detach().clone(), out.detach().clone()))))
    return records, lambda: [h.remove() for h in handles]


@pytest.mark.parametrize("tower", ["image", "text"])
def test_prc_composes_fresh_tokens_with_previous_block_outputs(trainer, tower):
    beta = 0.3
    model = fresh_model(trainer, beta)
    clip_model = model.clip
    vision, text = model.learner.representation_learner()
    with torch.no_grad():
        if tower == "image":
            blocks, tokens, x = clip_model.visual.transformer.resblocks, vision, images(2)
            records, remove = record_blocks(blocks)
            model.encode_image(model.image_lower_states(x), dict(zip(REP_LAYERS, vision)))
            length = 1 + (224 // 32) ** 2  # test-tiny: patch 32
        else:
            blocks, tokens = clip_model.transformer.resblocks, text
            records, remove = record_blocks(blocks)
            model.encode_text(dict(zip(REP_LAYERS, text)))
            length = model.prompt_tokens.shape[1]
        remove()
    first = REP_LAYERS[0]
    for i in range(1, first):
        assert records[i][0].shape[1] == length
    for i in range(first, 13):
        assert records[i][0].shape[1] == length + K
    inp, prev = records[first][0], records[first - 1][1]
    torch.testing.assert_close(inp[:, 1:1 + K], tokens[0].expand(inp.shape[0], -1, -1), atol=0, rtol=0)
    torch.testing.assert_close(inp[:, 1 + K:], prev[:, 1:], atol=0, rtol=0)  # inserted, nothing replaced
    for k, i in enumerate(REP_LAYERS[1:], start=1):
        inp, prev = records[i][0], records[i - 1][1]
        torch.testing.assert_close(inp[:, 1:1 + K], beta * tokens[k] + (1 - beta) * prev[:, 1:1 + K], atol=1e-6, rtol=0)
        torch.testing.assert_close(inp[:, :1], prev[:, :1], atol=0, rtol=0)  # CLS / SOT untouched
        torch.testing.assert_close(inp[:, 1 + K:], prev[:, 1 + K:], atol=0, rtol=0)  # patches / words untouched


def mmrl_copy(pp_learner, clip_model):
    """An MMRL learner holding the MMRL++ learner's maps: W + A_i B_i, b_i per layer, P_r = P_c + A B."""
    rl = pp_learner.representation_learner
    learner = MultiModalRepresentationLearner.for_clip(clip_model, K, rl.compound_rep_tokens.shape[1], len(REP_LAYERS))
    with torch.no_grad():
        learner.representation_learner.compound_rep_tokens.copy_(rl.compound_rep_tokens)
        for srra, aligners in ((rl.srra_r2vproj, learner.representation_learner.compound_rep_tokens_r2vproj),
                               (rl.srra_r2tproj, learner.representation_learner.compound_rep_tokens_r2tproj)):
            for layer, linear in zip(srra.srra, aligners):
                linear.weight.copy_(srra.weight + layer.A @ layer.B)
                linear.bias.copy_(layer.bias)
        p = pp_learner.image_encoder
        learner.image_encoder.proj_rep.copy_(clip_model.visual.proj + p.A @ p.B)
    return learner


def test_beta_one_equals_mmrl_with_the_same_maps(trainer):
    prompts = ["a photo of a cat.", " ".join(["a"] * 74) + ".", "x."]  # the longest fills all 77 positions
    pp = fresh_model(trainer, beta=1.0, prompts=prompts)
    mmrl = MMRLCLIP(pp.clip, mmrl_copy(pp.learner, pp.clip), prompts, REP_LAYERS)
    composed = MMRLCLIP(pp.clip, pp.learner, prompts, REP_LAYERS, beta=0.9)
    x = images()
    with torch.no_grad():
        a, b, c = pp(x), mmrl(x), composed(x)
    torch.testing.assert_close(a.class_logits, b.class_logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(a.rep_logits, b.rep_logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(a.text_features, b.text_features, atol=1e-5, rtol=0)
    assert not torch.allclose(c.class_logits, a.class_logits, atol=1e-2)  # β < 1 does change the model


# ---------------------------------------------------------------- config: table, precision


def cfg_for(tmp_path, dataset, *opts, cfg="vit_b16", trainer="MMRLpp"):
    ds = tmp_path / f"{dataset}.yaml"
    ds.write_text(f"DATASET:\n  NAME: {dataset}\n")
    args = ["--dataset-config-file", str(ds), "--config-file", osp.join(CFG_DIR, trainer, f"{cfg}.yaml"),
            "--trainer", trainer, *opts]
    return train.setup_cfg(train.build_parser().parse_args(args))


def beta_reg(c):
    return c.TRAINER.MMRLpp.BETA, c.TRAINER.MMRLpp.REG_WEIGHT


def test_per_dataset_table_by_task(tmp_path):
    assert beta_reg(cfg_for(tmp_path, "OxfordPets", "TASK", "B2N")) == (0.7, 0.01)
    assert beta_reg(cfg_for(tmp_path, "OxfordPets")) == (0.7, 0.01)  # TASK defaults to B2N
    assert beta_reg(cfg_for(tmp_path, "Food101", "TASK", "FS", cfg="vit_b16_few_shot")) == (0.1, 1.0)
    xd = "vit_b16_cross_datasets"
    assert beta_reg(cfg_for(tmp_path, "ImageNet", "TASK", "CD", cfg=xd)) == (0.9, 0.1)  # table beats the YAML's 0.2
    assert beta_reg(cfg_for(tmp_path, "ImageNetSketch", "TASK", "CD", cfg=xd)) == (0.7, 0.2)  # no λ entry: YAML
    assert beta_reg(cfg_for(tmp_path, "StanfordCars", "TASK", "CD", cfg=xd)) == (0.3, 0.2)  # B2N would be 0.7
    assert beta_reg(cfg_for(tmp_path, "ImageNetSketch", cfg=xd)) == (0.9, 0.2)  # B2N: no entry, YAML values
    # Command-line opts beat the table, wherever TASK stands among them.
    assert beta_reg(cfg_for(tmp_path, "EuroSAT", "TRAINER.MMRLpp.BETA", "1.0", "TASK", "CD", cfg=xd)) == (1.0, 0.2)
    assert beta_reg(cfg_for(tmp_path, "EuroSAT", "TRAINER.MMRLpp.REG_WEIGHT", "0.5")) == (0.2, 0.5)
    assert cfg_for(tmp_path, "EuroSAT").TRAINER.MMRLpp.REP_DIM == 512  # no EuroSAT 2048 for MMRL++
    # The tables are config nodes: an edited entry is the value that runs (B2N and FS have their own).
    assert beta_reg(cfg_for(tmp_path, "OxfordPets", "TRAINER.MMRLpp.DATASET_BETA.B2N.OxfordPets", "0.4",
                            "TRAINER.MMRLpp.DATASET_REG_WEIGHT.B2N.OxfordPets", "2.5")) == (0.4, 2.5)
    assert beta_reg(cfg_for(tmp_path, "OxfordPets", "TASK", "FS", "TRAINER.MMRLpp.DATASET_BETA.B2N.OxfordPets",
                            "0.4", cfg="vit_b16_few_shot")) == (0.7, 0.01)
    edited = tmp_path / "edited.yaml"
    edited.write_text(open(osp.join(CFG_DIR, "MMRLpp", "vit_b16.yaml")).read()
                      + "    DATASET_BETA:\n      B2N:\n        ImageNetSketch: 0.3\n")
    sketch = tmp_path / "ImageNetSketch.yaml"
    sketch.write_text("DATASET:\n  NAME: ImageNetSketch\n")
    args = ["--dataset-config-file", str(sketch), "--config-file", str(edited), "--trainer", "MMRLpp"]
    assert beta_reg(train.setup_cfg(train.build_parser().parse_args(args))) == (0.3, 1.0)  # an entry added
    # Each method's table only touches its own runs.
    mmrl = cfg_for(tmp_path, "OxfordPets", trainer="MMRL")
    assert beta_reg(mmrl) == (0.9, 1.0) and mmrl.TRAINER.MMRL.REG_WEIGHT == 0.2
    assert cfg_for(tmp_path, "OxfordPets").TRAINER.MMRL.REG_WEIGHT == 1.0


def test_fp16_and_bad_beta_rejected(toy_root, tmp_path):
    with pytest.raises(ValueError, match='TRAINER.MMRLpp.PREC "fp16" is not allowed: use one of amp, fp32'):
        build(toy_root, str(tmp_path), "TRAINER.MMRLpp.PREC", "fp16")
    with pytest.raises(ValueError, match="BETA must lie in"):
        build(toy_root, str(tmp_path), "TRAINER.MMRLpp.BETA", "1.5")


# ---------------------------------------------------------------- training step, inference, caches


@pytest.mark.parametrize("prec", ["fp32", "amp"])
def test_training_step_loss_by_hand(toy_root, tmp_path, prec):
    """The step's loss: 0.7 CE(ℓ_c) + 0.3 CE(ℓ_r) + λ (1 − cos(f_c, f_zs)) + λ (1 − cos(w, w_zs)), λ 3."""
    t = build(toy_root, str(tmp_path), "TASK", "FS", "TRAINER.MMRLpp.REG_WEIGHT", "3.0", "TRAINER.MMRLpp.PREC", prec)
    perturb(t.model.learner, 2)  # at init B = 0 leaves the A's without gradient (as in LoRA)
    x, y = images(4), torch.tensor([0, 1, 2, 3])
    t.set_model_mode("train")
    with torch.no_grad(), t.autocast():
        out = t.model(x, zero_shot_target=True)
    with torch.no_grad():
        f_zs = F.normalize(t.model.clip.encode_image(x), dim=-1)  # the frozen CLIP on the same batch (fp32)
        cos_image = F.cosine_similarity(out.class_features.float(), f_zs).mean()
        cos_text = F.cosine_similarity(out.text_features.float(), t.zero_shot_text_features).mean()
        by_hand = (0.7 * F.cross_entropy(out.class_logits.float(), y) + 0.3 * F.cross_entropy(out.rep_logits.float(), y)
                   + 3.0 * (1 - cos_image) + 3.0 * (1 - cos_text)).item()
    before = {k: v.clone() for k, v in t.model.learner.state_dict().items()}
    t.batch_idx, t.num_batches = 0, 10
    summary = t.forward_backward({"img": x, "label": y})
    assert summary["loss"] == pytest.approx(by_hand, rel=1e-5 if prec == "fp32" else 2e-2)
    after = t.model.learner.state_dict()
    assert [k for k in before if torch.equal(before[k], after[k])] == []  # every trainable tensor moved


def test_inference_rule_and_fp32_evaluation_under_amp(toy_root, tmp_path):
    base = build(toy_root, str(tmp_path), "TASK", "B2N", "DATASET.SUBSAMPLE_CLASSES", "base",
                 "TRAINER.MMRLpp.PREC", "amp")
    new = build(toy_root, str(tmp_path), "TASK", "B2N", "DATASET.SUBSAMPLE_CLASSES", "new")
    x = images()
    for t in (base, new):
        perturb(t.model.learner, 6)
        t.set_model_mode("eval")
    with torch.no_grad():
        out = base.model(x)  # no autocast: the reference evaluates in fp32 also under amp
        fused = 0.7 * out.class_logits + 0.3 * out.rep_logits
        torch.testing.assert_close(base.model_inference(x), fused, atol=0, rtol=0)
        torch.testing.assert_close(new.model_inference(x), new.model(x).class_logits, atol=0, rtol=0)
    assert not torch.allclose(fused, out.class_logits, atol=1e-3)


def test_caches_equal_the_direct_path(trainer):
    model, x, y = trainer.model, images(4), torch.tensor([0, 1, 2, 3])
    perturb(model.learner, 7)
    results = []
    for cached in (True, False):
        model.share_lower_layers = model.text_lower_cache.enabled = cached
        model.text_lower_cache.clear()
        model.eval_cache.clear()
        model.learner.train()
        with torch.no_grad():
            out = model(x, zero_shot_target=True)
            loss, _ = mmrl_loss(out.class_logits, out.rep_logits, y, out.class_features, out.zero_shot_image_features,
                                out.text_features, trainer.zero_shot_text_features, 0.7, 1.0)
            model.learner.eval()
            first = model(x).class_logits  # fills the eval cache
            again = model(x).class_logits  # from it
        results.append((out.class_logits, out.rep_logits, out.zero_shot_image_features, loss, first, again))
    model.share_lower_layers = model.text_lower_cache.enabled = True
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(results[0][-1], results[0][-2], atol=0, rtol=0)
    with torch.no_grad():
        direct = F.normalize(model.clip.encode_image(x), dim=-1)  # open_clip's own forward
    torch.testing.assert_close(results[0][2], direct, atol=1e-5, rtol=0)
    # Training invalidates the eval cache: after a change, eval gives the new model's logits.
    model.learner.train()
    perturb(model.learner, 8)
    with torch.no_grad():
        model(x)
        model.learner.eval()
        after = model(x).class_logits
        model.eval_cache.clear()
        recomputed = model(x).class_logits
    torch.testing.assert_close(after, recomputed, atol=0, rtol=0)
    assert not torch.allclose(after, results[0][-1], atol=1e-3)


# ---------------------------------------------------------------- checkpoints


def reference_checkpoint(t, n_classes=7):
    """The reference's layout: the whole wrapper (modified CLIP with A, B), learnables, prompt_embeddings."""
    clip_model, learner = t.model.clip, t.model.learner
    state = {f"representation_learner.{k}": v for k, v in learner.representation_learner.state_dict().items()}
    state.update({f"image_encoder.{k}": v for k, v in clip_model.visual.state_dict().items()})
    state.update({f"image_encoder.{k}": v for k, v in learner.image_encoder.state_dict().items()})  # A, B
    for k, v in clip_model.state_dict().items():
        if k.startswith(("transformer.", "positional_embedding", "ln_final.", "text_projection")):
            state[f"text_encoder.{k}"] = v
    state["prompt_embeddings"] = torch.randn(n_classes, 77, clip_model.transformer.width)
    return {"state_dict": {k: v.clone() for k, v in state.items()}, "epoch": 5, "optimizer": None, "scheduler": None,
            "val_result": None}


def eval_logits(t, x):
    t.set_model_mode("eval")
    t.model.eval_cache.clear()
    return t.model_inference(x)


def test_checkpoint_round_trip_and_reference_layout(trainer, toy_root, tmp_path):
    perturb(trainer.model.learner, 9)
    x = images()
    expected = eval_logits(trainer, x)
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.save_model(0, str(tmp_path / "own"))
    os.makedirs(tmp_path / "ref" / "MultiModalRepresentationLearner")
    torch.save(reference_checkpoint(trainer), tmp_path / "ref" / "MultiModalRepresentationLearner" / "model.pth.tar-5")
    for directory, epoch in (("own", 1), ("ref", 5)):
        target = build(toy_root, str(tmp_path / f"out_{directory}"), "TASK", "FS")
        assert not torch.allclose(eval_logits(target, x), expected, atol=1e-3)  # also fills the eval cache
        with contextlib.redirect_stdout(io.StringIO()):
            target.load_model(str(tmp_path / directory), epoch=epoch)
        torch.testing.assert_close(target.model_inference(x), expected, atol=0, rtol=0)
    ckpt = torch.load(tmp_path / "own" / "MultiModalRepresentationLearner" / "model.pth.tar-1", weights_only=True)
    assert set(ckpt["state_dict"]) == set(trainer.model.learner.state_dict()) and len(ckpt["state_dict"]) == 47

    missing = reference_checkpoint(trainer)
    del missing["state_dict"]["image_encoder.B"]
    torch.save(missing, tmp_path / "ref" / "MultiModalRepresentationLearner" / "model.pth.tar-5")
    with pytest.raises(RuntimeError, match=r"missing trainable tensors \['image_encoder.B'\]"):
        trainer.load_model(str(tmp_path / "ref"), epoch=5)


def test_mmrl_and_mmrlpp_refuse_each_others_checkpoints(trainer, toy_root, tmp_path):
    mmrl = build(toy_root, str(tmp_path / "mmrl_out"), "TASK", "FS", trainer="MMRL")
    with contextlib.redirect_stdout(io.StringIO()):
        mmrl.save_model(0, str(tmp_path / "mmrl"))
        trainer.save_model(0, str(tmp_path / "mmrlpp"))
    with pytest.raises(RuntimeError, match="checkpoint of trainer MMRL .*not MMRLpp: evaluate it with --trainer MMRL"):
        trainer.load_model(str(tmp_path / "mmrl"), epoch=1)
    with pytest.raises(RuntimeError, match="of trainer MMRLpp .*not MMRL: evaluate it with --trainer MMRLpp"):
        mmrl.load_model(str(tmp_path / "mmrlpp"), epoch=1)
    os.makedirs(tmp_path / "ref" / "MultiModalPromptLearner")  # the reference layout, older folder name
    torch.save(reference_checkpoint(trainer), tmp_path / "ref" / "MultiModalPromptLearner" / "model.pth.tar-5")
    with pytest.raises(RuntimeError, match="of trainer MMRLpp .*not MMRL"):
        mmrl.load_model(str(tmp_path / "ref"), epoch=5)


# ---------------------------------------------------------------- protocols through the scripts, miniature data

SCRIPT_OPTS = ("MODEL.BACKBONE.NAME test-tiny MODEL.BACKBONE.WEIGHTS random DATALOADER.NUM_WORKERS 0 "
               "TRAINER.MMRLpp.PREC fp32 OPTIM.MAX_EPOCH 1 DATALOADER.TRAIN_X.BATCH_SIZE 10 "
               "DATALOADER.TEST.BATCH_SIZE 200")


def run_scripts(env, *calls):
    """Run each script call's train.py runs (as its DRY_RUN prints them) in this process."""
    commands = [argv for name, *args in calls for argv in script_runs(f"mmrlpp/{name}", *args, env=env)]
    for argv in commands:
        run_train(argv)
    return commands


@pytest.fixture
def script_env(mini_root, tmp_path, quick_env):
    return dict(os.environ, DATA=mini_root, OUTPUT=str(tmp_path / "out"), SHOTS="1", OPTS=SCRIPT_OPTS)


def test_base_to_novel_on_miniature_data(script_env):
    out = osp.join(script_env["OUTPUT"], "base2new", "{}", "oxford_pets", "shots_1", "MMRLpp", "vit_b16", "seed1")
    (train_cmd,) = run_scripts(script_env, ("base2new_train.sh", "oxford_pets", "1"))
    assert "TASK B2N" in " ".join(train_cmd) and "SUBSAMPLE_CLASSES base" in " ".join(train_cmd)
    log = read(osp.join(out.format("train_base"), "log.txt"))
    assert "MMRL++: β 0.7, λ 0.01" in log and "Number of trainable parameters: 89,888\n" in log  # test-tiny
    assert "fused" in log and "Finish training" in log and "* accuracy:" in log
    run_scripts(script_env, ("base2new_test.sh", "oxford_pets", "1"))
    log = read(osp.join(out.format("test_new"), "log.txt"))
    assert "MMRL++: β 0.7" in log and "class-feature" in log
    assert "Loading weights to MultiModalRepresentationLearner" in log
    assert "* total: 18" in log  # OxfordPets: 37 classes, 18 new, one test image each


def small_imagenet_root(mini_root, root, n_classes=20):
    """A data root whose ImageNet has the first ``n_classes`` wnid folders (the reader labels the folders
    present), next to links to the miniature targets: 1000 ImageNet classes are too slow for a test."""
    src, dst = osp.join(mini_root, "imagenet"), osp.join(root, "imagenet")
    for split in ("train", "val"):
        for wnid in sorted(os.listdir(osp.join(src, "images", split)))[:n_classes]:
            shutil.copytree(osp.join(src, "images", split, wnid), osp.join(dst, "images", split, wnid))
    shutil.copy(osp.join(src, "classnames.txt"), dst)
    for folder in ("eurosat", "imagenet-adversarial"):
        os.symlink(osp.join(mini_root, folder), osp.join(root, folder))
    return root


def test_cross_dataset_and_dg_on_miniature_data(script_env, mini_root, tmp_path):
    script_env["DATA"] = small_imagenet_root(mini_root, str(tmp_path / "data"))
    (train_cmd,) = run_scripts(script_env, ("xd_train.sh", "1"))
    assert "TASK CD" in " ".join(train_cmd) and "REG_WEIGHT" not in " ".join(train_cmd)  # the table's λ 0.1
    model_dir = osp.join(script_env["OUTPUT"], "imagenet", "MMRLpp", "vit_b16_cross_datasets_1shots", "seed1")
    log = read(osp.join(model_dir, "log.txt"))
    assert "MMRL++: β 0.9, λ 0.1" in log and "fused" in log and "* total: 20" in log
    run_scripts(script_env, ("xd_test.sh", "eurosat", "1"), ("xd_test.sh", "imagenet_a", "1"))
    for target, beta, total in (("eurosat", 0.3, 10), ("imagenet_a", 0.8, 200)):  # β of the target
        log = read(osp.join(script_env["OUTPUT"], "evaluation", "MMRLpp", "vit_b16_cross_datasets_1shots", target,
                            "seed1", "log.txt"))
        assert f"MMRL++: β {beta}," in log and "class-feature" in log and f"* total: {total}" in log
        assert "Loading weights to MultiModalRepresentationLearner" in log


def test_few_shot_script_runs_the_protocol(script_env):
    pets = script_runs("mmrlpp/few_shot.sh", "oxford_pets", 2, 4, env=script_env)[0]
    imagenet = script_runs("mmrlpp/few_shot.sh", "imagenet", 2, 4, env=script_env)[0]
    for argv, cfg, dataset in ((pets, "vit_b16_few_shot", "oxford_pets"), (imagenet, "vit_b16_imagenet", "imagenet")):
        assert argv[argv.index("--config-file") + 1] == osp.join(CFG_DIR, "MMRLpp", f"{cfg}.yaml")
        assert argv[argv.index("--output-dir") + 1] == osp.join(script_env["OUTPUT"], "few_shot", dataset, "shots_4",
                                                                "MMRLpp", cfg, "seed2")
        assert "DATASET.NUM_SHOTS 4 TASK FS" in " ".join(argv) and "SUBSAMPLE_CLASSES" not in " ".join(argv)


def test_published_numbers_for_compare():
    from harness.tables import find_method, load_published

    published = load_published()
    assert find_method(published, "MMRLpp").method == "MMRLpp"  # not MMRL ("MMRL++" would normalise to it)
    assert find_method(published, "MMRL").method == "MMRL"
    repro = find_method(published, "mmrlpp-repro").numbers["base2new"]
    assert repro["eurosat"] == {"base": 95.73, "new": 84.17, "hm": 89.58, "confidence": "S"}
    assert published["MMRLpp"]["base2new"]["average"]["unverified"] is True
