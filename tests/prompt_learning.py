"""Helpers for the CoOp and CoCoOp tests: a tiny frozen CLIP, images, trainer command lines, an
independent text-tower oracle and reference-layout checkpoints."""
import contextlib
import io
import os
import os.path as osp

import pytest
import torch

import clip
import train
from helpers import build_toy_trainer, script_runs

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY = ["MODEL.BACKBONE.NAME", "test-tiny", "MODEL.BACKBONE.WEIGHTS", "random"]


@pytest.fixture(autouse=True)
def no_env_report(monkeypatch):
    """train.run's environment report shells out to pip (seconds); not under test where this is imported."""
    monkeypatch.setattr(train, "collect_env_info", lambda: "(skipped in tests)")


def tiny_clip(seed=0):
    """test-tiny CLIP (text width 32, embed dim 32) with random weights, frozen, fp32."""
    torch.manual_seed(seed)
    with contextlib.redirect_stdout(io.StringIO()):
        model = clip.load("test-tiny", weights="random")[0]
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def images(n=2, seed=1):
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


def trainer_args(trainer, cfg, root, out, *opts, dataset=None, flags=()):
    """train.py arguments for ``trainer`` with ``configs/trainers/<trainer>/<cfg>.yaml`` on test-tiny, fp32.

    ``dataset``: a dataset config stem (e.g. "eurosat"); default the toy dataset of tests/toy.py.
    """
    args = ["--root", str(root), "--trainer", trainer, "--output-dir", str(out), "--seed", "1",
            "--config-file", osp.join(REPO, "configs", "trainers", trainer, f"{cfg}.yaml"), *flags]
    if dataset:
        args += ["--dataset-config-file", osp.join(REPO, "configs", "datasets", f"{dataset}.yaml")]
    else:
        args += ["DATASET.NAME", "ToyColours"]
    node = {"CoOp": "COOP", "CoCoOp": "COCOOP"}.get(trainer)
    prec = [f"TRAINER.{node}.PREC", "fp32"] if node else []
    args += ["DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
             "DATALOADER.TEST.BATCH_SIZE", "8", *prec, *TINY, *opts]
    return [str(a) for a in args]


def build(args, seed=1):
    """The trainer for ``args`` (not trained); returns (trainer, its console output)."""
    return build_toy_trainer(args, seed)


def oracle_text_features(clip_model, prompts, eot_index):
    """CLIP's text tower written out on full-length prompt embeddings [N, 77, d]: positions,
    open_clip's own transformer with its 77 x 77 causal mask, ln_final, the EOT row, projection."""
    x = prompts + clip_model.positional_embedding
    x = clip_model.transformer(x, attn_mask=clip_model.attn_mask)
    x = clip_model.ln_final(x)
    return x[torch.arange(x.shape[0]), eot_index] @ clip_model.text_projection


def normalize(x):
    return x / x.norm(dim=-1, keepdim=True)


def write_checkpoint(directory, state_dict, epoch, folder="prompt_learner"):
    """A checkpoint file in Dassl's layout: ``<directory>/<folder>/model.pth.tar-<epoch>``."""
    os.makedirs(osp.join(directory, folder), exist_ok=True)
    path = osp.join(directory, folder, f"model.pth.tar-{epoch}")
    torch.save({"state_dict": state_dict, "epoch": epoch, "optimizer": None, "scheduler": None,
                "val_result": None}, path)
    return path


def lr_per_epoch(config_file):
    """The learning rate of each epoch that ``config_file``'s optimiser and scheduler give."""
    from dassl.config import get_cfg_default
    from dassl.optim import build_lr_scheduler, build_optimizer
    from trainers.config import extend_cfg

    cfg = get_cfg_default()
    extend_cfg(cfg)
    cfg.merge_from_file(config_file)
    optim = build_optimizer(torch.nn.Linear(1, 1), cfg.OPTIM)
    sched = build_lr_scheduler(optim, cfg.OPTIM)
    rates = []
    for _ in range(cfg.OPTIM.MAX_EPOCH):
        rates.append(optim.param_groups[0]["lr"])
        optim.step()  # no gradients: changes nothing, but keeps the step order torch expects
        sched.step()
    return rates


def count_calls(module):
    """The input shapes of every call of ``module`` from now on."""
    calls = []
    module.register_forward_hook(lambda m, inputs, output: calls.append(tuple(inputs[0].shape)))
    return calls


def write_finished_training_log(directory):
    """A training folder as older code (or the reference) leaves it: a log with the final result.
    The test-step scripts accept it as a finished training run."""
    os.makedirs(directory, exist_ok=True)
    with open(osp.join(directory, "log.txt"), "w") as f:
        f.write("epoch [1/1] batch [1/1] loss 1.0\nFinish training\n=> result\n* accuracy: 50.0%\n")


def queued_command(script, *args, output):
    """The train.py argument list and its options that ``scripts/<script>`` runs for ``args`` (DRY_RUN)."""
    env = dict(os.environ, DATA="data_root", OUTPUT=str(output), SHOTS="16", OPTS="")
    env.pop("GPU", None)
    (argv,) = script_runs(script, *args, env=env)
    options, rest = {}, list(argv)
    while rest:  # "--flag value" and "KEY VALUE" pairs; --eval-only and --no-train stand alone
        if rest[0] in ("--eval-only", "--no-train"):
            rest = rest[1:]
            continue
        options[rest[0]], rest = rest[1], rest[2:]
    return argv, options
