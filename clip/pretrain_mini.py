"""Pretrain ``mini-clip``: the 12-block miniature CLIP, trained contrastively on the synthetic world.

    python -m clip.pretrain_mini [--out FILE] [--seed 0] [--threads 1]      # then evaluates it
    python -m clip.pretrain_mini --eval-only [--weights FILE] [--test-per-class 10]

The world (``datasets/world.py``) gives every class name of the 15 datasets a concept (shape,
colour, accent colour, pattern). Pretraining draws its own random images of those concepts (another
random stream than the miniature datasets, and no dataset's style) and pairs each with a caption:
a description (``a photo of a red disk with blue dots.``) or a class caption (``a photo of a
{class}.``, a dataset template the trainers use, or one of CLIP's 80 ImageNet templates).

1. Joint contrastive training (CLIP's symmetric InfoNCE, AdamW, warmup and cosine decay) of both
   towers on images and their descriptions: a small vocabulary, from which the image tower learns
   shapes, colours and patterns. Half of the image patches are dropped (as in FLIP), halving the cost.
2. Text alignment: the image tower is frozen, the features of ``--renders`` new images per class
   are computed once, and the text tower alone continues the contrastive loss against them on
   class captions (70%) and descriptions (30%). The 2,114 class names are arbitrary labels of their
   concepts; this phase, cheap without the image tower, is where the text tower learns them.
The logit scale is the one learned in phase 1 (phase 2 keeps it fixed): 23.3 in the shipped file,
where OpenAI CLIP's is 100. The trainers' recipes learn with it as they are (the demo, the tests).

The weights are saved in fp16 (``clip.load`` casts them to fp32) to ``--out`` (default
``output/mini-clip/mini-clip.pt``; use it with ``MODEL.BACKBONE.NAME mini-clip MODEL.BACKBONE.WEIGHTS
FILE``). Then zero-shot accuracy is measured on miniature datasets written by ``datasets.mini``
(test splits, base and new classes, through the readers and the test transform, with CoOp's
per-dataset template, exactly as ZeroshotCLIP), printed as a table and compared with the shipped
card (``clip/weights/mini-clip.json``). Same seed, thread count and library versions: same weights.
"""
import argparse
import io
import json
import math
import os
import os.path as osp
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

DEFAULTS = dict(
    seed=0, threads=1, batch=128, steps=300, lr=2e-3, warmup=50, keep_patches=0.5,
    text_steps=200, text_batch=512, text_lr=2e-3, text_describe=0.3, renders=4,
)
B2N = ("ImageNet", "Caltech101", "OxfordPets", "StanfordCars", "OxfordFlowers", "Food101", "FGVCAircraft",
       "SUN397", "DescribableTextures", "EuroSAT", "UCF101")
VARIANTS = ("ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR")
STREAM = 20240611  # pretraining draws from default_rng([seed, STREAM]); the miniatures hash their own seeds
CARD_FILE = osp.join(REPO, "clip", "weights", "mini-clip.json")
DEFAULT_OUT = osp.join("output", "mini-clip", "mini-clip.pt")  # the shipped file is only replaced on request
# The slow test retrains and compares these datasets' zero-shot accuracy with the card's.
REPRODUCE_DATASETS = ("Caltech101", "OxfordPets", "DescribableTextures", "EuroSAT")
# Retraining must reproduce the card's zero-shot accuracies (base and new of those datasets) on average
# within REPRODUCE_MEAN_TOLERANCE points and each within REPRODUCE_TOLERANCE: two trainings that differ
# only in floating-point rounding (another CPU, thread count or library version) end up several points
# apart on a dataset's 50 to 500 test images, but not on their mean.
REPRODUCE_TOLERANCE = 10.0  # points, every (dataset, base/new) accuracy
REPRODUCE_MEAN_TOLERANCE = 3.0  # points, their mean
PIXEL_MEAN = (0.48145466, 0.4578275, 0.40821073)
PIXEL_STD = (0.26862954, 0.26130258, 0.27577711)


