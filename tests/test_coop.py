"""CoOp: parameter counts, prompt layout, equivalence with zero-shot CLIP, caches, precision,
checkpoints (own and reference layout), schedules and the protocols on miniature data (coop.md §10)."""
import contextlib
import io
import math
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from open_clip.model import convert_weights_to_lp

import toy
from clip import tokenize
from helpers import read, run_train
from prompt_learning import (  # noqa: F401 (no_env_report: an autouse fixture)
    REPO, build, count_calls, images, lr_per_epoch, no_env_report, normalize, oracle_text_features, queued_command,
    tiny_clip, trainer_args, write_checkpoint, write_finished_training_log,
)
from trainers.coop import CoOpCLIP, PromptLearner

CLASSNAMES = ["red_square", "green_thing", "a_much_longer_class_name_than_the_others"]


def learner(clip_model, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):
        return PromptLearner(clip_model, CLASSNAMES, *args, **kwargs)


def zero_shot_logits(clip_model, imgs, classnames=CLASSNAMES):
    with torch.no_grad():
        text = normalize(clip_model.encode_text(tokenize([f"a photo of a {c.replace('_', ' ')}." for c in classnames])))
        image = normalize(clip_model.encode_image(imgs))
    return clip_model.logit_scale.exp() * image @ text.t()


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    return toy.make_toy_root(str(tmp_path_factory.mktemp("toy")), per_class=4, num_classes=4)


# ---------------------------------------------------------------------------------------------
# ViT-B/16: parameter counts and buffer shapes (one build, random weights, --no-train)
# ---------------------------------------------------------------------------------------------

def test_vit_b16_parameter_counts_and_shapes(toy_root, tmp_path):
    args = trainer_args("CoOp", "vit_b16", toy_root, tmp_path, "MODEL.BACKBONE.NAME", "ViT-B/16",
                        flags=("--no-train",))
    trainer = run_train(args)
    assert "Number of trainable parameters: 8,192\n" in read(tmp_path / "log.txt")
    pl = trainer.model.prompt_learner
    assert pl.ctx.shape == (16, 512) and pl.token_prefix.shape == (4, 1, 512)
    assert pl.token_suffix.shape == (4, 60, 512) and pl().shape == (4, 77, 512)
    assert set(pl.state_dict()) == {"ctx", "token_prefix", "token_suffix"}
    assert trainer.get_model_names() == ["prompt_learner"]
    clip_model = trainer.model.clip_model
    assert not any(p.requires_grad for p in clip_model.parameters())

    ctxv1 = PromptLearner(clip_model, CLASSNAMES, 16, "a photo of a")
    assert sum(p.numel() for p in ctxv1.parameters()) == 2_048 and ctxv1.token_suffix.shape == (3, 72, 512)
    csc = PromptLearner(clip_model, CLASSNAMES, 16, csc=True)
    assert sum(p.numel() for p in csc.parameters()) == 3 * 8_192 and csc.ctx.shape == (3, 16, 512)


# ---------------------------------------------------------------------------------------------
# Prompt layout and forward
# ---------------------------------------------------------------------------------------------

def test_context_init_from_words_equals_zero_shot_clip():
    clip_model = tiny_clip()
    pl = learner(clip_model, 16, "a photo of a")  # the word count (4) overrides N_CTX
    assert pl.ctx.shape == (4, 32) and pl.token_suffix.shape == (3, 72, 32)
    torch.testing.assert_close(pl.ctx, clip_model.token_embedding(tokenize("a photo of a"))[0, 1:5], rtol=0, atol=0)
    imgs = images()
    with torch.no_grad():
        logits = CoOpCLIP(clip_model, pl)(imgs)
    torch.testing.assert_close(logits, zero_shot_logits(clip_model, imgs), rtol=0, atol=1e-5)


