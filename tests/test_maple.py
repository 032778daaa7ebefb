"""MaPLe: parameter counts, initialisation, forward against independent oracles (depth 1 = the
shallow path), hook placement, gradient coupling, caches, precision, checkpoints (own and
reference layout), learning rates, and the protocol scripts on miniature data (maple.md §10).

Model-level tests use the 12-block ``test-tiny`` CLIP (text width 32, vision width 64, 49 patches);
ViT-B/16 with random weights is built once, only for counts and shapes.
"""
import contextlib
import copy
import io
import os
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from open_clip.model import convert_weights_to_lp

import parse_test_res
import toy
import train
from clip import layerwise, load, tokenize
from dassl.optim import build_lr_scheduler, build_optimizer
from helpers import build_toy_trainer, read, run_train, script_runs
from trainers.maple import MaPLeCLIP, MultiModalPromptLearner

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CFG_DIR = osp.join(REPO, "configs", "trainers", "MaPLe")
B2N_CFG, XD_CFG = "vit_b16_c2_ep5_batch4_2ctx", "vit_b16_c2_ep5_batch4_2ctx_cross_datasets"
TINY = ["MODEL.BACKBONE.NAME", "test-tiny", "MODEL.BACKBONE.WEIGHTS", "random"]
CLASSNAMES = ["red_square", "green_thing", "a much longer class name than the others", "x"]


