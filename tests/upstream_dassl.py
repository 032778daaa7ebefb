"""Our ``dassl`` seen through upstream Dassl.pytorch 0.6.3's public API, for project code only.

``install()`` (in a fresh interpreter, before any project module is imported) puts a view between
the project code (``train``, ``trainers``, ``datasets``, ``clip``, ``harness``) and ``dassl``:

- ``import``/``from ... import`` of a ``dassl`` module or name that ``UPSTREAM_NAMES`` does not
  list raises ImportError;
- the engine classes handed to project code (trainers, ``DataManager``, ``DatasetBase``, ``Datum``)
  are subclasses whose instances refuse to project code every attribute that ``UPSTREAM_ATTRIBUTES``
  does not list, unless project code set it or defines it in its own class (so ``getattr(x, name,
  default)`` behaves as on upstream);
- registries offer upstream's methods only (upstream's ``Registry`` has no ``__contains__``).

Our engine itself is not restricted. The lists are facts about upstream (the ``__init__`` imports
and ``__all__`` of each module, and the attributes its classes define or set); they cover the
modules CoOp-family code imports from, not the datasets and trainers of Dassl's own DA/DG/SSL
methods. A module missing here fails the check: look it up upstream, then add it.

``python tests/upstream_dassl.py WORKDIR`` installs the view, builds a miniature EuroSAT and runs
one epoch (evaluation-only trainers: one evaluation) of every trainer that ``trainers`` registers,
through ``train.run``, then probes that the view refuses project-only names. It prints one
``ok <trainer>`` / ``refused <probe>`` line each; ``tests/test_upstream_dassl.py`` runs it.
"""
import builtins
import functools
import importlib
import os
import os.path as osp
import sys
import types

PROJECT_PACKAGES = {"train", "trainers", "datasets", "clip", "harness"}

_TOOLS = {
    "mkdir_if_missing", "check_isfile", "read_json", "write_json", "set_random_seed", "download_url", "read_image",
    "collect_env_info", "listdir_nohidden", "get_most_similar_str_to_a_from_b", "check_availability",
    "tolist_if_not",
}
_TORCHTOOLS = {
    "save_checkpoint", "load_checkpoint", "resume_from_checkpoint", "open_all_layers", "open_specified_layers",
    "count_num_param", "load_pretrained_weights", "init_network_weights",
}
UPSTREAM_NAMES = {
    "dassl": {"__version__"},
    "dassl.config": {"get_cfg_default", "clean_cfg", "cfg_default"},
    "dassl.data": {"DataManager", "DatasetWrapper"},
    "dassl.data.data_manager": {"build_data_loader", "DataManager", "DatasetWrapper"},
    "dassl.data.datasets": {"DATASET_REGISTRY", "build_dataset", "Datum", "DatasetBase"},
    "dassl.data.datasets.base_dataset": {"Datum", "DatasetBase"},
    "dassl.data.datasets.build": {"DATASET_REGISTRY", "build_dataset"},
    "dassl.data.samplers": {"RandomDomainSampler", "SeqDomainSampler", "RandomClassSampler", "build_sampler"},
    "dassl.data.transforms": {"INTERPOLATION_MODES", "build_transform"},
    "dassl.data.transforms.transforms": {
        "AVAI_CHOICES", "INTERPOLATION_MODES", "Random2DTranslation", "InstanceNormalization", "Cutout",
        "GaussianNoise", "build_transform",
    },
    "dassl.engine": {"TRAINER_REGISTRY", "build_trainer", "TrainerBase", "SimpleTrainer", "TrainerX", "TrainerXU",
                     "SimpleNet"},
    "dassl.engine.build": {"TRAINER_REGISTRY", "build_trainer"},
    "dassl.engine.trainer": {"SimpleNet", "TrainerBase", "SimpleTrainer", "TrainerX", "TrainerXU"},
    "dassl.evaluation": {"EVALUATOR_REGISTRY", "build_evaluator", "EvaluatorBase", "Classification"},
    "dassl.evaluation.build": {"EVALUATOR_REGISTRY", "build_evaluator"},
    "dassl.evaluation.evaluator": {"EvaluatorBase", "Classification"},
    "dassl.metrics": {"compute_accuracy", "compute_distance_matrix", "cosine_distance", "euclidean_squared_distance"},
    "dassl.metrics.accuracy": {"compute_accuracy"},
    "dassl.metrics.distance": {"compute_distance_matrix", "cosine_distance", "euclidean_squared_distance"},
    "dassl.modeling": {"BACKBONE_REGISTRY", "HEAD_REGISTRY", "NETWORK_REGISTRY", "Backbone", "build_backbone",
                       "build_head", "build_network"},
    "dassl.optim": {"build_optimizer", "build_lr_scheduler"},
    "dassl.optim.optimizer": {"AVAI_OPTIMS", "build_optimizer"},
    "dassl.optim.lr_scheduler": {"AVAI_SCHEDS", "ConstantWarmupScheduler", "LinearWarmupScheduler",
                                 "build_lr_scheduler"},
    "dassl.optim.radam": {"RAdam", "PlainRAdam", "AdamW"},
    "dassl.utils": _TOOLS | _TORCHTOOLS | {"Logger", "setup_logger", "AverageMeter", "MetricMeter", "Registry"},
    "dassl.utils.tools": _TOOLS,
    "dassl.utils.logger": {"Logger", "setup_logger"},
    "dassl.utils.meters": {"AverageMeter", "MetricMeter"},
    "dassl.utils.registry": {"Registry"},
    "dassl.utils.torchtools": _TORCHTOOLS | {"adjust_learning_rate", "set_bn_to_eval"},
}