def test_same_logits_as_the_zero_shot_trainer(mini_root, tmp_path):
    """Caltech101's template is "a photo of a {}.": CoOp at its ctxv1 initialisation is ZeroshotCLIP."""
    coop, _ = build(trainer_args("CoOp", "vit_b16_ctxv1", mini_root, tmp_path / "a", dataset="caltech101"))
    zs, _ = build(trainer_args("ZeroshotCLIP", "vit_b16", mini_root, tmp_path / "b", dataset="caltech101"))
    coop.model.clip_model.load_state_dict(zs.clip_model.state_dict())  # the same random CLIP
    coop.set_model_mode("eval")
    batch = next(iter(zs.dm.test_loader))  # images (zs.test_loader serves cached features)
    x = batch["img"][:4]
    with torch.no_grad():
        torch.testing.assert_close(coop.model.text_features(), zs.text_features, rtol=0, atol=1e-6)
        torch.testing.assert_close(coop.model_inference(x), zs.model_inference(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("position, name_slots", [("middle", range(9, 12)), ("front", range(1, 4))])
def test_class_token_positions(position, name_slots):
    """A 3-token class name with M = 16: tokens at 9..11 (middle) or 1..3 (front); EOT stays at 21."""
    clip_model = tiny_clip()
    names = ["one two three"]
    assert int(tokenize(names[0]).argmax()) - 1 == 3
    with contextlib.redirect_stdout(io.StringIO()):
        pl = PromptLearner(clip_model, names, 16, position=position)
    prompts = pl()[0]
    tokens = tokenize(f"{' '.join(['X'] * 16)} one two three.")[0]
    embedded = clip_model.token_embedding(tokens)
    ctx_slots = [i for i in range(1, 20) if i not in name_slots]
    assert torch.equal(prompts[list(name_slots)], embedded[17:20])  # the class tokens moved
    assert torch.equal(prompts[ctx_slots], pl.ctx)  # the context around them, in order
    assert torch.equal(prompts[20:], embedded[20:]) and int(pl.tokenized_prompts[0].argmax()) == 21
    assert torch.equal(prompts[0], embedded[0])
    # Truncated and full-length text towers agree for the rearranged prompts too.
    full = CoOpCLIP(clip_model, pl, truncate_text=False)
    cut = CoOpCLIP(clip_model, pl, truncate_text=True)
    assert cut.text_length == 22
    with torch.no_grad():
        torch.testing.assert_close(cut.encode_text(), full.encode_text(), rtol=0, atol=1e-5)
        end = CoOpCLIP(clip_model, learner(clip_model, 16)).encode_text()
    assert (full.encode_text()[0] - end[0]).abs().max() > 1e-3


def test_full_length_forward_equals_the_oracle_with_gradients():
    clip_model = tiny_clip()
    pl = learner(clip_model, 8, csc=True)  # class-specific context [C, M, d]
    model = CoOpCLIP(clip_model, pl)
    imgs, labels = images(3), torch.tensor([0, 2, 1])
    F.cross_entropy(model(imgs), labels).backward()
    grad = pl.ctx.grad.clone()
    pl.ctx.grad = None
    prompts = torch.cat([pl.token_prefix, pl.ctx, pl.token_suffix], dim=1)  # [C, 77, d]
    text = normalize(oracle_text_features(clip_model, prompts, pl.tokenized_prompts.argmax(-1)))
    with torch.no_grad():
        image = normalize(clip_model.encode_image(imgs))
    expected = clip_model.logit_scale.exp() * image @ text.t()
    F.cross_entropy(expected, labels).backward()
    torch.testing.assert_close(model(imgs), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(grad, pl.ctx.grad, rtol=1e-4, atol=1e-7)
    assert all(grad[c].abs().max() > 0 for c in range(3))  # every class's own context trains


def test_eval_text_cache_equals_direct_path_and_is_invalidated():
    clip_model = tiny_clip()
    cached = CoOpCLIP(clip_model, learner(clip_model, 4), cache_eval_text=True)
    direct = CoOpCLIP(clip_model, learner(clip_model, 4), cache_eval_text=False)
    direct.prompt_learner.load_state_dict(cached.prompt_learner.state_dict())
    calls = count_calls(clip_model.transformer.resblocks[0])
    optims = [torch.optim.SGD(m.prompt_learner.parameters(), lr=10.0) for m in (cached, direct)]
    imgs, labels = images(), torch.tensor([0, 1])
    before = None
    for _ in range(2):
        for m in (cached, direct):
            m.prompt_learner.eval()
        with torch.no_grad():
            for _ in range(2):
                torch.testing.assert_close(cached(imgs), direct(imgs), rtol=0, atol=0)
            if before is not None:
                assert (cached(imgs) - before).abs().max() > 1e-4  # the training step changed the logits
            before = cached(imgs)
        for m, optim in zip((cached, direct), optims):  # one training step each
            m.prompt_learner.train()
            optim.zero_grad()
            F.cross_entropy(m(imgs), labels).backward()
            optim.step()
    # cached: one text pass per evaluation (7 calls in 2 evaluations) and one per training step (2);
    # direct: one per call (4) and per training step (2)
    assert len(calls) == (2 + 2) + (4 + 2)
    # Loading weights (resume, --model-dir) in eval mode drops the cached features.
    cached.prompt_learner.eval()
    with torch.no_grad():
        stale = cached(imgs)
        state = dict(cached.prompt_learner.state_dict())
        state["ctx"] = state["ctx"] + torch.randn(state["ctx"].shape, generator=torch.Generator().manual_seed(0))
        cached.prompt_learner.load_state_dict(state)
        direct.prompt_learner.load_state_dict(state)
        assert (cached(imgs) - stale).abs().max() > 1e-4
        torch.testing.assert_close(cached(imgs), direct(imgs), rtol=0, atol=0)


def test_fp16_model_keeps_openai_mixed_precision():
    clip_model = tiny_clip()
    imgs = images()
    with torch.no_grad():
        reference = CoOpCLIP(clip_model, learner(clip_model, 4, "a photo of a"))(imgs)
    convert_weights_to_lp(clip_model)
    pl = learner(clip_model, 4, "a photo of a")
    assert pl.ctx.dtype == torch.float16 and pl.token_suffix.dtype == torch.float16
    assert clip_model.ln_final.weight.dtype == torch.float32  # LayerNorms stay fp32
    model = CoOpCLIP(clip_model, pl)
    logits = model(imgs)
    assert logits.dtype == torch.float16
    torch.testing.assert_close(logits.float(), reference, rtol=0, atol=0.1)
    F.cross_entropy(logits.float(), torch.tensor([0, 1])).backward()
    assert pl.ctx.grad.dtype == torch.float16 and torch.isfinite(pl.ctx.grad).all()


# ---------------------------------------------------------------------------------------------
# Trainer: steps, precision, schedule, checkpoints
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("prec", ["fp32", "amp"])
def test_training_step(toy_root, tmp_path, prec):
    trainer, log = build(trainer_args("CoOp", "vit_b16_ctxv1", toy_root, tmp_path, "TRAINER.COOP.PREC", prec))
    assert "Number of trainable parameters: 128\n" in log  # M = 4, text width 32
    clip_before = {k: v.clone() for k, v in trainer.model.clip_model.state_dict().items()}
    ctx_before = trainer.model.prompt_learner.ctx.detach().clone()
    calls = count_calls(trainer.model.clip_model.transformer.resblocks[0])
    trainer.set_model_mode("train")
    trainer.batch_idx, trainer.num_batches = 0, 10**6
    summary = trainer.forward_backward(next(iter(trainer.train_loader_x)))
    assert set(summary) == {"loss", "acc"} and math.isfinite(summary["loss"])
    assert len(calls) == 1 and calls[0][0] == 4  # the text tower ran once, for the 4 classes
    assert (trainer.model.prompt_learner.ctx - ctx_before).abs().max() > 0
    for k, v in trainer.model.clip_model.state_dict().items():
        assert torch.equal(v, clip_before[k]), k
    assert not trainer.model.clip_model.training


def test_fp16_falls_back_to_fp32_on_the_cpu(toy_root, tmp_path):
    trainer, log = build(trainer_args("CoOp", "vit_b16_ctxv1", toy_root, tmp_path, "TRAINER.COOP.PREC", "fp16"))
    assert "PREC fp16 needs a GPU" in log and trainer.prec == "fp32"
    assert trainer.model.prompt_learner.ctx.dtype == torch.float32


def test_bad_config_values(toy_root, tmp_path):
    with pytest.raises(ValueError, match="CLASS_TOKEN_POSITION"):
        build(trainer_args("CoOp", "vit_b16", toy_root, tmp_path, "TRAINER.COOP.CLASS_TOKEN_POSITION", "back"))
    with pytest.raises(ValueError, match="TRAINER.COOP.PREC"):
        build(trainer_args("CoOp", "vit_b16", toy_root, tmp_path, "TRAINER.COOP.PREC", "bf16"))
    with pytest.raises(ValueError, match="INPUT.SIZE"):
        build(trainer_args("CoOp", "vit_b16", toy_root, tmp_path, "INPUT.SIZE", "(160, 160)"))


def test_learning_rate_schedules():
    rates = lr_per_epoch(osp.join(REPO, "configs/trainers/CoOp/vit_b16_ep50.yaml"))
    assert len(rates) == 50 and rates[0] == 1e-5
    assert [round(r, 7) for r in rates[1:3]] == [2.0e-3, 1.998e-3]
    assert rates[25] == pytest.approx(1.063e-3, abs=1e-6) and rates[49] == pytest.approx(7.89e-6, rel=1e-3)
    rates = lr_per_epoch(osp.join(REPO, "configs/trainers/CoOp/vit_b16_ctxv1.yaml"))
    assert len(rates) == 200 and rates[100] == pytest.approx(1.016e-3, rel=1e-3)
    assert rates[199] == pytest.approx(4.93e-7, rel=1e-3)


def one_step(trainer):
    trainer.set_model_mode("train")
    trainer.batch_idx, trainer.num_batches = 0, 10**6
    trainer.forward_backward(next(iter(trainer.train_loader_x)))


def eval_logits(trainer, imgs):
    trainer.set_model_mode("eval")
    with torch.no_grad():
        return trainer.model_inference(imgs)


def test_checkpoint_round_trip_on_another_class_list(tmp_path):
    base_root = toy.make_toy_root(str(tmp_path / "toy4"), per_class=4, num_classes=4)
    new_root = toy.make_toy_root(str(tmp_path / "toy6"), per_class=4, num_classes=6)
    trainer, _ = build(trainer_args("CoOp", "vit_b16", base_root, tmp_path / "a", "TRAINER.COOP.N_CTX", 2))
    one_step(trainer)
    trainer.save_model(199, str(tmp_path / "run"))
    path = tmp_path / "run" / "prompt_learner" / "model.pth.tar-200"
    saved = torch.load(path, weights_only=True)["state_dict"]
    assert set(saved) == {"ctx", "token_prefix", "token_suffix"} and saved["token_suffix"].shape == (4, 74, 32)

    other, _ = build(trainer_args("CoOp", "vit_b16", new_root, tmp_path / "b", "TRAINER.COOP.N_CTX", 2))
    imgs = images(3)
    initial = eval_logits(other, imgs)  # fills the eval cache, which loading must drop
    with contextlib.redirect_stdout(io.StringIO()) as out:
        other.load_model(str(tmp_path / "run"), epoch=200)
    assert 'Loading weights to prompt_learner from "' in out.getvalue()
    learner6 = other.model.prompt_learner
    assert torch.equal(learner6.ctx, saved["ctx"]) and learner6.token_prefix.shape[0] == 6
    assert torch.equal(learner6.tokenized_prompts[5], tokenize(f"X X {toy.toy_classnames(6)[5].replace('_', ' ')}.")[0])
    logits = eval_logits(other, imgs)
    assert logits.shape == (3, 6) and (logits - initial).abs().max() > 1e-4


def test_reference_checkpoint_loads(tmp_path):
    """A reference output folder: fp16 tensors, 7 training classes' buffers (dropped), epoch 50."""
    root = toy.make_toy_root(str(tmp_path / "toy"), per_class=2, num_classes=4)
    g = torch.Generator().manual_seed(3)
    ctx = (0.02 * torch.randn(4, 32, generator=g)).half()
    state = {"ctx": ctx, "token_prefix": torch.randn(7, 1, 32, generator=g).half(),
             "token_suffix": torch.randn(7, 72, 32, generator=g).half()}
    write_checkpoint(tmp_path / "reference", state, 50)
    trainer, _ = build(trainer_args("CoOp", "vit_b16_ep50_ctxv1", root, tmp_path / "a"))
    expected, _ = build(trainer_args("CoOp", "vit_b16_ep50_ctxv1", root, tmp_path / "b"))
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.load_model(str(tmp_path / "reference"), epoch=50)
    with torch.no_grad():
        expected.model.prompt_learner.ctx.copy_(ctx.float())
    imgs = images(2)
    assert trainer.model.prompt_learner.ctx.dtype == torch.float32
    torch.testing.assert_close(eval_logits(trainer, imgs), eval_logits(expected, imgs), rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="model.pth.tar-10"):
        trainer.load_model(str(tmp_path / "reference"), epoch=10)


def test_init_weights_keep_this_runs_class_buffers(toy_root, tmp_path):
    """MODEL.INIT_WEIGHTS loads the context; same-shaped buffers of other classes do not replace ours."""
    ctx = torch.randn(4, 32, generator=torch.Generator().manual_seed(4))
    state = {"ctx": ctx, "token_prefix": torch.zeros(4, 1, 32), "token_suffix": torch.zeros(4, 72, 32)}
    torch.save({"state_dict": state}, tmp_path / "init.pth")
    fresh, _ = build(trainer_args("CoOp", "vit_b16_ctxv1", toy_root, tmp_path / "a"))
    trainer, log = build(trainer_args("CoOp", "vit_b16_ctxv1", toy_root, tmp_path / "b",
                                      "MODEL.INIT_WEIGHTS", tmp_path / "init.pth"))
    assert "Successfully loaded pretrained weights" in log
    assert torch.equal(trainer.model.prompt_learner.ctx, ctx)
    for name in ("token_prefix", "token_suffix"):
        assert torch.equal(getattr(trainer.model.prompt_learner, name), getattr(fresh.model.prompt_learner, name))


def test_context_shape_mismatch_is_explained(tmp_path):
    root4 = toy.make_toy_root(str(tmp_path / "toy4"), per_class=2, num_classes=4)
    root6 = toy.make_toy_root(str(tmp_path / "toy6"), per_class=2, num_classes=6)
    csc, _ = build(trainer_args("CoOp", "vit_b16", root4, tmp_path / "a", "TRAINER.COOP.CSC", True,
                                "TRAINER.COOP.N_CTX", 2))
    csc.save_model(0, str(tmp_path / "csc"))
    other, _ = build(trainer_args("CoOp", "vit_b16", root6, tmp_path / "b", "TRAINER.COOP.CSC", True,
                                  "TRAINER.COOP.N_CTX", 2))
    with pytest.raises(ValueError, match="class-specific"):
        other.load_model(str(tmp_path / "csc"), epoch=1)
    generic, _ = build(trainer_args("CoOp", "vit_b16_ctxv1", root4, tmp_path / "c"))
    with pytest.raises(ValueError, match=r"\[4, 2, 32\].*\[4, 32\]"):
        generic.load_model(str(tmp_path / "csc"), epoch=1)


# ---------------------------------------------------------------------------------------------
# Protocols on miniature datasets (test-tiny, one epoch, one shot)
# ---------------------------------------------------------------------------------------------

def test_base_to_novel_train_and_test(mini_root, tmp_path):
    train_dir, test_dir = tmp_path / "train_base", tmp_path / "test_new"
    run_train(trainer_args("CoOp", "vit_b16_ctxv1", mini_root, train_dir, "DATASET.NUM_SHOTS", 1,
                           "DATASET.SUBSAMPLE_CLASSES", "base", "OPTIM.MAX_EPOCH", 1, dataset="eurosat"))
    log = read(train_dir / "log.txt")
    assert "SUBSAMPLE BASE CLASSES!" in log and "Finish training" in log and "* accuracy:" in log
    assert osp.exists(train_dir / "prompt_learner" / "model.pth.tar-1")
    run_train(trainer_args("CoOp", "vit_b16_ctxv1", mini_root, test_dir, "DATASET.NUM_SHOTS", 1,
                           "DATASET.SUBSAMPLE_CLASSES", "new", dataset="eurosat",
                           flags=("--eval-only", "--model-dir", str(train_dir), "--load-epoch", "1")))
    log = read(test_dir / "log.txt")
    assert "SUBSAMPLE NEW CLASSES!" in log and "Loading weights to prompt_learner" in log
    assert "* total: 5\n" in log and "* accuracy:" in log


def test_cross_dataset_train_and_test(mini_root, tmp_path):
    """Train on all classes of one dataset, evaluate on another's classes (EuroSAT -> DTD here)."""
    source, target = tmp_path / "source", tmp_path / "target"
    trainer = run_train(trainer_args("CoOp", "vit_b16_ep50_ctxv1", mini_root, source, "DATASET.NUM_SHOTS", 1,
                                     "OPTIM.MAX_EPOCH", 1, dataset="eurosat"))
    trained_ctx = trainer.model.prompt_learner.ctx.detach().clone()
    tester = run_train(trainer_args("CoOp", "vit_b16_ep50_ctxv1", mini_root, target, dataset="dtd",
                                    flags=("--eval-only", "--model-dir", str(source), "--load-epoch", "1")))
    assert torch.equal(tester.model.prompt_learner.ctx, trained_ctx)
    assert tester.model.prompt_learner.token_prefix.shape[0] == 47
    assert "* total: 47\n" in read(target / "log.txt")


def test_scripts_queue_the_protocol_runs(tmp_path):
    """Each protocol script's train.py command: config by dataset and shot count, layout, load epoch."""
    def config(options):
        return osp.relpath(options["--config-file"], osp.join(REPO, "configs", "trainers", "CoOp"))

    argv, opts = queued_command("coop/base2new_train.sh", "eurosat", 2, output=tmp_path)
    assert config(opts) == "vit_b16_ctxv1.yaml" and opts["DATASET.SUBSAMPLE_CLASSES"] == "base"
    assert opts["--output-dir"] == f"{tmp_path}/base2new/train_base/eurosat/shots_16/CoOp/vit_b16_ctxv1/seed2"
    _, opts = queued_command("coop/base2new_train.sh", "imagenet", 1, output=tmp_path)
    assert config(opts) == "vit_b16_ep50_ctxv1.yaml"
    write_finished_training_log(tmp_path / "base2new/train_base/eurosat/shots_16/CoOp/vit_b16_ctxv1/seed2")
    argv, opts = queued_command("coop/base2new_test.sh", "eurosat", 2, "vit_b16_ctxv1", 200, output=tmp_path)
    assert opts["--load-epoch"] == "200" and "--eval-only" in argv and opts["DATASET.SUBSAMPLE_CLASSES"] == "new"
    assert opts["--model-dir"] == f"{tmp_path}/base2new/train_base/eurosat/shots_16/CoOp/vit_b16_ctxv1/seed2"
    _, opts = queued_command("coop/xd_train.sh", 1, output=tmp_path)
    assert config(opts) == "vit_b16_ep50_ctxv1.yaml" and opts["--dataset-config-file"].endswith("imagenet.yaml")
    write_finished_training_log(tmp_path / "imagenet/CoOp/vit_b16_ep50_16shots/seed1")
    _, opts = queued_command("coop/xd_test.sh", "imagenet_a", 1, "vit_b16_ep50", 50, output=tmp_path)
    assert opts["--model-dir"] == f"{tmp_path}/imagenet/CoOp/vit_b16_ep50_16shots/seed1"
    assert opts["--output-dir"] == f"{tmp_path}/evaluation/CoOp/vit_b16_ep50_16shots/imagenet_a/seed1"
    for dataset, shots, cfg in (("dtd", 1, "vit_b16_ep50"), ("dtd", 4, "vit_b16_ep100"), ("dtd", 16, "vit_b16"),
                                ("imagenet", 8, "vit_b16_ep50")):
        _, opts = queued_command("coop/few_shot.sh", dataset, 3, shots, output=tmp_path)
        assert config(opts) == f"{cfg}.yaml" and opts["DATASET.NUM_SHOTS"] == str(shots)
        assert opts["--output-dir"] == f"{tmp_path}/few_shot/{dataset}/shots_{shots}/CoOp/{cfg}/seed3"
    _, opts = queued_command("coop/few_shot.sh", "dtd", 1, 2, "vit_b16_ep100", 8, True, "middle", output=tmp_path)
    assert (opts["TRAINER.COOP.N_CTX"], opts["TRAINER.COOP.CSC"], opts["TRAINER.COOP.CLASS_TOKEN_POSITION"]) \
        == ("8", "True", "middle")