def log(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------------------
# The pretraining data: images of concepts and their captions
# ---------------------------------------------------------------------------

class WorldData:
    """Every class name of the 15 datasets, its concept and the templates of its datasets."""

    def __init__(self):
        from datasets import mini, world
        from trainers.common.templates import CUSTOM_TEMPLATES, DEFAULT_TEMPLATE, IMAGENET_TEMPLATES

        self.world = world
        datasets_of = {}
        for dataset, names in mini.all_class_names().items():
            for name in names:
                datasets_of.setdefault(world.normalise(name), set()).add(dataset)
        self.names = sorted(datasets_of)
        self.concepts = [world.concept_of(n) for n in self.names]
        self.own_templates = [sorted({CUSTOM_TEMPLATES[d] for d in datasets_of[n]}) for n in self.names]
        self.default_template = DEFAULT_TEMPLATE
        self.imagenet_templates = IMAGENET_TEMPLATES
        self.upsample = upsample_matrix(world.SIZE, 224)
        self.mean = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(PIXEL_STD).view(1, 3, 1, 1)

    def caption(self, i, rng, describe):
        """A caption of name ``i``: its description with probability ``describe``, else a class caption."""
        if rng.random() < describe:
            c = self.concepts[i]
            w = self.world
            text = f"{w.PALETTE[c.colour][0]} {w.SHAPES[c.shape]} with {w.PALETTE[c.accent][0]} {w.PATTERNS[c.pattern]}"
            own = []
        else:
            text, own = self.names[i], self.own_templates[i]
        u = rng.random()
        if u < 0.4:
            template = self.default_template
        elif u < 0.7 and own:
            template = own[int(rng.integers(len(own)))]
        else:
            template = self.imagenet_templates[int(rng.integers(len(self.imagenet_templates)))]
        return template.format(text)

    def pixels(self, idx, rng):
        """New random images of the names ``idx``: float ``(N, SIZE, SIZE, 3)``, no dataset style."""
        w = self.world
        return w.render_batch([self.concepts[i] for i in idx], w.sample_nuisance(rng, len(idx)))

    def images(self, idx, rng):
        """Model inputs ``[len(idx), 3, 224, 224]``: new random images of the names ``idx``."""
        pixels = self.pixels(idx, rng)
        x = torch.from_numpy(np.rint(pixels * 255) / 255).float().permute(0, 3, 1, 2)
        x = (self.upsample @ x @ self.upsample.t()).clamp_(0, 1)  # the test transform's bicubic resize
        return (x - self.mean) / self.std


def upsample_matrix(n, out):
    """The ``[out, n]`` matrix of PIL's bicubic resize from ``n`` to ``out`` pixels (one axis)."""
    from PIL import Image

    m = np.zeros((out, n), dtype=np.float32)
    for j in range(n):
        row = np.zeros((1, n), dtype=np.float32)
        row[0, j] = 1.0
        m[:, j] = np.asarray(Image.fromarray(row, "F").resize((out, 1), Image.BICUBIC))[0]
    return torch.from_numpy(m)


class Batches:
    """Names in batches of distinct names, cycling through seeded permutations."""

    def __init__(self, n, batch, rng):
        self.n, self.batch, self.rng, self.queue = n, batch, rng, []

    def next(self):
        while len(self.queue) < self.batch:
            self.queue += [int(i) for i in self.rng.permutation(self.n)]
        idx, self.queue = self.queue[:self.batch], self.queue[self.batch:]
        return idx


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------

def encode_image_dropped(model, images, keep, generator):
    """Image features with a random ``keep`` fraction of the patch tokens (the class token stays)."""
    from clip import layerwise

    visual = model.visual
    x = layerwise.image_embeddings(visual, images)  # [B, 1 + P, d]
    n_patches = x.shape[1] - 1
    n_keep = max(1, int(round(n_patches * keep)))
    order = torch.rand(x.shape[0], n_patches, generator=generator).argsort(dim=1)[:, :n_keep] + 1
    kept = torch.gather(x, 1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    x = torch.cat([x[:, :1], kept], dim=1)
    x = layerwise.run_blocks(visual.transformer.resblocks, x)
    return layerwise.image_head(visual, x)


def contrastive_loss(image_features, text_features, logit_scale):
    """CLIP's symmetric cross-entropy over a batch of matching pairs (row i matches column i)."""
    image_features = F.normalize(image_features, dim=-1)
    text_features = F.normalize(text_features, dim=-1)
    logits = logit_scale.exp() * image_features @ text_features.t()
    labels = torch.arange(logits.shape[0])
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def cosine_lr(step, total, warmup):
    return min(1.0, (step + 1) / max(1, warmup)) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total)))


