"""Cheap checks of a run's input files, made before anything is built or written.

Every problem is a ``ConfigError`` whose message is one line naming the file, key or value and the
fix. Only the standard library is used: a file's kind is told from its first and last bytes, not
by loading it (``harness.safe_load`` still checks every checkpoint when it is read).
"""
import os
import os.path as osp
import re
import zipfile

__all__ = ["ConfigError", "torch_file_problem", "check_torch_file", "check_model_dir", "check_resume_dir"]


class ConfigError(ValueError):
    """A user mistake in the command line, config or input files (a bad value), reported in one line."""


def _looks_like_text(head):
    if not head or b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def torch_file_problem(path):
    """Why ``path`` cannot be a file written by ``torch.save`` or ``torch.jit.save``; None if it can.

    Both write a zip archive holding a ``data.pkl``; older ``torch.save`` files are a pickle
    (first byte 0x80). A zip without its end record is truncated.
    """
    try:
        size = osp.getsize(path)
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as error:
        return f"cannot be read ({error.strerror or error})"
    if size == 0:
        return "is empty"
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(path):
            return f"is truncated ({size:,} bytes; an interrupted download or copy?)"
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as error:
            return f"is a damaged zip archive ({error})"
        if not any(name.endswith("data.pkl") for name in names):
            return "is a zip archive, but not one written by PyTorch"
        return None
    if head.startswith(b"\x80"):
        return None
    if _looks_like_text(head):
        first = head.decode("utf-8").strip().splitlines()[0][:40] if head.strip() else ""
        return f"is a text file (starting {first!r}), not PyTorch weights"
    return "is not a PyTorch file (neither a torch.save zip archive nor a pickle)"


def check_torch_file(path, what, fix):
    """Raise ``ConfigError`` unless ``path`` exists and looks like a PyTorch file.

    ``what`` names the setting (e.g. ``MODEL.BACKBONE.WEIGHTS``), ``fix`` says what to do instead.
    """
    if not osp.exists(path):
        raise ConfigError(f'{what}: file not found: "{path}": {fix}')
    if osp.isdir(path):
        raise ConfigError(f'{what}: "{path}" is a folder, not a file: {fix}')
    problem = torch_file_problem(path)
    if problem:
        raise ConfigError(f'{what}: "{path}" {problem}: {fix}')


_EPOCH_FILE = re.compile(r"^model\.pth\.tar-(\d+)$")
_WEIGHT_SUFFIXES = (".pt", ".pth", ".pth.tar", ".tar", ".bin")


def _model_files(model_dir):
    """``{subfolder: [model file names]}`` of a training run's output folder."""
    found = {}
    for entry in sorted(os.listdir(model_dir)):
        folder = osp.join(model_dir, entry)
        if entry.startswith(".") or not osp.isdir(folder):
            continue
        names = sorted(n for n in os.listdir(folder) if _EPOCH_FILE.match(n) or n == "model-best.pth.tar")
        if names:
            found[entry] = names
    return found


def check_model_dir(model_dir, load_epoch, needs_weights=True):
    """``--model-dir`` of an evaluation: a folder holding ``<name>/model.pth.tar-<epoch>`` (or
    ``model-best.pth.tar`` without ``--load-epoch``) in readable form. A trainer may also read a
    reference code's own files (e.g. the attention adapter's ``adapter_state_dict.pt``, in the folder
    or named directly): those only have to look like PyTorch files."""
    fix = "rerun the training that wrote it (or use another epoch)"
    if osp.isfile(model_dir):
        check_torch_file(model_dir, "--model-dir", fix)
        return
    if not osp.isdir(model_dir):
        raise ConfigError(f'--model-dir "{model_dir}" not found: pass the output folder of the training run')
    found = _model_files(model_dir)
    if not found:
        others = sorted(n for n in os.listdir(model_dir) if n.endswith(_WEIGHT_SUFFIXES) and not n.startswith("."))
        for name in others:
            check_torch_file(osp.join(model_dir, name), "--model-dir", fix)
        if needs_weights and not others:
            raise ConfigError(f'--model-dir "{model_dir}" holds no checkpoint (no <model>/model.pth.tar-N): '
                              "train first, or pass the output folder of a finished training run")
        return
    wanted = "model-best.pth.tar" if load_epoch is None else f"model.pth.tar-{load_epoch}"
    matches = [osp.join(model_dir, sub, wanted) for sub, names in found.items() if wanted in names]
    if not matches:
        epochs = sorted({int(_EPOCH_FILE.match(n).group(1)) for names in found.values() for n in names
                         if _EPOCH_FILE.match(n)})
        best = any("model-best.pth.tar" in names for names in found.values())
        options = [f"--load-epoch {e}" for e in epochs] + (["no --load-epoch (model-best.pth.tar)"] if best else [])
        raise ConfigError(f'--model-dir "{model_dir}" has no {wanted}: use {" or ".join(options)}')
    for path in matches:
        check_torch_file(path, "--model-dir", fix)


def check_resume_dir(directory, resume_state_file):
    """A folder a training run continues from: its per-epoch resume state and ``checkpoint`` pointers."""
    if not osp.isdir(directory):
        return
    state = osp.join(directory, resume_state_file)
    if osp.exists(state):  # the engine resumes from it and ignores the pointers
        check_torch_file(state, "resume state", "delete it to resume from the last checkpoint, or rerun with "
                                                "--discard-old-run to start anew")
        return
    for entry in sorted(os.listdir(directory)):
        pointer = osp.join(directory, entry, "checkpoint")
        if not osp.isfile(pointer):
            continue
        with open(pointer, encoding="utf-8", errors="replace") as f:
            name = f.readline().strip()
        if not name:
            raise ConfigError(f'the checkpoint pointer "{pointer}" is empty: write the newest file name '
                              f"(e.g. model.pth.tar-5) into it, or rerun with --discard-old-run to start anew")
        target = osp.join(directory, entry, name)
        check_torch_file(target, f'the checkpoint named in "{pointer}"',
                         "point it at an intact model.pth.tar-N, or rerun with --discard-old-run to start anew")
