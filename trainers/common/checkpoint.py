"""``load_model`` for adapted CLIP trainers: class-dependent buffers are dropped, the rest loaded.

Used for eval-only runs on another class set (base -> new, ImageNet -> other datasets), and to read
checkpoints written by the methods' reference code (same folder names and key layout).
"""
import os.path as osp

from dassl.utils import load_checkpoint

__all__ = ["load_adapted_model"]


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
        checkpoint = load_checkpoint(path)
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
