"""``load_model`` for adapted CLIP trainers: class-dependent buffers are dropped, the rest loaded.

Used for eval-only runs on another class set (base -> new, ImageNet -> other datasets), and to read
checkpoints written by the methods' reference code: Dassl-style folders with the same folder names
and key layout (``load_adapted_model``), or a reference's own files (``find_reference_file``,
``load_reference_weights``). Files are read by ``harness.safe_load`` whichever Dassl engine runs, so
nothing in a checkpoint is executed without ``--trust-checkpoint``.
"""
import os.path as osp

import torch

from dassl.utils import load_pretrained_weights
from harness.safe_load import CheckpointError, load_checkpoint_file

__all__ = [
    "load_adapted_model", "refuse_marked_checkpoints", "load_init_weights", "find_reference_file",
    "load_reference_weights",
]


def _find_model_file(directory, folder_names, model_file):
    tried = []
    for folder in folder_names:
        path = osp.join(directory, folder, model_file)
        if osp.exists(path):
            return path, folder
        tried.append(path)
    raise FileNotFoundError(f'Model not found at "{tried[0]}"' + (f" (also tried {tried[1:]})" if tried[1:] else ""))


def load_adapted_model(trainer, directory, epoch=None, drop_keys=(), folder_names=None, rename=None, keep=None,
                       check=None):
    """Load ``directory/<name>/model.pth.tar-<epoch>`` (or ``model-best.pth.tar``) into each registered model.

    ``drop_keys``: state-dict keys that depend on the class list (deleted before loading).
    ``folder_names``: per registered name, the folder names to look for (ours first, then the
    reference code's older names). ``rename``: optional function mapping a loaded key to ours.
    ``keep``: optional predicate on a (renamed) key; keys it rejects are dropped, e.g. the frozen
    backbone stored in a reference code's whole-model checkpoint.
    ``check``: optional function ``(name, state_dict, path)`` run on the kept tensors before loading,
    to reject a checkpoint of another configuration with a message that says which and why.
    Every key we keep must load: unexpected or missing trainable tensors raise an error.
    """
    if not directory:
        print("Note that load_model() is skipped as no pretrained model is given "
              "(ignore this if it's done on purpose)")
        return
    model_file = "model-best.pth.tar" if epoch is None else f"model.pth.tar-{epoch}"
    for name in trainer.get_model_names():
        folders = (folder_names or {}).get(name, [name])
        path, _ = _find_model_file(directory, folders, model_file)
        checkpoint = load_checkpoint_file(path)
        state_dict = dict(checkpoint["state_dict"])
        for key in drop_keys:
            state_dict.pop(key, None)
        if rename is not None:
            state_dict = {rename(k): v for k, v in state_dict.items()}
        if keep is not None:
            state_dict = {k: v for k, v in state_dict.items() if keep(k)}
        model = trainer._models[name]
        if check is not None:
            check(name, state_dict, path)
        print(f'Loading weights to {name} from "{path}" (epoch = {checkpoint["epoch"]})')
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
        trainable = {k for k, p in model.named_parameters() if p.requires_grad}
        missing_trainable = sorted(k for k in missing if k in trainable)
        if unexpected or missing_trainable:
            raise RuntimeError(
                f'Checkpoint "{path}" does not match the model "{name}": '
                f"missing trainable tensors {missing_trainable[:5]}, unexpected keys {sorted(unexpected)[:5]}. "
                "Was it trained with a different config (e.g. ADAPTER_START/END or the backbone)?"
            )


def refuse_marked_checkpoints(trainer_name, markers):
    """A ``check`` for ``load_adapted_model`` where several trainers save under one folder name.

    ``markers``: {trainer name: a key prefix only that trainer's checkpoints hold}. A checkpoint
    marked as another trainer's is refused with one error naming the trainer to use instead.
    """
    def check(name, state_dict, path):
        for other, marker in markers.items():
            if other != trainer_name and any(k.startswith(marker) for k in state_dict):
                raise RuntimeError(f'"{path}" is a checkpoint of trainer {other} (keys {marker}*), not {trainer_name}: '
                                   f"evaluate it with --trainer {other}, or give a {trainer_name} output folder")
    return check


def find_reference_file(trainer, path, file_names, epoch=None):
    """The reference-code file that ``--model-dir path`` names, or None for a Dassl-style folder.

    ``path`` may be the file itself, or a folder without this trainer's model folders that holds one
    of ``file_names`` (the first found). Such files have no epoch numbers, so ``--load-epoch`` is
    refused for them.
    """
    if not path:
        return None
    if osp.isfile(path):
        found = path
    elif any(osp.isdir(osp.join(path, name)) for name in trainer.get_model_names()):
        return None
    else:
        found = next((osp.join(path, f) for f in file_names if osp.isfile(osp.join(path, f))), None)
        if found is None:
            return None
    if epoch is not None:
        raise CheckpointError(f'--load-epoch {epoch} does not apply to "{found}" (a reference file has no epoch '
                              "numbers): drop --load-epoch")
    return found


def load_reference_weights(trainer, path, name, prefix):
    """Load the ``prefix``-named tensors of a reference file into the registered model ``name``.

    The file is a plain state dict or a checkpoint whose ``state_dict`` holds the reference's whole
    model (its frozen backbone included): only keys starting with ``prefix`` are read, with the
    prefix removed (a file without such keys is read as the module's own state dict). Every tensor
    of the module must be there with its shape.
    """
    checkpoint = load_checkpoint_file(path)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f'"{path}" is not a state dict nor a checkpoint with a "state_dict"')
    picked = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)} or state
    model = trainer._models[name]
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(getattr(v, "shape", ())) for k, v in picked.items()}
    if found != expected:
        missing = sorted(set(expected) - set(found))
        unexpected = sorted(set(found) - set(expected))
        shapes = sorted(k for k in set(found) & set(expected) if found[k] != expected[k])
        raise CheckpointError(
            f'"{path}" does not match the model "{name}" (missing {missing[:3]}, unexpected {unexpected[:3]}, '
            f"other shapes {shapes[:3]}): was it trained with other layer sizes or another backbone?")
    model.load_state_dict(picked)
    epoch = checkpoint.get("epoch", "?")
    print(f'Loading weights to {name} from "{path}" (reference file, epoch = {epoch})')


def load_init_weights(module, path, keep_buffers=()):
    """``MODEL.INIT_WEIGHTS``: Dassl's name-and-shape matching load into ``module``, except that the
    buffers named in ``keep_buffers`` (this run's class-dependent prompts) keep their values even
    when a checkpoint of another class list happens to have the same shapes."""
    kept = {name: getattr(module, name).clone() for name in keep_buffers}
    load_pretrained_weights(module, path)
    with torch.no_grad():
        for name, value in kept.items():
            getattr(module, name).copy_(value)
