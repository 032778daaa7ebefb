"""CoCoOp: parameter counts, Meta-Net, the batched text forward against the reference's per-image
loop, reduction to CoOp, checkpoints, schedule and the protocols on miniature data (cocoop.md §10)."""
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
from trainers.cocoop import CoCoOpCLIP, ConditionalPromptLearner
from trainers.coop import CoOpCLIP

CLASSNAMES = ["red_square", "green_thing", "a_much_longer_class_name_than_the_others", "dog"]


def conditional_learner(clip_model, n_ctx=4, ctx_init="a photo of a", seed=0):
    torch.manual_seed(seed)
    with contextlib.redirect_stdout(io.StringIO()):
        return ConditionalPromptLearner(clip_model, CLASSNAMES, n_ctx, ctx_init)


def perturb(module, seed, scale=0.2):
    """Move the weights off their initialisation; the Meta-Net's two hidden ReLUs (width 32 // 16
    for test-tiny) get positive biases so that pi(x) does depend on the image."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
            if name.endswith("linear1.bias"):
                p.fill_(1.0)


def per_image_oracle(clip_model, pl, imgs):
    """The reference's computation: for each image its own [C, 77, d] prompts through the full text tower."""
    with torch.no_grad():
        image = normalize(clip_model.encode_image(imgs))
    bias = pl.meta_net(image)
    rows = []
    for b in range(imgs.shape[0]):
        ctx = (pl.ctx + bias[b]).unsqueeze(0).expand(pl.n_cls, -1, -1)
        prompts = torch.cat([pl.token_prefix, ctx, pl.token_suffix], dim=1)  # [C, 77, d]
        text = normalize(oracle_text_features(clip_model, prompts, pl.tokenized_prompts.argmax(-1)))
        rows.append(clip_model.logit_scale.exp() * image[b] @ text.t())
    return torch.stack(rows)


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    return toy.make_toy_root(str(tmp_path_factory.mktemp("toy")), per_class=4, num_classes=4)


# ---------------------------------------------------------------------------------------------
# ViT-B/16: parameter count, keys and shapes (one build, random weights, --no-train)
# ---------------------------------------------------------------------------------------------

def test_vit_b16_parameter_count_and_keys(toy_root, tmp_path):
    args = trainer_args("CoCoOp", "vit_b16_c4_ep10_batch1_ctxv1", toy_root, tmp_path,
                        "MODEL.BACKBONE.NAME", "ViT-B/16", flags=("--no-train",))
    trainer = run_train(args)
    assert "Number of trainable parameters: 35,360\n" in read(tmp_path / "log.txt")
    pl = trainer.model.prompt_learner
    shapes = {k: tuple(v.shape) for k, v in pl.state_dict().items()}
    assert shapes == {"ctx": (4, 512), "meta_net.linear1.weight": (32, 512), "meta_net.linear1.bias": (32,),
                      "meta_net.linear2.weight": (512, 32), "meta_net.linear2.bias": (512,),
                      "token_prefix": (4, 1, 512), "token_suffix": (4, 72, 512)}
    assert not any(p.requires_grad for p in trainer.model.clip_model.parameters())
    with contextlib.redirect_stdout(io.StringIO()):
        m16 = ConditionalPromptLearner(trainer.model.clip_model, CLASSNAMES, 16)
    assert sum(p.numel() for p in m16.parameters()) == 41_504