def quiet(fn, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    return toy.make_toy_root(str(tmp_path_factory.mktemp("toy")), per_class=4, num_classes=4)


def maple_args(root, out, *opts, cfg=B2N_CFG, flags=()):
    return ["--root", root, "--trainer", "MaPLe", "--config-file", osp.join(CFG_DIR, f"{cfg}.yaml"),
            "--output-dir", out, "--seed", "1", *flags,
            "DATASET.NAME", "ToyColours", "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TEST.BATCH_SIZE", "3",
            "TRAINER.MAPLE.PREC", "fp32", *TINY, *opts]


def build(root, out, *opts, cfg=B2N_CFG):
    return build_toy_trainer(maple_args(root, out, *opts, cfg=cfg), quiet=False)[0]


def tiny_clip(seed=0):
    """A frozen test-tiny CLIP, as the trainer uses it."""
    torch.manual_seed(seed)
    clip_model = quiet(load, "test-tiny", weights="random")[0]
    return clip_model.requires_grad_(False)


def tiny_model(depth=9, clip_model=None, n_ctx=2, ctx_init="a photo of a", seed=1, **kwargs):
    clip_model = clip_model or tiny_clip()
    torch.manual_seed(seed)
    learner = quiet(MultiModalPromptLearner, clip_model, CLASSNAMES, n_ctx, ctx_init, depth)
    return MaPLeCLIP(clip_model, learner, **kwargs)


def perturb(module, seed, scale=0.05):
    """Move every trainable tensor away from its initialisation (so identical results are meaningful)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn(p.shape, generator=g).to(p.dtype))


def images(n=3, seed=0):
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------
# Parameter counts and shapes at ViT-B/16 (one random-weight build)
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vit_b16_run(toy_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("vitb16"))
    args = maple_args(toy_root, out, "MODEL.BACKBONE.NAME", "ViT-B/16", "TRAINER.MAPLE.PREC", "fp16",
                      flags=("--no-train",))
    return quiet(run_train, args), out


def test_vit_b16_parameter_counts_names_and_shapes(vit_b16_run):
    trainer, out = vit_b16_run
    log = read(osp.join(out, "log.txt"))
    assert "Number of trainable parameters: 3,555,072\n" in log
    assert "Note: PREC fp16 needs a GPU; MaPLe runs in fp32 on the CPU" in log  # no GPU in the tests
    registered = trainer._models["MultiModalPromptLearner"]
    shapes = {k: tuple(v.shape) for k, v in registered.state_dict().items()}
    expected = {"prompt_learner.ctx": (2, 512), "prompt_learner.proj.weight": (768, 512),
                "prompt_learner.proj.bias": (768,)}
    for k in range(8):
        expected[f"prompt_learner.compound_prompts_text.{k}"] = (2, 512)
        expected[f"prompt_learner.compound_prompt_projections.{k}.weight"] = (768, 512)
        expected[f"prompt_learner.compound_prompt_projections.{k}.bias"] = (768,)
    assert shapes == expected and len(shapes) == 27  # the checkpoint: the trainable tensors, reference keys
    assert not any(p.requires_grad for p in trainer.model.clip.parameters())

    clip_model, learner = trainer.model.clip, trainer.model.prompt_learner
    assert tuple(learner.token_prefix.shape) == (4, 1, 512) and tuple(learner.token_suffix.shape) == (4, 74, 512)
    prompts = learner()
    assert tuple(prompts.text.shape) == (4, 77, 512) and tuple(prompts.visual.shape) == (2, 768)
    assert [tuple(t.shape) for t in prompts.deep_text] == [(2, 512)] * 8
    assert [tuple(v.shape) for v in prompts.deep_visual] == [(2, 768)] * 8
    for depth, count in ((3, 1_185_024), (1, 395_008)):
        other = quiet(MultiModalPromptLearner, clip_model, ["a"], 2, "a photo of a", depth)
        assert sum(p.numel() for p in other.parameters()) == count


# ---------------------------------------------------------------------------------------------
# Initialisation
# ---------------------------------------------------------------------------------------------

def test_initial_context_is_a_photo_and_couplings_start_identical():
    model = tiny_model(depth=4)
    learner, clip_model = model.prompt_learner, model.clip
    embedding = clip_model.token_embedding(tokenize(["a photo"]))[0, 1:3]
    torch.testing.assert_close(learner.ctx, embedding, atol=0, rtol=0)
    # "of a", the class name and "." stay in the fixed suffix.
    full = clip_model.token_embedding(tokenize([f"a photo of a {CLASSNAMES[2]}."]))[0]
    torch.testing.assert_close(learner.token_suffix[2], full[3:], atol=0, rtol=0)
    couplings = learner.compound_prompt_projections
    assert len(couplings) == 3
    for c in couplings[1:]:
        assert torch.equal(c.weight, couplings[0].weight) and torch.equal(c.bias, couplings[0].bias)
        assert c.weight is not couplings[0].weight
    assert not torch.equal(learner.proj.weight, couplings[0].weight)
    deep = learner.compound_prompts_text
    assert not torch.equal(deep[0], deep[1]) and abs(torch.cat(list(deep)).std().item() - 0.02) < 0.01


def test_random_context_without_init_or_with_more_than_four_tokens(toy_root, tmp_path):
    for opts in (("TRAINER.MAPLE.CTX_INIT", ""), ("TRAINER.MAPLE.N_CTX", "5")):
        console = io.StringIO()
        with contextlib.redirect_stdout(console):
            learner = build(toy_root, str(tmp_path), *opts).model.prompt_learner
        n_ctx = learner.ctx.shape[0]
        assert learner.tokenized_prompts[0].tolist() == tokenize(" ".join(["X"] * n_ctx) + " red square.")[0].tolist()
        assert abs(learner.ctx.std().item() - 0.02) < 0.01
    assert n_ctx == 5 and "CTX_INIT is ignored for N_CTX > 4" in console.getvalue()


# ---------------------------------------------------------------------------------------------
# Forward: independent oracles
# ---------------------------------------------------------------------------------------------

def oracle_logits(model, x_images):
    """The reference's computation written out: all 77 text positions, an explicit causal mask,
    [CLS, patches, F(ctx)] through ln_pre together, deep prompts written into the sequences."""
    clip_model, learner = model.clip, model.prompt_learner
    m, depth = learner.n_ctx, len(learner.compound_prompts_text) + 1
    n_cls = learner.token_prefix.shape[0]
    x = torch.cat([learner.token_prefix, learner.ctx.expand(n_cls, -1, -1), learner.token_suffix], dim=1)
    x = x + clip_model.positional_embedding
    mask = torch.full((77, 77), float("-inf")).triu(1)
    for i, block in enumerate(clip_model.transformer.resblocks, start=1):
        if 2 <= i <= depth:
            x = x.clone()
            x[:, 1:1 + m] = learner.compound_prompts_text[i - 2]
        x = block(x, attn_mask=mask)
    x = clip_model.ln_final(x)
    w = x[torch.arange(n_cls), learner.tokenized_prompts.argmax(-1)] @ clip_model.text_projection

    v = clip_model.visual
    x = v.conv1(x_images).flatten(2).transpose(1, 2)
    x = torch.cat([v.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + v.positional_embedding
    x = v.ln_pre(torch.cat([x, learner.proj(learner.ctx).expand(x.shape[0], -1, -1)], dim=1))
    for i, block in enumerate(v.transformer.resblocks, start=1):
        if 2 <= i <= depth:
            x = x.clone()
            x[:, -m:] = learner.compound_prompt_projections[i - 2](learner.compound_prompts_text[i - 2])
        x = block(x)
    f = v.ln_post(x[:, 0]) @ v.proj
    return clip_model.logit_scale.exp() * F.normalize(f, dim=-1) @ F.normalize(w, dim=-1).t()


@pytest.mark.parametrize("depth", [2, 9, 12])
def test_deep_prompt_hooks_equal_a_direct_reimplementation(depth):
    model = tiny_model(depth=depth)
    perturb(model.prompt_learner, depth)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(model(x), oracle_logits(model, x), atol=1e-4, rtol=0)


def test_depth_one_equals_the_shallow_path():
    """J = 1: only the first-layer prompts, no hooks: the text and image towers of open_clip called whole."""
    model = tiny_model(depth=1)
    learner, clip_model = model.prompt_learner, model.clip
    assert len(learner.compound_prompts_text) == 0 and len(learner.compound_prompt_projections) == 0
    perturb(learner, 5)
    x = images()
    with torch.no_grad():
        n_cls = learner.token_prefix.shape[0]
        t = torch.cat([learner.token_prefix, learner.ctx.expand(n_cls, -1, -1), learner.token_suffix], dim=1)
        t = clip_model.transformer(t + clip_model.positional_embedding, attn_mask=clip_model.attn_mask)
        w = clip_model.ln_final(t)[torch.arange(n_cls), learner.tokenized_prompts.argmax(-1)] @ clip_model.text_projection
        v = clip_model.visual
        p = v.conv1(x).flatten(2).transpose(1, 2)
        p = torch.cat([v.class_embedding.expand(3, 1, -1), p], dim=1) + v.positional_embedding
        p = torch.cat([p, learner.proj(learner.ctx).expand(3, -1, -1)], dim=1)
        f = v.ln_post(v.transformer(v.ln_pre(p))[:, 0]) @ v.proj
        expected = clip_model.logit_scale.exp() * F.normalize(f, dim=-1) @ F.normalize(w, dim=-1).t()
        torch.testing.assert_close(model(x), expected, atol=1e-4, rtol=0)
        torch.testing.assert_close(model(x), oracle_logits(model, x), atol=1e-4, rtol=0)


def test_shallow_text_features_at_init_equal_zero_shot_clip():
    model = tiny_model(depth=1)
    with torch.no_grad():
        prompts = model.prompt_learner(model.text_length)
        got = model.encode_text(prompts.text, prompts.deep_text)
        expected = model.clip.encode_text(tokenize([f"a photo of a {c.replace('_', ' ')}." for c in CLASSNAMES]))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_ln_pre_acts_per_token():
    v = tiny_clip().visual
    x, p = torch.randn(2, 50, 64), torch.randn(2, 2, 64)
    with torch.no_grad():
        torch.testing.assert_close(torch.cat([v.ln_pre(x), v.ln_pre(p)], dim=1), v.ln_pre(torch.cat([x, p], dim=1)),
                                   atol=0, rtol=0)


def test_replace_tokens():
    x, tokens = torch.arange(2 * 5 * 3, dtype=torch.float32).view(2, 5, 3), -torch.ones(2, 3)
    for start, rows in ((1, [1, 2]), (-2, [3, 4]), (3, [3, 4])):
        y = layerwise.replace_tokens(x, tokens, start)
        assert y.shape == x.shape and torch.equal(y[:, rows], tokens.expand(2, -1, -1))
        keep = [r for r in range(5) if r not in rows]
        assert torch.equal(y[:, keep], x[:, keep])
    for start in (4, -6):
        with pytest.raises(ValueError, match="cannot replace 2 tokens"):
            layerwise.replace_tokens(x, tokens, start)


def test_hook_placement_in_both_towers():
    """Block inputs: deep prompts at positions 1..M (text) / the last M (image) before blocks 2..J;
    before block 1 and blocks J+1..12 those positions carry the previous block's output; the other
    positions are never overwritten. Lengths stay fixed: L text tokens, 1 + 49 + M image tokens."""
    depth, m = 4, 2
    model = tiny_model(depth=depth)
    perturb(model.prompt_learner, 6)
    seen = {"text": [], "image": []}
    hooks = []
    for tower, blocks in (("text", model.clip.transformer.resblocks), ("image", model.clip.visual.transformer.resblocks)):
        for block in blocks:
            hooks.append(block.register_forward_pre_hook(lambda mod, args, t=tower: seen[t].append(args[0])))
            hooks.append(block.register_forward_hook(lambda mod, args, out, t=tower: seen[t].append(out)))
    with torch.no_grad():
        model(images(2))
        prompts = model.prompt_learner()
    for h in hooks:
        h.remove()
    for tower, where, deep, first in (("text", slice(1, 1 + m), prompts.deep_text, prompts.text[:, 1:1 + m]),
                                      ("image", slice(-m, None), prompts.deep_visual, None)):
        ins, outs = seen[tower][0::2], seen[tower][1::2]
        assert len(ins) == 12 and len({x.shape[1] for x in ins}) == 1
        assert ins[0].shape[1] == (model.text_length if tower == "text" else 52)
        if first is not None:
            torch.testing.assert_close(ins[0][:, where], first + model.clip.positional_embedding[1:1 + m])
        for i in range(2, 13):
            got, previous = ins[i - 1], outs[i - 2]
            if i <= depth:
                assert torch.equal(got[:, where], deep[i - 2].expand(got.shape[0], -1, -1))
            else:
                assert torch.equal(got[:, where], previous[:, where])
            rest = [j for j in range(got.shape[1]) if j not in range(got.shape[1])[where]]
            assert torch.equal(got[:, rest], previous[:, rest])


def test_image_loss_reaches_the_text_prompts_through_the_couplings():
    model = tiny_model(depth=3)
    learner = model.prompt_learner
    prompts = learner(model.text_length)
    model.encode_image(images(2), prompts.visual, prompts.deep_visual).pow(2).sum().backward()
    assert learner.ctx.grad.abs().sum() > 0  # through proj
    assert learner.proj.weight.grad.abs().sum() > 0
    for t, coupling in zip(learner.compound_prompts_text, learner.compound_prompt_projections):
        assert t.grad.abs().sum() > 0 and coupling.weight.grad.abs().sum() > 0
    assert not any(p.grad is not None for p in model.clip.parameters())


# ---------------------------------------------------------------------------------------------
# Speed-ups: same numbers as the direct path
# ---------------------------------------------------------------------------------------------

def test_text_truncation_same_logits_and_gradients():
    results = []
    for truncate in (True, False):
        model = tiny_model(depth=5, truncate_text=truncate)
        perturb(model.prompt_learner, 7)
        model.prompt_learner.train()
        logits = model(images(2))
        logits.logsumexp(-1).sum().backward()
        results.append((logits.detach(), [p.grad for p in model.prompt_learner.parameters()]))
    (a, grads_a), (b, grads_b) = results
    assert tiny_model(truncate_text=True).text_length < 77
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    for ga, gb in zip(grads_a, grads_b):
        torch.testing.assert_close(ga, gb, atol=1e-5, rtol=1e-4)


def test_eval_cache_same_logits_and_invalidated_by_training_and_loading():
    model = tiny_model(depth=3)
    direct = tiny_model(depth=3, cache_eval_text=False)
    perturb(model.prompt_learner, 8)
    direct.prompt_learner.load_state_dict(model.prompt_learner.state_dict())
    for m in (model, direct):
        m.prompt_learner.eval()
    x = images(2)
    with torch.no_grad():
        first = model(x)
        assert model.eval_cache.value is not None and direct.eval_cache.value is None
        torch.testing.assert_close(model(x), first, atol=0, rtol=0)
        torch.testing.assert_close(direct(x), first, atol=0, rtol=0)
        model.prompt_learner.train()
        perturb(model.prompt_learner, 9)
        model(x)  # a training forward drops the cache
        assert model.eval_cache.value is None
        model.prompt_learner.eval()
        after = model(x)
        assert not torch.allclose(after, first, atol=1e-3)
        model.prompt_learner.load_state_dict(direct.prompt_learner.state_dict())  # loading drops it too
        torch.testing.assert_close(model(x), first, atol=0, rtol=0)


def test_prompts_and_text_tower_run_once_per_step_and_once_per_evaluation(toy_root, tmp_path):
    trainer = build(toy_root, str(tmp_path))
    model = trainer.model
    calls = {"learner": 0, "text": 0}
    model.prompt_learner.register_forward_hook(lambda *a: calls.__setitem__("learner", calls["learner"] + 1))
    model.clip.transformer.resblocks[0].register_forward_hook(lambda *a: calls.__setitem__("text", calls["text"] + 1))
    trainer.set_model_mode("train")
    trainer.batch_idx, trainer.num_batches = 0, 10
    batch = next(iter(trainer.train_loader_x))
    summary = trainer.forward_backward(batch)
    assert calls == {"learner": 1, "text": 1} and summary["loss"] > 0
    calls.update(learner=0, text=0)
    quiet(trainer.test)  # 8 test images in batches of 3
    assert calls == {"learner": 1, "text": 1}


# ---------------------------------------------------------------------------------------------
# Precision
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("prec", ["fp32", "amp"])
def test_training_step_in_fp32_and_amp(toy_root, tmp_path, prec):
    trainer = build(toy_root, str(tmp_path), "TRAINER.MAPLE.PREC", prec)
    learner = trainer.model.prompt_learner
    assert all(p.dtype == torch.float32 for p in learner.parameters())
    before = {k: v.clone() for k, v in learner.state_dict().items()}
    trainer.set_model_mode("train")
    trainer.batch_idx, trainer.num_batches = 0, 10
    summary = trainer.forward_backward(next(iter(trainer.train_loader_x)))
    assert torch.isfinite(torch.as_tensor(summary["loss"]))
    changed = [k for k, v in learner.state_dict().items() if not torch.equal(v, before[k])]
    assert sorted(changed) == sorted(before)  # every prompt and coupling is updated
    assert not trainer.model.clip.training and learner.training


def test_fp16_mode_keeps_the_reference_dtype_split():
    """OpenAI's fp16 CLIP: ctx and proj fp16, deep prompts and couplings fp32 (cast on insertion)."""
    clip32 = tiny_clip()
    clip16 = copy.deepcopy(clip32)
    convert_weights_to_lp(clip16)
    m32, m16 = tiny_model(depth=3, clip_model=clip32), tiny_model(depth=3, clip_model=clip16)
    learner = m16.prompt_learner
    assert learner.ctx.dtype == learner.proj.weight.dtype == learner.token_suffix.dtype == torch.float16
    assert all(p.dtype == torch.float32 for p in learner.compound_prompts_text.parameters())
    assert all(p.dtype == torch.float32 for p in learner.compound_prompt_projections.parameters())
    logits = m16(images(2))
    assert logits.dtype == torch.float16
    torch.testing.assert_close(logits.float(), m32(images(2)), atol=0.05, rtol=0)
    logits.float().logsumexp(-1).sum().backward()
    assert learner.ctx.grad.dtype == torch.float16 and learner.compound_prompts_text[0].grad.dtype == torch.float32
    assert learner.compound_prompts_text[0].grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------

def eval_logits(trainer, x):
    trainer.set_model_mode("eval")
    with torch.no_grad():
        return trainer.model_inference(x)


def test_checkpoint_round_trip_onto_new_classes(toy_root, tmp_path):
    trainer = build(toy_root, str(tmp_path / "a"))
    perturb(trainer.model.prompt_learner, 10)
    quiet(trainer.save_model, 4, str(tmp_path / "run"))
    ckpt = torch.load(tmp_path / "run" / "MultiModalPromptLearner" / "model.pth.tar-5", weights_only=True)
    saved = trainer._models["MultiModalPromptLearner"].state_dict()
    assert sorted(ckpt["state_dict"]) == sorted(saved) and len(saved) == 27  # no class-dependent buffers

    six = toy.make_toy_root(str(tmp_path / "six"), per_class=2, num_classes=6)
    other = build(six, str(tmp_path / "b"))
    x = images(2)
    assert eval_logits(other, x).shape == (2, 6)  # fills the eval cache; loading must drop it
    quiet(other.load_model, str(tmp_path / "run"), epoch=5)
    for k, v in other._models["MultiModalPromptLearner"].state_dict().items():
        assert torch.equal(v, saved[k]), k
    assert other.model.prompt_learner.token_prefix.shape[0] == 6
    # The 4 classes the two runs share get the same logits.
    torch.testing.assert_close(eval_logits(other, x)[:, :4], eval_logits(trainer, x), atol=1e-5, rtol=0)


def reference_checkpoint(trainer, n_classes=7, depth=9):
    """The reference's layout: the whole CustomCLIP (frozen towers, logit_scale), fp16 ctx/proj."""
    clip_model, learner = trainer.model.clip, trainer.model.prompt_learner
    state = {f"prompt_learner.{k}": v.detach().clone() for k, v in learner.state_dict().items()}
    for key in ("prompt_learner.ctx", "prompt_learner.proj.weight", "prompt_learner.proj.bias"):
        state[key] = state[key].half()
    state["prompt_learner.token_prefix"] = torch.randn(n_classes, 1, 32).half()
    state["prompt_learner.token_suffix"] = torch.randn(n_classes, 74, 32).half()
    state.update({f"image_encoder.{k}": v for k, v in clip_model.visual.state_dict().items()})
    state.update({f"text_encoder.{k}": v for k, v in clip_model.state_dict().items() if not k.startswith("visual.")})
    state["logit_scale"] = clip_model.logit_scale.detach()
    return {"state_dict": state, "epoch": 5, "optimizer": None, "scheduler": None, "val_result": None}


def test_reference_checkpoint_loads_with_identical_logits(toy_root, tmp_path):
    source = build(toy_root, str(tmp_path / "a"))
    perturb(source.model.prompt_learner, 11)
    with torch.no_grad():  # values representable in fp16, as a reference fp16 run stores them
        for p in (source.model.prompt_learner.ctx, *source.model.prompt_learner.proj.parameters()):
            p.copy_(p.half().float())
    x = images(2)
    expected = eval_logits(source, x)
    target = build(toy_root, str(tmp_path / "b"))
    assert not torch.allclose(eval_logits(target, x), expected, atol=1e-3)
    folder = tmp_path / "ref" / "MultiModalPromptLearner"
    folder.mkdir(parents=True)
    torch.save(reference_checkpoint(source), folder / "model.pth.tar-5")
    quiet(target.load_model, str(tmp_path / "ref"), epoch=5)
    torch.testing.assert_close(eval_logits(target, x), expected, atol=0, rtol=0)
    assert target.model.prompt_learner.ctx.dtype == torch.float32

    # MODEL.INIT_WEIGHTS: the same whole-model file, by name and shape; this run's buffers stay.
    torch.save(reference_checkpoint(source)["state_dict"], tmp_path / "init.pth")
    init = build(toy_root, str(tmp_path / "c"), "MODEL.INIT_WEIGHTS", str(tmp_path / "init.pth"))
    assert init.model.prompt_learner.token_prefix.shape[0] == 4
    torch.testing.assert_close(eval_logits(init, x), expected, atol=0, rtol=0)


def test_foreign_checkpoints_are_refused(toy_root, tmp_path):
    trainer = build(toy_root, str(tmp_path / "a"))
    folder = tmp_path / "ref" / "MultiModalPromptLearner"
    folder.mkdir(parents=True)
    # An older MMRL release used the same folder name: none of its tensors are MaPLe's.
    mmrl = {"representation_learner.compound_rep_tokens": torch.zeros(5, 512),
            "image_encoder.proj_rep": torch.zeros(768, 512), "prompt_embeddings": torch.zeros(7, 77, 512)}
    torch.save({"state_dict": mmrl, "epoch": 5, "optimizer": None, "scheduler": None}, folder / "model.pth.tar-5")
    with pytest.raises(RuntimeError, match="missing trainable tensors"):
        quiet(trainer.load_model, str(tmp_path / "ref"), epoch=5)
    # A checkpoint of another prompt depth.
    shallow = build(toy_root, str(tmp_path / "b"), "TRAINER.MAPLE.PROMPT_DEPTH", "3")
    torch.save(reference_checkpoint(shallow), folder / "model.pth.tar-5")
    with pytest.raises(RuntimeError, match="missing trainable tensors"):
        quiet(trainer.load_model, str(tmp_path / "ref"), epoch=5)
    with pytest.raises(RuntimeError, match="unexpected keys"):
        torch.save(reference_checkpoint(trainer), folder / "model.pth.tar-5")
        quiet(shallow.load_model, str(tmp_path / "ref"), epoch=5)


# ---------------------------------------------------------------------------------------------
# Config: learning rates, bad values
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg_name, expected", [
    (B2N_CFG, [1e-5, 3.5e-3, 3.166e-3, 2.291e-3, 1.209e-3]),
    (XD_CFG, [1e-5, 2.6e-3]),
])
def test_learning_rate_per_epoch(cfg_name, expected):
    cfg = train.setup_cfg(train.build_parser().parse_args(
        ["--trainer", "MaPLe", "--config-file", osp.join(CFG_DIR, f"{cfg_name}.yaml"), "DATASET.NAME", "ToyColours"]))
    assert (cfg.OPTIM.NAME, cfg.OPTIM.MOMENTUM, cfg.OPTIM.WEIGHT_DECAY) == ("sgd", 0.9, 5e-4)
    assert cfg.TRAINER.MAPLE.PROMPT_DEPTH == (9 if cfg_name == B2N_CFG else 3)
    optim = build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg.OPTIM)
    sched = build_lr_scheduler(optim, cfg.OPTIM)
    lrs = []
    for _ in range(cfg.OPTIM.MAX_EPOCH):
        lrs.append(optim.param_groups[0]["lr"])
        optim.step()
        sched.step()
    assert lrs == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("opts, message", [
    (("TRAINER.MAPLE.PREC", "bf16"), 'TRAINER.MAPLE.PREC "bf16" is not allowed'),  # before building
    (("TRAINER.MAPLE.PROMPT_DEPTH", "0"), "PROMPT_DEPTH must be at least 1"),
    (("TRAINER.MAPLE.PROMPT_DEPTH", "13"), "PROMPT_DEPTH 13 exceeds the 12 blocks"),
    (("TRAINER.MAPLE.CTX_INIT", "a photo", "TRAINER.MAPLE.N_CTX", "3"), 'CTX_INIT "a photo" has 2 tokens'),
])
def test_bad_config_values(toy_root, tmp_path, opts, message):
    with pytest.raises(ValueError, match=message):
        build(toy_root, str(tmp_path), *opts)


