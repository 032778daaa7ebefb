"""Loading checkpoints and pickles without running code from the file.

Unpickling can call any function a file names, so a file is only fully unpickled when the user
trusts it (``--trust-checkpoint`` or ``DASSL_TRUST_CHECKPOINT=1``). Otherwise:

- ``torch.load(weights_only=True)`` reads everything this project writes;
- files written by upstream Dassl (whose checkpoints pickle a warmup scheduler object, and whose
  few-shot caches pickle ``Datum`` objects) are read by a restricted unpickler: tensors and plain
  containers are rebuilt, and every other object becomes an ``InertObject`` that only records
  its class name and state. Nothing from the file is imported or called. Weights and ``Datum``
  fields read this way are exact; optimiser and scheduler objects are not usable, so resuming
  training from such a file still needs trust.

No global state is patched: the latin-1 fallback for Python-2 era pickles is a per-call argument.
"""
import collections
import os
import os.path as osp
import pickle
import types

__all__ = [
    "TRUST_ENV_VAR", "CheckpointError", "InertObject", "trusted", "load_checkpoint_file",
    "restricted_pickle_load", "find_inert",
]

TRUST_ENV_VAR = "DASSL_TRUST_CHECKPOINT"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, or that needs trust; the message names the file and the fix."""


def trusted():
    """True when the user allowed full unpickling for this process (``--trust-checkpoint``)."""
    return os.environ.get(TRUST_ENV_VAR, "") not in ("", "0")


class InertObject:
    """Stands in for a pickled object whose class is not imported: keeps its name, arguments and state."""

    def __init__(self, qualname, args=(), state=None):
        self.qualname = qualname
        self.args = args
        self.state = state

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"<inert {self.qualname}>"


def _inert_class(qualname):
    """A class that, when the unpickler calls or instantiates it, builds an ``InertObject``."""

    def new(cls, *args, **kwargs):
        return InertObject(qualname, args)

    return type("Inert", (InertObject,), {"__new__": new, "__init__": lambda self, *a, **k: None})


def _torch_rebuilders():
    import torch
    import torch._utils as tu

    names = ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter", "_rebuild_parameter_with_state",
             "_rebuild_device_tensor_from_numpy", "_rebuild_meta_tensor_no_storage")
    allowed = {("torch._utils", n): getattr(tu, n) for n in names if hasattr(tu, n)}
    allowed[("torch", "Size")] = torch.Size
    allowed[("torch", "device")] = torch.device
    for dtype_name in ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8",
                       "uint8", "bool", "complex64"):
        allowed[("torch", dtype_name)] = getattr(torch, dtype_name)
    return allowed


# Plain data types a restricted pickle may construct.
_PLAIN_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): bytearray,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """``find_class`` never imports: plain types and torch's tensor rebuilders, else an inert stand-in."""

    def find_class(self, module, name):
        key = (module, name)
        if key in _PLAIN_GLOBALS:
            return _PLAIN_GLOBALS[key]
        rebuilders = _torch_rebuilders() if module.startswith("torch") else {}
        if key in rebuilders:
            return rebuilders[key]
        return _inert_class(f"{module}.{name}")


# torch.load takes a "pickle module"; this one only exposes the restricted unpickler.
_restricted_pickle_module = types.SimpleNamespace(
    __name__="restricted_pickle", Unpickler=_RestrictedUnpickler,
    load=lambda f, **kw: _RestrictedUnpickler(f, **kw).load(), UnpicklingError=pickle.UnpicklingError,
)


def restricted_pickle_load(path):
    """Unpickle a plain pickle file (e.g. upstream's ``split_fewshot/*.pkl``) without running code."""
    with open(path, "rb") as f:
        try:
            return _RestrictedUnpickler(f).load()
        except UnicodeDecodeError:
            f.seek(0)
            return _RestrictedUnpickler(f, encoding="latin1").load()


def find_inert(obj, _depth=0):
    """Qualified names of the inert stand-ins anywhere inside ``obj`` (dicts, lists, tuples)."""
    if isinstance(obj, InertObject):
        return {obj.qualname}
    if _depth > 6:
        return set()
    values = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()
    found = set()
    for value in values:
        found |= find_inert(value, _depth + 1)
    return found


def _torch_load(fpath, map_location, **kwargs):
    import torch
    try:
        return torch.load(fpath, map_location=map_location, **kwargs)
    except UnicodeDecodeError:  # pickles written by Python 2
        return torch.load(fpath, map_location=map_location, encoding="latin1", **kwargs)


def _unreadable(fpath, error):
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    detail = f"{type(error).__name__}: {message}" if message else type(error).__name__
    if osp.getsize(fpath) == 0:
        detail = "the file is empty"
    return CheckpointError(f'cannot read checkpoint "{fpath}" ({detail}): the file is damaged or not a '
                           "PyTorch checkpoint; use another file (or rerun the run that wrote it)")


def load_checkpoint_file(fpath, trust=None, map_location=None):
    """Load a checkpoint file; see the module docstring for what runs when.

    Returns the loaded object. Objects read by the restricted unpickler are ``InertObject``s
    (``find_inert`` lists them). Raises ``FileNotFoundError`` for a missing file and
    ``CheckpointError`` (one line naming the file) for a damaged one.
    """
    import torch

    if not osp.exists(fpath):
        raise FileNotFoundError(f'File is not found at "{fpath}"')
    if trust is None:
        trust = trusted()
    if map_location is None:
        map_location = None if torch.cuda.is_available() else "cpu"
    try:
        return torch.load(fpath, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, UnicodeDecodeError):
        pass  # pickled Python objects, or Python-2 strings: handled below
    except Exception as error:
        raise _unreadable(fpath, error) from None
    try:
        if trust:
            return _torch_load(fpath, map_location, weights_only=False)
        return _torch_load(fpath, map_location, weights_only=False, pickle_module=_restricted_pickle_module)
    except Exception as error:
        raise _unreadable(fpath, error) from None
