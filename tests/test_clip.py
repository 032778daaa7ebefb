"""clip/: names, weights from files, offline errors, tokenizer, layer-wise forward; ZeroshotCLIP."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

import clip
import toy
from clip import layerwise
from helpers import read, run_train
from trainers.common.templates import IMAGENET_TEMPLATES, IMAGENET_TEMPLATES_SELECT, CUSTOM_TEMPLATES

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model, _ = clip.load("test-tiny", weights="random")
    return model


def test_vit_b16_has_the_openai_parameter_count():
    model, _ = clip.load("ViT-B/16", weights="random")
    assert sum(p.numel() for p in model.parameters()) == 149_620_737
    assert type(model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    assert clip.openclip_name("ViT-B/16") == "ViT-B-16-quickgelu"


def test_openai_state_dict_round_trips_through_a_file(tiny, tmp_path):
    images = torch.randn(2, 3, 224, 224)
    tokens = clip.tokenize(["a photo of a dog.", "a centered satellite photo of River."])
    with torch.no_grad():
        ref_img, ref_txt = tiny.encode_image(images), tiny.encode_text(tokens)
    # OpenAI-format state dict (OpenAI's files hold fp16 tensors; fp32 here to compare exactly)
    torch.save(tiny.state_dict(), tmp_path / "openai.pt")
    # open_clip training checkpoint: {"state_dict": {"module.<key>": ...}}
    torch.save({"state_dict": {f"module.{k}": v for k, v in tiny.state_dict().items()}, "epoch": 3},
               tmp_path / "openclip.pt")
    for name in ("openai.pt", "openclip.pt"):
        model, _ = clip.load("test-tiny", weights=str(tmp_path / name))
        with torch.no_grad():
            assert torch.equal(model.encode_image(images), ref_img)
            assert torch.equal(model.encode_text(tokens), ref_txt)


def test_weights_file_errors(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        clip.load("test-tiny", weights=str(tmp_path / "missing.pt"))
    torch.save({"visual.conv1.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="does not match the architecture"):
        clip.load("test-tiny", weights=str(tmp_path / "other.pt"))
    with pytest.raises(ValueError, match="Unknown CLIP model"):
        clip.load("ViT-Q/99", weights="random")


def test_offline_without_cached_weights_names_the_file(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HOME=str(tmp_path), HF_HOME=str(tmp_path / "hf"),
               XDG_CACHE_HOME=str(tmp_path / "cache"))
    code = "import clip; clip.load('ViT-B/16')"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "ViT-B-16.pt" in proc.stderr and "MODEL.BACKBONE.WEIGHTS" in proc.stderr


def test_tokenize_matches_openai_conventions():
    tokens = clip.tokenize(["a photo of a cat."])
    assert tokens.shape == (1, 77) and tokens.dtype == torch.long
    assert tokens[0, 0] == 49406 and tokens[0].argmax() == tokens[0].nonzero().max()
    assert tokens[0, tokens[0].argmax()] == 49407
    with pytest.raises(RuntimeError, match="too long"):
        clip.tokenize(["word " * 100])
    assert clip.tokenize(["word " * 100], truncate=True)[0, -1] == 49407


def test_layerwise_forward_equals_open_clip(tiny):
    images = torch.randn(3, 3, 224, 224)
    tokens = clip.tokenize(["short.", "a much longer prompt about a dog in the park.", "x"])
    with torch.no_grad():
        assert torch.equal(layerwise.encode_image(tiny, images), tiny.encode_image(images))
        assert torch.equal(layerwise.encode_text(tiny, tokens, truncate=False), tiny.encode_text(tokens))
        # truncating to the longest prompt cannot change features under the causal mask
        torch.testing.assert_close(layerwise.encode_text(tiny, tokens), tiny.encode_text(tokens), atol=1e-5, rtol=0)
    assert layerwise.prompt_length(tokens) == int((tokens > 0).sum(1).max())


def test_run_blocks_hooks_see_1_based_blocks(tiny):
    x = torch.randn(2, 5, 64)
    seen = []
    out = layerwise.run_blocks(tiny.visual.transformer.resblocks, x, first=3, last=4,
                               before_block=lambda i, h: (seen.append(("before", i)), h)[1],
                               after_block=lambda i, h_in, h_out: (seen.append(("after", i)), h_out + 1.0)[1])
    assert seen == [("before", 3), ("after", 3), ("before", 4), ("after", 4)]
    blocks = tiny.visual.transformer.resblocks
    with torch.no_grad():
        expected = blocks[3](blocks[2](x) + 1.0) + 1.0
    torch.testing.assert_close(out.detach(), expected)


def test_templates_are_coops():
    assert len(IMAGENET_TEMPLATES) == 80 and len(IMAGENET_TEMPLATES_SELECT) == 7
    assert IMAGENET_TEMPLATES[0] == "a bad photo of a {}." and IMAGENET_TEMPLATES[-1] == "a tattoo of the {}."
    assert IMAGENET_TEMPLATES_SELECT[4] == "a {} in a video game."
    assert CUSTOM_TEMPLATES["EuroSAT"] == "a centered satellite photo of {}."
    assert len(CUSTOM_TEMPLATES) == 15


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    return toy.make_toy_root(str(tmp_path_factory.mktemp("toy")))


def zs_args(root, out, trainer="ZeroshotCLIP"):
    return ["--root", root, "--trainer", trainer, "--output-dir", out, "--eval-only", "--seed", "1",
            "DATASET.NAME", "ToyColours", "DATALOADER.NUM_WORKERS", "0",
            "MODEL.BACKBONE.NAME", "test-tiny", "MODEL.BACKBONE.WEIGHTS", "random"]


def test_zeroshot_logits_and_text_features_computed_once(toy_root, tmp_path, monkeypatch):
    calls = []
    original = layerwise.encode_text
    monkeypatch.setattr(layerwise, "encode_text", lambda *a, **k: (calls.append(1), original(*a, **k))[1])
    trainer = run_train(zs_args(toy_root, str(tmp_path / "zs")))
    assert len(calls) == 1  # once at build time, never per test batch
    log = read(tmp_path / "zs" / "log.txt")
    assert "* accuracy:" in log and "# classes  4" in log and "Number of trainable parameters: 0" in log

    model = trainer.clip_model
    prompts = [f"a photo of a {c.replace('_', ' ')}." for c in toy.TOY_CLASSES]
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        text = model.encode_text(clip.tokenize(prompts))
        text = text / text.norm(dim=-1, keepdim=True)
        img = model.encode_image(images)
        expected = model.logit_scale.exp() * (img / img.norm(dim=-1, keepdim=True)) @ text.t()
    torch.testing.assert_close(trainer.model_inference(images), expected, atol=1e-5, rtol=1e-5)


def test_zeroshot_ensemble_averages_normalised_template_features(toy_root, tmp_path):
    trainer = run_train(zs_args(toy_root, str(tmp_path / "zs2"), trainer="ZeroshotCLIP2"))
    model = trainer.clip_model
    templates = IMAGENET_TEMPLATES_SELECT + ["a photo of a {}."]  # + the toy dataset's default template
    feats = []
    with torch.no_grad():
        for t in templates:
            f = model.encode_text(clip.tokenize([t.format(c.replace("_", " ")) for c in toy.TOY_CLASSES]))
            feats.append(f / f.norm(dim=-1, keepdim=True))
    mean = torch.stack(feats).mean(0)
    torch.testing.assert_close(trainer.text_features, mean / mean.norm(dim=-1, keepdim=True), atol=1e-5, rtol=1e-5)
