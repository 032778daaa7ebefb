"""Build a trainer at two precisions with the same weights and data, and measure how far they agree.

Used by ``test_precision.py`` (amp = bf16 autocast on the CPU) and ``test_gpu.py`` (amp and fp16 on
CUDA). Every trainer with a ``PREC`` key, at ``test-tiny`` on the toy dataset.
"""

import torch

from helpers import build_toy_trainer

CONFIGS = {
    "CLIP_Adapter": ("configs/trainers/CLIP_Adapter/vit_b16.yaml", "TRAINER.CLIP_ADAPTER.PREC"),
    "MultiModalAdapter": ("configs/trainers/MultiModalAdapter/vit_b16_ep5.yaml", "TRAINER.MMADAPTER.PREC"),
    "AttnMMAdapter": ("configs/trainers/AttnMMAdapter/vit_b16.yaml", "TRAINER.ATTN_MM_ADAPTER.PREC"),
    "MMRL": ("configs/trainers/MMRL/vit_b16.yaml", "TRAINER.MMRL.PREC"),
    "MMRLpp": ("configs/trainers/MMRLpp/vit_b16.yaml", "TRAINER.MMRLpp.PREC"),
    "CoOp": ("configs/trainers/CoOp/vit_b16_ctxv1.yaml", "TRAINER.COOP.PREC"),
    "CoCoOp": ("configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml", "TRAINER.COCOOP.PREC"),
    "MaPLe": ("configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml", "TRAINER.MAPLE.PREC"),
}


def build(name, root, out, prec, cuda=False, seed=1):
    config, key = CONFIGS[name]
    return build_toy_trainer(
        ["--root", root, "--trainer", name, "--config-file", config, "--output-dir", out, "--seed", str(seed),
         "DATASET.NAME", "ToyColours", "DATALOADER.NUM_WORKERS", "0", "USE_CUDA", str(cuda),
         "MODEL.BACKBONE.NAME", "test-tiny", "MODEL.BACKBONE.WEIGHTS", "random", key, prec], seed)[0]


def logits_of(trainer, images):
    trainer.set_model_mode("eval")
    with torch.no_grad():
        encode = getattr(trainer.model, "encode_images", None)  # AttnMMAdapter classifies image features
        inputs = encode(images) if encode is not None else images
        return trainer.model_inference(inputs).float()


def one_step(trainer, images, labels):
    """The loss of one training step on ``images``, and the learner's largest weight change."""
    batch = {"img": images, "label": labels, "domain": torch.zeros_like(labels), "index": torch.arange(len(labels))}
    prepare = getattr(trainer, "prepare_bench_batch", None)
    if prepare is not None:
        batch = prepare(batch)
    trainer.set_model_mode("train")
    trainer.num_batches, trainer.batch_idx = 10**6, 0
    names = trainer.get_model_names()
    before = {n: [p.detach().float().clone() for p in trainer._models[n].parameters() if p.requires_grad] for n in names}
    loss = float(trainer.forward_backward(batch)["loss"])
    change = max((p.detach().float() - b).abs().max().item() for n in names
                 for p, b in zip([p for p in trainer._models[n].parameters() if p.requires_grad], before[n]))
    return loss, change


def agreement(name, root, out, prec, cuda=False, batch=4):
    """``(relative logit error, relative loss error, weight change at prec)`` of ``prec`` against fp32.

    Relative logit error: max |logits_prec - logits_fp32| / max |logits_fp32| at evaluation.
    """
    device = torch.device("cuda" if cuda else "cpu")
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, 224, 224, generator=g).to(device)
    labels = torch.randint(0, 4, (batch,), generator=g).to(device)
    results = {}
    for p in ("fp32", prec):
        trainer = build(name, root, f"{out}/{p}", p, cuda)
        results[p] = (logits_of(trainer, images), *one_step(trainer, images, labels))
    (ref, ref_loss, _), (got, loss, change) = results["fp32"], results[prec]
    logit_err = ((got - ref).abs().max() / ref.abs().max()).item()
    return logit_err, abs(loss - ref_loss) / abs(ref_loss), change