_TRAINER = {
    # TrainerBase
    "_models", "_optims", "_scheds", "_writer", "register_model", "get_model_names", "save_model",
    "resume_model_if_exist", "load_model", "set_model_mode", "update_lr", "detect_anomaly", "init_writer",
    "close_writer", "write_scalar", "train", "before_train", "after_train", "before_epoch", "after_epoch",
    "run_epoch", "test", "parse_batch_train", "parse_batch_test", "forward_backward", "model_inference",
    "model_zero_grad", "model_backward", "model_update", "model_backward_and_update",
    "start_epoch", "max_epoch", "epoch",
    # SimpleTrainer
    "check_cfg", "build_data_loader", "build_model", "get_current_lr", "device", "output_dir", "cfg",
    "train_loader_x", "train_loader_u", "val_loader", "test_loader", "num_classes", "num_source_domains",
    "lab2cname", "dm", "model", "optim", "sched", "evaluator", "best_result", "time_start",
    # TrainerX / TrainerXU run_epoch
    "num_batches", "batch_idx",
}
UPSTREAM_ATTRIBUTES = {
    "TrainerBase": _TRAINER, "SimpleTrainer": _TRAINER, "TrainerX": _TRAINER, "TrainerXU": _TRAINER,
    "DataManager": {
        "dataset", "train_loader_x", "train_loader_u", "val_loader", "test_loader", "num_classes",
        "num_source_domains", "lab2cname", "show_dataset_summary", "_num_classes", "_num_source_domains",
        "_lab2cname",
    },
    "DatasetBase": {
        "dataset_dir", "domains", "train_x", "train_u", "val", "test", "lab2cname", "classnames", "num_classes",
        "get_num_classes", "get_lab2cname", "check_input_domains", "is_input_domain_valid", "download_data",
        "generate_fewshot_dataset", "split_dataset_by_label", "split_dataset_by_domain", "_train_x", "_train_u",
        "_val", "_test", "_num_classes", "_lab2cname", "_classnames",
    },
    "Datum": {"impath", "label", "domain", "classname", "_impath", "_label", "_domain", "_classname"},
}
REGISTRY_METHODS = {"register", "get", "registered_names"}

_PROJECT_SET = "_upstream_view_set_by_project"  # instance attributes project code assigned


def is_project_module(name):
    return (name or "").split(".")[0] in PROJECT_PACKAGES


def _caller_is_project(depth):
    return is_project_module(sys._getframe(depth + 1).f_globals.get("__name__"))