# ---------------------------------------------------------------------------------------------
# Forward: the batched text path against the per-image loop; reduction to CoOp
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("prompts_per_call", [1, 8, 10_000])  # one image per call, two, all three
def test_batched_truncated_forward_equals_per_image_loop(prompts_per_call):
    clip_model = tiny_clip()
    pl = conditional_learner(clip_model)
    perturb(pl.meta_net, seed=1)
    model = CoCoOpCLIP(clip_model, pl, truncate_text=True, prompts_per_call=prompts_per_call)
    assert model.images_per_call == max(1, prompts_per_call // 4)
    calls = count_calls(clip_model.transformer.resblocks[0])
    imgs, labels = images(3), torch.tensor([0, 3, 1])
    logits = model(imgs)
    assert logits.shape == (3, 4)
    per_call = model.images_per_call  # the C = 4 prompts of whole images in each text-tower call
    assert [shape[0] for shape in calls] == [4 * min(per_call, 3 - i) for i in range(0, 3, per_call)]
    assert {shape[1] for shape in calls} == {model.text_length} and model.text_length < 77
    F.cross_entropy(logits, labels).backward()
    grads = {k: p.grad.clone() for k, p in pl.named_parameters()}
    pl.zero_grad()
    expected = per_image_oracle(clip_model, pl, imgs)
    F.cross_entropy(expected, labels).backward()
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    for k, p in pl.named_parameters():
        assert p.grad.abs().max() > 0, k
        torch.testing.assert_close(grads[k], p.grad, rtol=1e-4, atol=1e-6)


def test_text_features_depend_on_the_image():
    clip_model = tiny_clip()
    pl = conditional_learner(clip_model)
    perturb(pl.meta_net, seed=2)
    model = CoCoOpCLIP(clip_model, pl)
    imgs = images(3)
    with torch.no_grad():
        f = normalize(clip_model.encode_image(imgs))
        text = model.text_features(pl.conditional_context(f))  # [B, C, D]
        assert text.shape == (3, 4, 32) and pl.meta_net(f).shape == (3, 32)
        assert (text[0, 2] - text[1, 2]).abs().max() > 1e-3
        batch = model(imgs)
        singles = torch.cat([model(imgs[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, singles, rtol=0, atol=1e-5)


def test_zero_meta_net_output_is_coop():
    clip_model = tiny_clip()
    pl = conditional_learner(clip_model)
    with torch.no_grad():
        pl.ctx.add_(0.1 * torch.randn(pl.ctx.shape, generator=torch.Generator().manual_seed(3)))
        pl.meta_net.linear2.weight.zero_()
        pl.meta_net.linear2.bias.zero_()
    imgs = images(2)
    with torch.no_grad():
        cocoop = CoCoOpCLIP(clip_model, pl)(imgs)
        coop = CoOpCLIP(clip_model, pl)(imgs)  # the same context and class buffers, no Meta-Net
    torch.testing.assert_close(cocoop, coop, rtol=0, atol=1e-5)


def test_initialisation_with_zero_bias_is_zero_shot_clip():
    clip_model = tiny_clip()
    pl = conditional_learner(clip_model)
    with torch.no_grad():
        pl.meta_net.linear2.weight.zero_()
        pl.meta_net.linear2.bias.zero_()
        logits = CoCoOpCLIP(clip_model, pl)(images(2))
        prompts = torch.cat([pl.token_prefix, pl.ctx.expand(4, -1, -1), pl.token_suffix], dim=1)
        tokens = tokenize([f"a photo of a {c.replace('_', ' ')}." for c in CLASSNAMES])
        assert torch.equal(prompts, clip_model.token_embedding(tokens))
        text = normalize(clip_model.encode_text(tokens))
        zero_shot = clip_model.logit_scale.exp() * normalize(clip_model.encode_image(images(2))) @ text.t()
    torch.testing.assert_close(logits, zero_shot, rtol=0, atol=1e-5)


def test_fp16_model_has_an_fp16_meta_net():
    """PREC fp16 (on a GPU): OpenAI's mixed-fp16 CLIP; ctx and the Meta-Net are fp16 parameters."""
    clip_model = tiny_clip()
    pl = conditional_learner(clip_model)
    perturb(pl.meta_net, seed=6)
    imgs = images(2)
    with torch.no_grad():
        reference = CoCoOpCLIP(clip_model, pl)(imgs)
    convert_weights_to_lp(clip_model)
    pl16 = conditional_learner(clip_model)
    pl16.meta_net.load_state_dict(pl.meta_net.state_dict())
    assert {p.dtype for p in pl16.parameters()} == {torch.float16}
    logits = CoCoOpCLIP(clip_model, pl16)(imgs)
    assert logits.dtype == torch.float16
    torch.testing.assert_close(logits.float(), reference, rtol=0, atol=0.1)
    F.cross_entropy(logits.float(), torch.tensor([1, 2])).backward()
    assert torch.isfinite(pl16.meta_net.linear1.weight.grad).all() and pl16.ctx.grad.abs().max() > 0


# ---------------------------------------------------------------------------------------------
# Trainer: step, precision, schedule, checkpoints
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("prec", ["fp32", "amp"])
def test_training_step_loss_is_cross_entropy_of_the_logits(toy_root, tmp_path, prec):
    trainer, log = build(trainer_args("CoCoOp", "vit_b16_c4_ep10_batch1_ctxv1", toy_root, tmp_path,
                                      "TRAINER.COCOOP.PREC", prec, "DATALOADER.TRAIN_X.BATCH_SIZE", 2))
    assert "Number of trainable parameters: 290\n" in log  # ctx 4·32, Meta-Net (32·2 + 2) + (2·32 + 32)
    perturb(trainer.model.prompt_learner.meta_net, seed=4)
    batch = next(iter(trainer.train_loader_x))
    trainer.set_model_mode("eval")
    with torch.no_grad():
        logits = trainer.model(batch["img"])  # the forward does not depend on the mode
    trainer.set_model_mode("train")
    trainer.batch_idx, trainer.num_batches = 0, 10**6
    before = {k: v.clone() for k, v in trainer.model.prompt_learner.state_dict().items()}
    summary = trainer.forward_backward(batch)
    assert set(summary) == {"loss"} and math.isfinite(summary["loss"])
    if prec == "fp32":
        assert summary["loss"] == pytest.approx(F.cross_entropy(logits, batch["label"]).item(), abs=1e-6)
    after = trainer.model.prompt_learner.state_dict()
    for key in ("ctx", "meta_net.linear1.weight", "meta_net.linear2.bias"):
        assert (after[key] - before[key]).abs().max() > 0, key
    assert torch.equal(after["token_suffix"], before["token_suffix"])


def test_learning_rate_schedule():
    rates = lr_per_epoch(osp.join(REPO, "configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml"))
    expected = [1e-5, 2.0e-3, 1.9511e-3, 1.8090e-3, 1.5878e-3, 1.3090e-3, 1.0e-3, 6.910e-4, 4.122e-4, 1.910e-4]
    assert rates == pytest.approx(expected, rel=1e-4)


def test_checkpoint_base_to_new_and_reference_layout(tmp_path):
    root4 = toy.make_toy_root(str(tmp_path / "toy4"), per_class=2, num_classes=4)
    root6 = toy.make_toy_root(str(tmp_path / "toy6"), per_class=2, num_classes=6)
    cfg = "vit_b16_c4_ep10_batch1_ctxv1"
    trainer, _ = build(trainer_args("CoCoOp", cfg, root4, tmp_path / "a"))
    perturb(trainer.model.prompt_learner, seed=5)
    trainer.save_model(9, str(tmp_path / "run"))
    saved = torch.load(tmp_path / "run" / "prompt_learner" / "model.pth.tar-10", weights_only=True)["state_dict"]

    other, _ = build(trainer_args("CoCoOp", cfg, root6, tmp_path / "b"))
    with contextlib.redirect_stdout(io.StringIO()):
        other.load_model(str(tmp_path / "run"), epoch=10)
    loaded = other.model.prompt_learner.state_dict()
    for key, value in saved.items():
        if key in ("token_prefix", "token_suffix"):
            assert loaded[key].shape[0] == 6  # this run's classes
        else:
            assert torch.equal(loaded[key], value), key
    other.set_model_mode("eval")
    with torch.no_grad():
        assert other.model_inference(images(2)).shape == (2, 6)

    # A reference output folder: fp16 tensors, the training classes' buffers (dropped).
    reference = {k: v.half() for k, v in saved.items()}
    write_checkpoint(tmp_path / "reference", reference, 10)
    fresh, _ = build(trainer_args("CoCoOp", cfg, root6, tmp_path / "c"))
    with contextlib.redirect_stdout(io.StringIO()):
        fresh.load_model(str(tmp_path / "reference"), epoch=10)
    for key in ("ctx", "meta_net.linear1.weight", "meta_net.linear2.bias"):
        torch.testing.assert_close(fresh.model.prompt_learner.state_dict()[key], saved[key].half().float())


def test_bad_config_values(toy_root, tmp_path):
    with pytest.raises(ValueError, match="TRAINER.COCOOP.PREC"):
        build(trainer_args("CoCoOp", "vit_b16_c4_ep10_batch1", toy_root, tmp_path, "TRAINER.COCOOP.PREC", "fp8"))
    with pytest.raises(ValueError, match="PROMPTS_PER_CALL"):
        build(trainer_args("CoCoOp", "vit_b16_c4_ep10_batch1", toy_root, tmp_path,
                           "TRAINER.COCOOP.PROMPTS_PER_CALL", 0))


# ---------------------------------------------------------------------------------------------
# Protocols on miniature datasets (test-tiny, one epoch, one shot)
# ---------------------------------------------------------------------------------------------

def test_base_to_novel_and_cross_dataset(mini_root, tmp_path):
    cfg = "vit_b16_c4_ep10_batch1_ctxv1"
    base = tmp_path / "train_base"
    run_train(trainer_args("CoCoOp", cfg, mini_root, base, "DATASET.NUM_SHOTS", 1, "DATASET.SUBSAMPLE_CLASSES",
                           "base", "OPTIM.MAX_EPOCH", 1, "DATALOADER.TRAIN_X.BATCH_SIZE", 1, dataset="eurosat"))
    log = read(base / "log.txt")
    assert "batch [5/5]" in log and "Finish training" in log and "* accuracy:" in log  # batch 1: 5 steps
    run_train(trainer_args("CoCoOp", cfg, mini_root, tmp_path / "test_new", "DATASET.NUM_SHOTS", 1,
                           "DATASET.SUBSAMPLE_CLASSES", "new", dataset="eurosat",
                           flags=("--eval-only", "--model-dir", str(base), "--load-epoch", "1")))
    log = read(tmp_path / "test_new" / "log.txt")
    assert "SUBSAMPLE NEW CLASSES!" in log and "Loading weights to prompt_learner" in log and "* total: 5\n" in log

    source = tmp_path / "source"  # all classes of one dataset, then another dataset's classes
    trainer = run_train(trainer_args("CoCoOp", cfg, mini_root, source, "DATASET.NUM_SHOTS", 1, "OPTIM.MAX_EPOCH", 1,
                                     dataset="eurosat"))
    weights = {k: v.clone() for k, v in trainer.model.prompt_learner.state_dict().items() if "token" not in k}
    tester = run_train(trainer_args("CoCoOp", cfg, mini_root, tmp_path / "target", dataset="dtd",
                                    flags=("--eval-only", "--model-dir", str(source), "--load-epoch", "1")))
    loaded = tester.model.prompt_learner.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in weights.items())
    assert "* total: 47\n" in read(tmp_path / "target" / "log.txt")


def test_scripts_queue_the_protocol_runs(tmp_path):
    """One config for every dataset (ImageNet too); the test steps load the trained model."""
    cfg = "vit_b16_c4_ep10_batch1_ctxv1"
    for dataset in ("imagenet", "dtd"):
        _, opts = queued_command("cocoop/base2new_train.sh", dataset, 1, output=tmp_path)
        assert opts["--config-file"] == osp.join(REPO, "configs", "trainers", "CoCoOp", f"{cfg}.yaml")
        assert opts["--output-dir"] == f"{tmp_path}/base2new/train_base/{dataset}/shots_16/CoCoOp/{cfg}/seed1"
    write_finished_training_log(tmp_path / f"base2new/train_base/dtd/shots_16/CoCoOp/{cfg}/seed1")
    argv, opts = queued_command("cocoop/base2new_test.sh", "dtd", 1, cfg, 10, output=tmp_path)
    assert opts["--load-epoch"] == "10" and "--eval-only" in argv
    _, opts = queued_command("cocoop/xd_train.sh", 2, output=tmp_path)
    assert opts["--output-dir"] == f"{tmp_path}/imagenet/CoCoOp/{cfg}_16shots/seed2"
    write_finished_training_log(tmp_path / f"imagenet/CoCoOp/{cfg}_16shots/seed2")
    _, opts = queued_command("cocoop/xd_test.sh", "imagenetv2", 2, cfg, 10, output=tmp_path)
    assert opts["--model-dir"] == f"{tmp_path}/imagenet/CoCoOp/{cfg}_16shots/seed2"