def param_groups(model, names, lr, weight_decay):
    """AdamW groups: weight decay on matrices only; the logit scale learns 10x faster."""
    decay, no_decay, scale = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad or not any(name.startswith(n) for n in names):
            continue
        if name == "logit_scale":
            scale.append(p)
        elif p.ndim < 2 or "embedding" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "lr": lr},
              {"params": no_decay, "weight_decay": 0.0, "lr": lr}]
    if scale:
        groups.append({"params": scale, "weight_decay": 0.0, "lr": lr * 10})
    return groups


def train_joint(model, data, args, rng, generator):
    """Phase 1: both towers on images and their descriptions, half the patches dropped."""
    from clip import layerwise, tokenize

    groups = param_groups(model, [""], args.lr, 0.1)
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.98), eps=1e-6)
    base_lrs = [g["lr"] for g in groups]
    batches = Batches(len(data.names), args.batch, rng)
    model.train()
    start = time.time()
    for step in range(args.steps):
        for g, base in zip(opt.param_groups, base_lrs):
            g["lr"] = base * cosine_lr(step, args.steps, args.warmup)
        idx = batches.next()
        images = data.images(idx, rng)
        tokens = tokenize([data.caption(i, rng, describe=1.0) for i in idx], truncate=True)
        loss = contrastive_loss(encode_image_dropped(model, images, args.keep_patches, generator),
                                layerwise.encode_text(model, tokens), model.logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 25 == 0 or step == args.steps - 1:
            log(f"[joint {step + 1}/{args.steps}] loss {loss.item():.3f} logit scale "
                f"{model.logit_scale.exp().item():.1f} ({time.time() - start:.0f} s)")


@torch.no_grad()
def image_feature_bank(model, data, renders, rng, batch=256):
    """Normalised features ``[n_names, renders, d]`` of new random images of every name."""
    model.eval()
    bank = []
    for _ in range(renders):
        feats = [model.encode_image(data.images(list(range(s, min(s + batch, len(data.names)))), rng))
                 for s in range(0, len(data.names), batch)]
        bank.append(F.normalize(torch.cat(feats), dim=-1))
    return torch.stack(bank, dim=1)


def align_text(model, data, args, rng):
    """Phase 2: frozen image tower; the text tower learns against a bank of image features."""
    from clip import layerwise, tokenize

    start = time.time()
    bank = image_feature_bank(model, data, args.renders, rng)
    log(f"[align] image features of {args.renders} images x {len(data.names)} names ({time.time() - start:.0f} s)")
    for p in model.parameters():
        p.requires_grad_(False)
    text_params = [n for n, _ in model.named_parameters() if not n.startswith("visual") and n != "logit_scale"]
    for name, p in model.named_parameters():
        p.requires_grad_(name in text_params)
    groups = param_groups(model, text_params, args.text_lr, 0.0)
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.98), eps=1e-6)
    base_lrs = [g["lr"] for g in groups]
    batches = Batches(len(data.names), args.text_batch, rng)
    model.train()
    for step in range(args.text_steps):
        for g, base in zip(opt.param_groups, base_lrs):
            g["lr"] = base * cosine_lr(step, args.text_steps, 0)
        idx = batches.next()
        pick = torch.from_numpy(rng.integers(0, args.renders, len(idx)))
        tokens = tokenize([data.caption(i, rng, args.text_describe) for i in idx], truncate=True)
        loss = contrastive_loss(bank[torch.tensor(idx), pick], layerwise.encode_text(model, tokens), model.logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == args.text_steps - 1:
            log(f"[align {step + 1}/{args.text_steps}] loss {loss.item():.3f} ({time.time() - start:.0f} s)")
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()


def pretraining_rng(seed):
    return np.random.default_rng([seed, STREAM])


def pretrain(args):
    """Build ``mini-clip`` with random weights and run both phases; returns the model (eval mode)."""
    import clip

    torch.manual_seed(args.seed)
    rng = pretraining_rng(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    model = clip.create_model(clip.MINI_CLIP)
    data = WorldData()
    log(f"[mini-clip] {len(data.names)} class names; {args.steps} joint steps x {args.batch}, "
        f"{args.text_steps} text steps x {args.text_batch}; {torch.get_num_threads()} threads")
    train_joint(model, data, args, rng, generator)
    if args.diagnose:
        log("[diagnose] after the joint phase: top-1 over %d names by name %.1f%%, by description %.1f%%"
            % ((len(data.names),) + world_accuracy(model, data, np.random.default_rng(1))))
    align_text(model, data, args, rng)
    if args.diagnose:
        log("[diagnose] after text alignment: top-1 over %d names by name %.1f%%, by description %.1f%%"
            % ((len(data.names),) + world_accuracy(model, data, np.random.default_rng(1))))
    return model


@torch.no_grad()
def world_accuracy(model, data, rng, batch=256):
    """Top-1 (%) over all class names on new unstyled images: with class prompts
    (``a photo of a {name}.``) and with description prompts (what the image tower can tell apart)."""
    from trainers.common.utils import text_features_for_prompts

    model.eval()
    by_name = text_features_for_prompts(model, [data.default_template.format(n) for n in data.names], "cpu")
    by_look = text_features_for_prompts(model, [data.caption(i, rng, 1.0) for i in range(len(data.names))], "cpu")
    hits_name = hits_look = 0
    for s in range(0, len(data.names), batch):
        idx = list(range(s, min(s + batch, len(data.names))))
        feats = F.normalize(model.encode_image(data.images(idx, rng)), dim=-1)
        truth = torch.tensor(idx)
        hits_name += int(((feats @ by_name.t()).argmax(1) == truth).sum())
        hits_look += int(((feats @ by_look.t()).argmax(1) == truth).sum())
    n = len(data.names)
    return 100.0 * hits_name / n, 100.0 * hits_look / n


def save_fp16(model, path):
    """Save the state dict in fp16; returns the file's SHA-256.

    Serialised in memory first: ``torch.save`` to a path names the archive's folder after the file,
    so the same weights saved under two names would give two hashes.
    """
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    state = {k: v.detach().to(torch.float16).clone() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    from clip import file_sha256
    from harness.fileio import atomic_write

    with atomic_write(path, "wb") as f:
        f.write(buffer.getvalue())

    return file_sha256(path)


# ---------------------------------------------------------------------------
# Zero-shot evaluation on the miniature datasets
# ---------------------------------------------------------------------------

def dataset_cfg(root, dataset, subsample):
    from dassl.config import get_cfg_default
    from trainers.config import extend_cfg

    from datasets.common import CONFIG_STEMS

    stem = {v: k for k, v in CONFIG_STEMS.items()}[dataset]
    cfg = get_cfg_default()
    extend_cfg(cfg)
    cfg.merge_from_file(osp.join(REPO, "configs", "datasets", f"{stem}.yaml"))
    cfg.merge_from_file(osp.join(REPO, "configs", "trainers", "ZeroshotCLIP", "vit_b16.yaml"))
    cfg.merge_from_list(["DATASET.ROOT", root, "DATASET.SUBSAMPLE_CLASSES", subsample])
    return cfg


@torch.no_grad()
def zero_shot_accuracy(model, root, dataset, subsample, batch=250):
    """ZeroshotCLIP's accuracy (%) on a test split: CoOp's template, the test transform."""
    import contextlib
    import io

    from dassl.data.datasets import build_dataset
    from dassl.data.transforms import build_transform
    from PIL import Image

    from trainers.common.templates import class_prompts, template_for
    from trainers.common.utils import text_features_for_prompts

    cfg = dataset_cfg(root, dataset, subsample)
    with contextlib.redirect_stdout(io.StringIO()):  # the readers' and transform's progress lines
        ds = build_dataset(cfg)
        transform = build_transform(cfg, is_train=False)
    text = text_features_for_prompts(model, class_prompts(template_for(dataset), ds.classnames), "cpu")
    correct = 0
    for s in range(0, len(ds.test), batch):
        items = ds.test[s:s + batch]
        images = torch.stack([transform(Image.open(item.impath).convert("RGB")) for item in items])
        pred = (model.encode_image(images) @ text.t()).argmax(dim=1)
        correct += int((pred == torch.tensor([item.label for item in items])).sum())
    return 100.0 * correct / len(ds.test), len(ds.test), len(ds.classnames)


def evaluate(model, names=None, test_per_class=10, root=None):
    """Zero-shot accuracy per dataset: ``{dataset: {"base"/"new"/"all": (acc, n_images, n_classes)}}``."""
    import datasets  # noqa: F401  (registers the readers)
    from datasets import mini

    names = list(names or B2N + VARIANTS)
    with tempfile.TemporaryDirectory() as tmp:
        root = root or tmp
        mini.build(root, names, test_per_class=test_per_class, verbose=False)
        model.eval()
        results = {}
        for dataset in names:
            parts = ("base", "new") if dataset in B2N else ("all",)
            results[dataset] = {p: zero_shot_accuracy(model, root, dataset, p) for p in parts}
    return results


def results_table(results):
    """Markdown table: accuracy and chance (1 / classes) for base, new (or all) classes."""
    lines = ["| Dataset | Base (chance) | New (chance) | All classes (chance) | Test images |",
             "|---|---|---|---|---|"]
    for dataset, parts in results.items():
        cell = {p: f"{acc:.1f} ({100 / n_cls:.1f})" for p, (acc, _, n_cls) in parts.items()}
        n_images = sum(n for _, n, _ in parts.values())
        lines.append(f"| {dataset} | {cell.get('base', '')} | {cell.get('new', '')} | {cell.get('all', '')} | {n_images} |")
    return "\n".join(lines)


def card_entry(results):
    """``{dataset: {"base"/"new"/"all": accuracy}}``."""
    return {d: {p: round(acc, 2) for p, (acc, _, _) in parts.items()} for d, parts in results.items()}


def compare_to_card(results, card):
    """(mean difference, largest absolute difference) in points from the card's zero-shot accuracies."""
    diffs = [acc - card["zero_shot"][d][p] for d, parts in results.items() for p, (acc, _, _) in parts.items()]
    return sum(diffs) / len(diffs), max(abs(d) for d in diffs)


def reproduces_card(results, card):
    """True when ``results`` are within the card's reproduction tolerances (mean and every accuracy)."""
    mean, worst = compare_to_card(results, card)
    return abs(mean) <= card["reproduce"]["mean_tolerance"] and worst <= card["reproduce"]["tolerance"]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m clip.pretrain_mini", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="", help=f"where to save the weights (default: {DEFAULT_OUT})")
    parser.add_argument("--eval-only", action="store_true", help="only evaluate --weights (default: shipped)")
    parser.add_argument("--weights", default="", help="weights to evaluate with --eval-only")
    parser.add_argument("--test-per-class", type=int, default=10, help="test images per class for the evaluation")
    parser.add_argument("--datasets", nargs="+", default=None, help="datasets to evaluate (default: all 15)")
    parser.add_argument("--no-eval", action="store_true", help="skip the zero-shot evaluation")
    parser.add_argument("--diagnose", action="store_true", help="print accuracy over all names after each phase")
    parser.add_argument("--card", default="", help="write the weights' card (JSON: hash, settings, zero-shot) here")
    for key, value in DEFAULTS.items():
        parser.add_argument("--" + key.replace("_", "-"), type=type(value), default=value)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, REPO)
    import clip
    from datasets.common import resolve_dataset_name

    names = [resolve_dataset_name(n) for n in args.datasets] if args.datasets else None
    start = time.time()
    if args.eval_only:
        model, _ = clip.load(clip.MINI_CLIP, weights=args.weights)
        digest = clip.file_sha256(args.weights or clip.MINI_CLIP_FILE)
    else:
        model = pretrain(args)
        out = args.out or DEFAULT_OUT
        digest = save_fp16(model, out)
        train_seconds = time.time() - start
        log(f"[mini-clip] saved {out} (SHA-256 {digest}) after {train_seconds:.0f} s")
        model, _ = clip.load(clip.MINI_CLIP, weights=out)  # evaluate what was saved (fp16 -> fp32)
    if args.no_eval:
        return
    results = evaluate(model, names, args.test_per_class)
    log(results_table(results))
    shipped = json.load(open(CARD_FILE)) if osp.isfile(CARD_FILE) else None
    if shipped and shipped["test_per_class"] == args.test_per_class and not args.card:
        mean, worst = compare_to_card(results, shipped)
        verdict = "within" if reproduces_card(results, shipped) else "OUTSIDE"
        log(f"[mini-clip] difference from the shipped card: mean {mean:+.1f} points, largest {worst:.1f} points "
            f"({verdict} its tolerances: mean {shipped['reproduce']['mean_tolerance']}, "
            f"each {shipped['reproduce']['tolerance']})")
    if args.card:
        card = {"sha256": digest, "settings": {k: getattr(args, k) for k in DEFAULTS},
                "train_seconds": None if args.eval_only else round(train_seconds),
                "test_per_class": args.test_per_class, "zero_shot": card_entry(results),
                "reproduce": {"datasets": list(REPRODUCE_DATASETS), "tolerance": REPRODUCE_TOLERANCE,
                              "mean_tolerance": REPRODUCE_MEAN_TOLERANCE}}
        with open(args.card, "w") as f:
            json.dump(card, f, indent=2)
            f.write("\n")
        log(f"[mini-clip] card written to {args.card}")
    log(f"[mini-clip] done in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