@functools.lru_cache(maxsize=None)
def _project_class_names(cls):
    """Names that project classes in ``cls``'s MRO define (a trainer's own methods and constants)."""
    return frozenset(n for k in cls.__mro__ if is_project_module(k.__module__) for n in vars(k))


def restricted_subclass(base, allowed):
    """``base`` whose instances refuse to project code the attributes upstream's class lacks."""
    allowed = frozenset(allowed)

    def __getattribute__(self, name):
        if name in allowed or name.startswith("__") or not _caller_is_project(1):
            return base.__getattribute__(self, name)
        set_by_project = base.__getattribute__(self, "__dict__").get(_PROJECT_SET, ())
        if name in _project_class_names(type(self)) or name in set_by_project:
            return base.__getattribute__(self, name)
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}' on upstream Dassl "
                             f"(not in upstream's {base.__name__})")

    def __setattr__(self, name, value):
        if _caller_is_project(1):
            base.__getattribute__(self, "__dict__").setdefault(_PROJECT_SET, set()).add(name)
        base.__setattr__(self, name, value)

    namespace = {"__getattribute__": __getattribute__, "__setattr__": __setattr__, "__module__": base.__module__}
    if "build_data_loader" in allowed:  # the engine's own DataManager is handed to project code too
        def build_data_loader(self):
            base.build_data_loader(self)
            if type(self.dm) is _real("dassl.data", "DataManager"):
                self.dm.__class__ = _substitute(self.dm.__class__)
        namespace["build_data_loader"] = build_data_loader
    return type(base.__name__, (base,), namespace)


class RegistryView:
    """A registry with upstream's methods only (no ``in``, ``len`` or iteration)."""

    def __init__(self, registry):
        self._registry = registry

    def __getattr__(self, name):
        if name not in REGISTRY_METHODS:
            raise AttributeError(f"upstream's Registry has no attribute '{name}'")
        return getattr(self._registry, name)


def _real(module, name):
    return getattr(importlib.import_module(module), name)


_substitutes = {}


def _substitute(obj):
    """The object project code gets for ``obj``: a restricted class, a registry view, or ``obj``."""
    from dassl.utils import Registry

    if isinstance(obj, Registry):
        return _substitutes.setdefault(id(obj), RegistryView(obj))
    if isinstance(obj, type) and obj.__module__.startswith("dassl") and obj.__name__ in UPSTREAM_ATTRIBUTES:
        return _substitutes.setdefault(id(obj), restricted_subclass(obj, UPSTREAM_ATTRIBUTES[obj.__name__]))
    return obj


class ModuleView(types.ModuleType):
    """A ``dassl`` module with upstream's public names only."""

    def __init__(self, name):
        super().__init__(name)
        self._module = importlib.import_module(name)

    def __getattr__(self, attr):
        name = self.__name__
        if f"{name}.{attr}" in UPSTREAM_NAMES:
            return ModuleView(f"{name}.{attr}")
        if attr not in UPSTREAM_NAMES[name]:
            raise AttributeError(f"module '{name}' has no attribute '{attr}' on upstream Dassl")
        return _substitute(getattr(self._module, attr))


def check_import(name, fromlist):
    if name not in UPSTREAM_NAMES:
        raise ImportError(f"{name} is not an upstream Dassl module (not listed in tests/upstream_dassl.py)")
    for attr in fromlist or ():
        if attr != "*" and attr not in UPSTREAM_NAMES[name] and f"{name}.{attr}" not in UPSTREAM_NAMES:
            raise ImportError(f"cannot import name '{attr}' from '{name}': not in upstream Dassl's public API")


def install():
    """Route every ``dassl`` import made by project code through the upstream view."""
    real_import = builtins.__import__

    def view_import(name, globals=None, locals=None, fromlist=(), level=0):
        module = real_import(name, globals, locals, fromlist, level)
        importer = (globals or {}).get("__name__", "")
        if level or not is_project_module(importer) or name.split(".")[0] != "dassl":
            return module
        check_import(name, fromlist)
        return ModuleView(name if fromlist else "dassl")

    builtins.__import__ = view_import


# ---------------------------------------------------------------------------------------------
# The run: every registered trainer through train.run, then the probes
# ---------------------------------------------------------------------------------------------