# ---------------------------------------------------------------------------------------------
# Protocols end to end: the scripts' runs on miniature datasets
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def mini_env(mini_root, tmp_path):
    return dict(os.environ, DATA=mini_root, OUTPUT=str(tmp_path / "out"), SHOTS="1",
                OPTS=" ".join(TINY) + " DATALOADER.NUM_WORKERS 0 OPTIM.MAX_EPOCH 1 TRAIN.PRINT_FREQ 1000")


def run_script(env, name, *args, opts=""):
    """Run a protocol script's train.py runs (as its DRY_RUN prints them) in-process."""
    runs = script_runs(f"maple/{name}", *args, env=dict(env, OPTS=env["OPTS"] + opts))
    for argv in runs:
        quiet(run_train, argv)
    return [argv[argv.index("--output-dir") + 1] for argv in runs]


def test_base_to_novel_on_miniature_data(mini_env):
    (train_dir,) = run_script(mini_env, "base2new_train.sh", "caltech101", 1, opts=" DATALOADER.TRAIN_X.BATCH_SIZE 10")
    assert train_dir.endswith("base2new/train_base/caltech101/shots_1/MaPLe/vit_b16_c2_ep5_batch4_2ctx/seed1")
    log = read(osp.join(train_dir, "log.txt"))
    assert "SUBSAMPLE BASE CLASSES!" in log and "Finish training" in log and "* accuracy:" in log
    assert "Number of trainable parameters: 19,584" in log  # test-tiny: 64 + 2,112 + 8 x (64 + 2,112)
    (test_dir,) = run_script(mini_env, "base2new_test.sh", "caltech101", 1)
    log = read(osp.join(test_dir, "log.txt"))
    assert "SUBSAMPLE NEW CLASSES!" in log and "Loading weights to MultiModalPromptLearner" in log
    assert "* total: 50" in log  # the 50 new classes of the miniature Caltech101, one test image each
    table = io.StringIO()
    with contextlib.redirect_stdout(table):
        parse_test_res.main([mini_env["OUTPUT"], "--table", "--compare", "MaPLe"])
    assert "82.28" in table.getvalue()  # published base-to-novel average Base next to ours


def test_cross_dataset_and_dg_on_miniature_data(mini_env):
    """xd_train.sh's run on the miniature ImageNet, shrunk for speed (500 of its classes, one batch,
    no source test), then xd_test.sh on a cross-dataset target and a DG target."""
    shrink = " DATASET.SUBSAMPLE_CLASSES base DATALOADER.TRAIN_X.BATCH_SIZE 500 TEST.NO_TEST True"
    (xd_dir,) = run_script(mini_env, "xd_train.sh", 1, opts=shrink)
    assert xd_dir.endswith("imagenet/MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets_1shots/seed1")
    log = read(osp.join(xd_dir, "log.txt"))
    assert "prompt depth 3" in log and "Number of trainable parameters: 6,528" in log
    for target, classes in (("caltech101", 100), ("imagenet_r", 200)):
        (out,) = run_script(mini_env, "xd_test.sh", target, 1)
        assert out.endswith(f"evaluation/MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets_1shots/{target}/seed1")
        log = read(osp.join(out, "log.txt"))
        assert "Loading weights to MultiModalPromptLearner" in log and f"* total: {classes}" in log