# Options that steer a trainer onto the code path that needs upstream care (here: AttnMMAdapter's
# training-feature cache, which needs the train transform, and its early stopping).
EXTRA_OPTS = {
    "AttnMMAdapter": ["TRAINER.ATTN_MM_ADAPTER.TRAIN_AUG", "False", "TRAINER.ATTN_MM_ADAPTER.PATIENCE", "1",
                      "TEST.FINAL_MODEL", "best_val"],
}


def project_trainers():
    """``{name: class}`` of the trainers registered by the ``trainers`` package."""
    import trainers  # noqa: F401  (registers them)
    from dassl.engine import TRAINER_REGISTRY

    classes = {n: TRAINER_REGISTRY.get(n) for n in TRAINER_REGISTRY.registered_names()}
    return {n: c for n, c in classes.items() if is_project_module(c.__module__)}


def trains(cls):
    """Evaluation-only trainers (zero-shot) define no ``forward_backward``."""
    return any("forward_backward" in vars(k) for k in cls.__mro__ if is_project_module(k.__module__))


def fp32_opts():
    from dassl.config import get_cfg_default
    from trainers.config import extend_cfg

    cfg = get_cfg_default()
    extend_cfg(cfg)
    opts = []
    for key, node in cfg.TRAINER.items():
        if hasattr(node, "keys") and "PREC" in node:
            opts += [f"TRAINER.{key}.PREC", "fp32"]
    return opts


def run_all(workdir):
    repo = osp.dirname(osp.dirname(osp.abspath(__file__)))
    root = osp.join(workdir, "data")
    from datasets import mini

    mini.build(root, ["EuroSAT"], verbose=False)
    import train

    common = ["DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "base", "DATALOADER.NUM_WORKERS", "0",
              "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "DATALOADER.TEST.BATCH_SIZE", "16", "MODEL.BACKBONE.NAME",
              "test-tiny", "MODEL.BACKBONE.WEIGHTS", "random", "OPTIM.MAX_EPOCH", "1"] + fp32_opts()
    built = {}
    for name, cls in sorted(project_trainers().items()):
        out = osp.join(workdir, "out", name)
        argv = ["--root", root, "--trainer", name, "--seed", "1", "--output-dir", out,
                "--dataset-config-file", osp.join(repo, "configs", "datasets", "eurosat.yaml")]
        config_dir = osp.join(repo, "configs", "trainers", name)
        if osp.isdir(config_dir):
            argv += ["--config-file", osp.join(config_dir, sorted(os.listdir(config_dir))[0])]
        if not trains(cls):
            argv.append("--eval-only")
        built[name] = train.run(argv + common + EXTRA_OPTS.get(name, []))
        assert osp.isfile(osp.join(out, "finished.json")), name
        print(f"ok {name}", flush=True)
    probe(built)


def probe(built):
    """Project-only names must be refused: imports, engine attributes, registry membership."""
    g = {"__name__": "trainers.probe"}
    exec("def dm_attr(t):\n    return t.dm.tfm_train\ndef engine_attr(t):\n    return t.resume_state\n"
         "def member():\n    from dassl.engine import TRAINER_REGISTRY\n    return 'MMRL' in TRAINER_REGISTRY\n", g)
    checks = {
        "import atomic_write": lambda: exec("from dassl.utils import atomic_write", {"__name__": "datasets.x"}),
        "import report_train_step": lambda: exec("from dassl.engine.trainer import report_train_step",
                                                 {"__name__": "trainers.x"}),
        "import TRUST_ENV_VAR": lambda: exec("from dassl.utils import TRUST_ENV_VAR", {"__name__": "train"}),
        "dm.tfm_train": lambda: g["dm_attr"](next(iter(built.values()))),
        "trainer.resume_state": lambda: g["engine_attr"](next(iter(built.values()))),
        "name in registry": g["member"],
    }
    for label, check in checks.items():
        try:
            check()
        except (ImportError, AttributeError, TypeError) as e:
            print(f"refused {label}: {type(e).__name__}: {e}", flush=True)
        else:
            print(f"ALLOWED {label}", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
    install()
    run_all(sys.argv[1])
