"""The benchmark protocols, each trainer's settings for them, and the output layout: defined once here.

Used by ``scripts/benchmark.py`` (which expands a protocol into its runs), by the per-method shell
scripts (through ``python -m harness.protocols command ...``, which prints a step's ``train.py``
command line) and, for the layout, by the tables of ``parse_test_res.py --table`` (``harness/tables/``).
Standard library only, so the shell scripts can call it cheaply.

Protocols (``DATASET.NUM_SHOTS`` K, seeds 1 2 3 by convention):

- ``base2new``: per dataset and seed, train on the base classes with K = 16 shots (its final test is
  the base accuracy), then an eval-only run on the new classes with the trained weights.
- ``xd``: per seed, train on ImageNet (all classes, 16 shots), then eval-only runs on the 10 other
  datasets (cross-dataset transfer) and the 4 ImageNet variants (domain generalisation).
- ``fewshot``: per dataset, K in 1 2 4 8 16 and seed, train on all classes with K shots; the
  training run's final test (all classes, full test set) is the result.

Zero-shot trainers (``eval_only``) have no training runs: each protocol becomes evaluations with
the protocol's classes (base and new, the transfer targets, all classes), one seed (the first one
asked for), since nothing in them depends on the seed.

Output layout, below the output root (``OUTPUT``):

=========================  ===========================================================================
base2new training          ``base2new/train_base/<dataset>/shots_<K>/<Trainer>/<cfg>/seed<S>``
base2new new-class test    ``base2new/test_new/<dataset>/shots_<K>/<Trainer>/<cfg>/seed<S>``
base2new base-class test   ``base2new/test_base/...`` (eval-only trainers: zero-shot CLIP)
xd ImageNet training       ``imagenet/<Trainer>/<cfg>_<K>shots/seed<S>``
xd / DG evaluations        ``evaluation/<Trainer>/<cfg>_<K>shots/<dataset>/seed<S>``
few-shot                   ``few_shot/<dataset>/shots_<K>/<Trainer>/<cfg>/seed<S>`` (K = 0: zero-shot)
zero-shot script           ``zeroshot/<dataset>/<Trainer>/<cfg>_<subsample>`` (``scripts/zsclip/zeroshot.sh``)
=========================  ===========================================================================

Each is one pattern in ``LAYOUTS``, which writes the paths (``base2new_dir`` ...) and reads them back
(``place_of``), with the reference repositories' layouts named in ``REFERENCE_LAYOUTS`` (MMRL's
cross-dataset runs inside the base2new tree, MMA's base2new tree without the ``<cfg>`` level).

Adding a trainer is one entry in ``METHODS``.
"""
import argparse
import functools
import glob
import os.path as osp
import re
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from harness.run import RunError, run_state

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

B2N_DATASETS = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
                "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101")
SOURCE_DATASET = "imagenet"
XD_TARGETS = B2N_DATASETS[1:]
DG_TARGETS = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")
FEWSHOT_SHOTS = (1, 2, 4, 8, 16)
DEFAULT_SHOTS = 16
DEFAULT_SEEDS = (1, 2, 3)
PROTOCOLS = ("base2new", "xd", "fewshot")


# ---------------------------------------------------------------------------------------------
# Each trainer's settings
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """A trainer's configs and extra ``KEY VALUE`` options for one protocol.

    ``cfg``: the config stem (``configs/trainers/<dir>/<cfg>.yaml``); ``imagenet``: the stem for
    ImageNet when it differs; ``by_shots``: stems per shot count (few-shot, not ImageNet);
    ``opts``: options of every run of the protocol; ``test_opts``: added for its eval-only runs.
    """

    cfg: str
    imagenet: str | None = None
    by_shots: dict = field(default_factory=dict)
    opts: tuple = ()
    test_opts: tuple = ()

    def cfg_for(self, dataset, shots=None):
        if dataset == SOURCE_DATASET and self.imagenet:
            return self.imagenet
        return self.by_shots.get(shots, self.cfg)

    def all_cfgs(self):
        return {self.cfg, *([self.imagenet] if self.imagenet else []), *self.by_shots.values()}

    def describe(self):
        """``vit_b16 (imagenet: vit_b16_imagenet)``: what the protocol's table header says."""
        parts = []
        for stem in sorted(set(self.by_shots.values()) - {self.cfg}, key=lambda s: min(
                k for k, v in self.by_shots.items() if v == s)):
            counts = sorted(k for k, v in self.by_shots.items() if v == stem)
            parts.append(f"{', '.join(map(str, counts))} shot{'s' if counts != [1] else ''}: {stem}")
        if self.imagenet and self.imagenet != self.cfg:
            parts.append(f"imagenet: {self.imagenet}")
        return self.cfg + (f" ({'; '.join(parts)})" if parts else "")


@dataclass(frozen=True)
class Method:
    """One trainer in the benchmark: its protocol settings and where its configs live."""

    base2new: Step
    xd: Step
    fewshot: Step
    eval_only: bool = False  # zero-shot: evaluation runs only
    config_dir: str | None = None  # configs/trainers/<config_dir>/ (default: the trainer name)
    published: str | None = None  # its name in results/published.json (for --compare)

    def step(self, protocol):
        return {"base2new": self.base2new, "xd": self.xd, "fewshot": self.fewshot}[protocol]


def _same(cfg, **kwargs):
    """One config (and options) for all three protocols."""
    return dict(base2new=Step(cfg, **kwargs), xd=Step(cfg, **kwargs), fewshot=Step(cfg, **kwargs))


# CoOp's few-shot protocol (coop.md §7.2), which CLIP-Adapter follows with configs of the same names:
# 1 shot 50 epochs, 2 and 4 shots 100, 8 and 16 shots 200; ImageNet 50 at every shot count.
_COOP_FEWSHOT = Step("vit_b16", imagenet="vit_b16_ep50",
                     by_shots={1: "vit_b16_ep50", 2: "vit_b16_ep100", 4: "vit_b16_ep100", 8: "vit_b16", 16: "vit_b16"})


# Methods without a few-shot protocol of their own (MMA, the attention adapter, CoCoOp, MaPLe) use
# their base-to-novel config on all classes; their ImageNet config where they have one.
METHODS = {
    "ZeroshotCLIP": Method(**_same("vit_b16"), eval_only=True, published="CLIP"),
    "ZeroshotCLIP2": Method(**_same("vit_b16"), eval_only=True, config_dir="ZeroshotCLIP", published="CLIP"),
    "CLIP_Adapter": Method(
        base2new=Step("vit_b16", imagenet="vit_b16_ep50"),
        xd=Step("vit_b16_ep50"),
        fewshot=_COOP_FEWSHOT,
        published="CLIP-Adapter"),
    "MultiModalAdapter": Method(
        base2new=Step("vit_b16_ep5", imagenet="vit_b16_ep5_imnet"),
        xd=Step("vit_b16_xd"),
        fewshot=Step("vit_b16_ep5", imagenet="vit_b16_ep5_imnet"),
        published="MMA"),
    "AttnMMAdapter": Method(**_same("vit_b16_paper"), published="AttnMMAdapter"),
    "MMRL": Method(
        base2new=Step("vit_b16", imagenet="vit_b16_imagenet", opts=("TASK", "B2N")),
        # λ 0.2 on ImageNet and d_r 512 on every target: table entries of the cross-dataset YAML.
        xd=Step("vit_b16_cross_datasets", opts=("TASK", "CD")),
        fewshot=Step("vit_b16_few_shot", imagenet="vit_b16_imagenet", opts=("TASK", "FS")),
        published="MMRL"),
    "MMRLpp": Method(
        base2new=Step("vit_b16", imagenet="vit_b16_imagenet", opts=("TASK", "B2N")),
        xd=Step("vit_b16_cross_datasets", opts=("TASK", "CD")),
        fewshot=Step("vit_b16_few_shot", imagenet="vit_b16_imagenet", opts=("TASK", "FS")),
        published="MMRLpp"),  # (not "MMRL++": --compare ignores punctuation, that would be MMRL)
    "CoOp": Method(
        base2new=Step("vit_b16_ctxv1", imagenet="vit_b16_ep50_ctxv1"),
        xd=Step("vit_b16_ep50_ctxv1"),
        fewshot=_COOP_FEWSHOT,
        published="CoOp"),
    "CoCoOp": Method(**_same("vit_b16_c4_ep10_batch1_ctxv1"), published="CoCoOp"),
    "MaPLe": Method(
        base2new=Step("vit_b16_c2_ep5_batch4_2ctx"),
        xd=Step("vit_b16_c2_ep5_batch4_2ctx_cross_datasets"),
        fewshot=Step("vit_b16_c2_ep5_batch4_2ctx"),
        published="MaPLe"),
}


def method(trainer):
    """The table entry of a trainer, or a ValueError listing the known ones."""
    if trainer not in METHODS:
        raise ValueError(f'unknown trainer "{trainer}" for the benchmark; known: {", ".join(METHODS)} '
                         "(add it to METHODS in harness/protocols.py)")
    return METHODS[trainer]


def config_file(trainer, cfg):
    entry = METHODS.get(trainer)
    folder = (entry.config_dir if entry else None) or trainer
    return osp.join(REPO, "configs", "trainers", folder, f"{cfg}.yaml")


def dataset_config_file(dataset):
    return osp.join(REPO, "configs", "datasets", f"{dataset}.yaml")


# ---------------------------------------------------------------------------------------------
# The output layout
# ---------------------------------------------------------------------------------------------

B2N_STEPS = {"train": "train_base", "test": "test_new", "test_base": "test_base"}


@dataclass(frozen=True)
class Place:
    """What a run folder's path says: ``protocol`` (``base2new``, ``transfer`` or ``few_shot``),
    ``side`` (``base``/``new``, ``source``/``target``, or the shot count for few-shot), whether the
    layout holds an eval-only run there, and the run's dataset, trainer, config and shots."""

    protocol: str
    side: object
    eval_only: bool
    dataset: str
    trainer: str
    cfg: str | None
    shots: int | None


# What a ``{field}`` of a pattern may hold in one folder name (any other field: any text).
_FIELD_REGEX = {"shots": r"\d+", "seed": r"\d+", "step": "|".join(B2N_STEPS.values())}
_FIELD = re.compile(r"\{(\w+)\}")


@functools.lru_cache(maxsize=None)
def _level_regex(level, fields=()):
    """The regular expression of one level of a pattern, e.g. ``{cfg}_{shots}shots``."""
    regexes = {**_FIELD_REGEX, **dict(fields)}
    pieces = _FIELD.split(level)  # literal, field, literal, field, ..., literal
    return re.compile("^" + "".join(re.escape(piece) if i % 2 == 0 else f"(?P<{piece}>{regexes.get(piece, '.+')})"
                                    for i, piece in enumerate(pieces)) + "$")


@dataclass(frozen=True)
class Layout:
    """One kind of run folder: ``pattern`` is its path below the output root with ``{field}``
    placeholders (the last level is the run folder itself, ``seed{seed}`` for protocol runs).
    ``path`` writes it; ``read`` parses the path of the folder above the run folder back into a
    ``Place`` with ``place`` (None: a layout that is written, not read); ``fields``: narrower
    regular expressions for some fields (a reference layout told apart by its config name)."""

    pattern: str
    place: Callable[[dict], Place] | None = None
    fields: tuple = ()  # ((field, regex), ...)

    def path(self, **values):
        return osp.join(*self.pattern.format(**values).split("/"))

    def read(self, parts):
        levels = self.pattern.split("/")[:-1]
        if self.place is None or len(parts) != len(levels):
            return None
        values = {}
        for part, level in zip(parts, levels):
            match = _level_regex(level, self.fields).match(part)
            if not match:
                return None
            values.update(match.groupdict())
        return self.place(values)


def _base2new_place(values):
    step = values["step"]
    return Place("base2new", "new" if step == B2N_STEPS["test"] else "base", step != B2N_STEPS["train"],
                 values["dataset"], values["trainer"], values.get("cfg"), int(values["shots"]))


def _xd_source_place(values):
    return Place("transfer", "source", False, SOURCE_DATASET, values["trainer"], values["cfg"],
                 int(values["shots"]) if "shots" in values else None)


def _xd_target_place(values):
    return replace(_xd_source_place(values), side="target", eval_only=True, dataset=values["dataset"])


def _fewshot_place(values):
    shots = int(values["shots"])  # 0: a zero-shot evaluation
    return Place("few_shot", shots, shots == 0, values["dataset"], values["trainer"], values["cfg"], shots)


def _mmrl_cross_dataset_place(values):
    place = _base2new_place(values)
    return replace(place, protocol="transfer", side="target" if place.eval_only else "source")


SEED_LEVEL = "seed{seed}"  # the run folder of every protocol layout
_B2N_PATTERN = "base2new/{step}/{dataset}/shots_{shots}/{trainer}/{cfg}/" + SEED_LEVEL

# Where this project writes its runs (the planner, so the runner and the shell scripts) and reads
# them back (``place_of``).
LAYOUTS = {
    "base2new": Layout(_B2N_PATTERN, _base2new_place),
    "xd source": Layout(SOURCE_DATASET + "/{trainer}/{cfg}_{shots}shots/" + SEED_LEVEL, _xd_source_place),
    "xd target": Layout("evaluation/{trainer}/{cfg}_{shots}shots/{dataset}/" + SEED_LEVEL, _xd_target_place),
    "few-shot": Layout("few_shot/{dataset}/shots_{shots}/{trainer}/{cfg}/" + SEED_LEVEL, _fewshot_place),
    "zero-shot script": Layout("zeroshot/{dataset}/{trainer}/{cfg}_{subsample}"),
}

# The reference repositories' layouts that differ from ours, read back too. Tried before ours:
# MMRL's re-reads folders that also fit our base2new layout.
REFERENCE_LAYOUTS = {
    # MMRL's and MMRL++'s scripts (mmrl.md §11) keep the cross-dataset runs in the base2new tree: the
    # ImageNet training in train_base/imagenet, the evaluations in test_new/<target>; their config
    # (vit_b16_cross_datasets) tells them apart.
    "MMRL: cross-dataset runs in the base2new tree": Layout(
        _B2N_PATTERN, _mmrl_cross_dataset_place, fields=(("cfg", ".*cross_dataset.*"),)),
    # MMA's scripts (mma.md §13) write the base2new tree without the <cfg> level (cfg None).
    "MMA: base2new without the <cfg> level": Layout(
        "base2new/{step}/{dataset}/shots_{shots}/{trainer}/" + SEED_LEVEL, _base2new_place),
}

# Tried last: cross-dataset folders named without the shot count (``<cfg>``, not ``<cfg>_<K>shots``).
UNNUMBERED_LAYOUTS = {
    "xd source without the shot count": Layout(SOURCE_DATASET + "/{trainer}/{cfg}/" + SEED_LEVEL, _xd_source_place),
    "xd target without the shot count": Layout("evaluation/{trainer}/{cfg}/{dataset}/" + SEED_LEVEL, _xd_target_place),
}


def base2new_dir(step, dataset, shots, trainer, cfg, seed):
    """``step``: ``train`` (on base classes), ``test`` (new classes) or ``test_base`` (eval-only, base)."""
    return LAYOUTS["base2new"].path(step=B2N_STEPS[step], dataset=dataset, shots=shots, trainer=trainer, cfg=cfg,
                                    seed=seed)


def xd_source_dir(trainer, cfg, shots, seed):
    return LAYOUTS["xd source"].path(trainer=trainer, cfg=cfg, shots=shots, seed=seed)


def xd_target_dir(trainer, cfg, shots, dataset, seed):
    return LAYOUTS["xd target"].path(trainer=trainer, cfg=cfg, shots=shots, dataset=dataset, seed=seed)


def fewshot_dir(dataset, shots, trainer, cfg, seed):
    return LAYOUTS["few-shot"].path(dataset=dataset, shots=shots, trainer=trainer, cfg=cfg, seed=seed)


def zeroshot_dir(dataset, trainer, cfg, subsample):
    return LAYOUTS["zero-shot script"].path(dataset=dataset, trainer=trainer, cfg=cfg, subsample=subsample)


def seed_of(folder_name):
    """The seed of a run folder named ``seed<S>``, or None for another name."""
    match = _level_regex(SEED_LEVEL).match(folder_name)
    return int(match.group("seed")) if match else None


def place_of(parts):
    """``Place`` of a run's parent folder given its path parts below the output root (the ``seed<S>``
    level excluded), or None when the path is in no known layout."""
    parts = tuple(parts)
    for layout in (*REFERENCE_LAYOUTS.values(), *LAYOUTS.values(), *UNNUMBERED_LAYOUTS.values()):
        place = layout.read(parts)
        if place is not None:
            return place
    return None


def layout_description():
    """Our read-back layouts as ``base2new/<step>/<dataset>/shots_<K>/...`` (for messages)."""
    names = {"step": "{" + ",".join(B2N_STEPS.values()) + "}", "shots": "<K>", "trainer": "<Trainer>",
             "seed": "<S>", "dataset": "<dataset>", "cfg": "<cfg>"}
    patterns = [_FIELD.sub(lambda m: names[m.group(1)], layout.pattern) for layout in LAYOUTS.values() if layout.place]
    return ", ".join(patterns[:-1]) + " or " + patterns[-1]


# ``Place.protocol`` of each protocol's runs, and back.
PLACE_PROTOCOL = {"base2new": "base2new", "xd": "transfer", "fewshot": "few_shot"}
_PROTOCOL_OF_PLACE = {place: protocol for protocol, place in PLACE_PROTOCOL.items()}


def protocol_config(place):
    """The config a run's table is labelled with: the protocol's main config when the run used the
    config the method's table chooses for its dataset and shots (so ImageNet's own config, or a
    per-shot config, lands in the same table), else the run's own config."""
    entry = METHODS.get(place.trainer)
    if entry is None or place.cfg is None:
        return place.cfg
    step = entry.step(_PROTOCOL_OF_PLACE[place.protocol])
    shots = place.shots if place.protocol == "few_shot" else None
    dataset = SOURCE_DATASET if place.protocol == "transfer" else place.dataset  # evaluations: the model's config
    if place.cfg == step.cfg_for(dataset, shots):
        return step.cfg
    return place.cfg


def protocol_description(trainer, protocol, cfg):
    """``Step.describe()`` when ``cfg`` is the protocol's main config of a known trainer, else ``cfg``."""
    entry = METHODS.get(trainer)
    step = entry.step(_PROTOCOL_OF_PLACE[protocol]) if entry else None
    return step.describe() if step and cfg == step.cfg else cfg


# ---------------------------------------------------------------------------------------------
# Runs of a protocol
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    """One ``train.py`` run of a benchmark. ``id`` is its output folder below the output root."""

    id: str
    protocol: str
    trainer: str
    dataset: str
    seed: int
    shots: int
    cfg: str
    kind: str  # "train" or "test" (eval-only)
    opts: tuple = ()  # the protocol's and the method's KEY VALUE options
    model: str | None = None  # id of the training run a test evaluates (its dependency)

    @property
    def deps(self):
        return (self.model,) if self.model else ()

    def label(self):
        what = {"train": "train", "test": "eval"}[self.kind]
        return f"{self.trainer} {self.protocol} {self.dataset} {self.shots}-shot seed{self.seed} {what}"


def plan(trainer, protocol, seeds=DEFAULT_SEEDS, datasets=None, shots=None):
    """The runs of one protocol for one trainer, trainings before the evaluations that need them.

    ``datasets``: a subset of the protocol's datasets (for ``xd``, of its targets; ImageNet is always
    the source). ``shots``: for ``base2new`` and ``xd`` one shot count (default 16), for
    ``fewshot`` the shot counts (default 1 2 4 8 16).
    """
    entry = method(trainer)
    if protocol not in PROTOCOLS:
        raise ValueError(f'unknown protocol "{protocol}"; choose one of: {", ".join(PROTOCOLS)}')
    seeds = [int(seed) for seed in seeds]
    if not seeds:
        raise ValueError("no seeds given")
    if entry.eval_only:
        seeds = seeds[:1]
    step = entry.step(protocol)
    if protocol == "fewshot":
        shot_list = [0] if entry.eval_only else list(shots or FEWSHOT_SHOTS)
        return [job for dataset in _chosen(datasets, B2N_DATASETS) for k in shot_list for seed in seeds
                for job in _fewshot_jobs(trainer, entry, step, dataset, k, seed)]
    shots = _one_shot_count(shots)
    if protocol == "base2new":
        return [job for dataset in _chosen(datasets, B2N_DATASETS) for seed in seeds
                for job in _base2new_jobs(trainer, entry, step, dataset, shots, seed)]
    targets = [name for name in _chosen(datasets, XD_TARGETS + DG_TARGETS, extra=(SOURCE_DATASET,))
               if name != SOURCE_DATASET]
    return [job for seed in seeds for job in _xd_jobs(trainer, entry, step, targets, shots, seed)]


def _chosen(datasets, allowed, extra=()):
    if not datasets:
        return list(allowed)
    unknown = [name for name in datasets if name not in allowed and name not in extra]
    if unknown:
        raise ValueError(f"dataset(s) {', '.join(unknown)} not in this protocol; choose from: {', '.join(allowed)}")
    return [name for name in allowed if name in datasets] + [name for name in extra if name in datasets]


def _one_shot_count(shots):
    if not shots:
        return DEFAULT_SHOTS
    if len(shots) != 1:
        raise ValueError(f"base2new and xd take one shot count, got {' '.join(map(str, shots))}")
    return int(shots[0])


# The runs of one dataset / seed; ``cfg``: another config than the method's (the scripts' CFG argument).

def _base2new_jobs(trainer, entry, step, dataset, shots, seed, cfg=None):
    cfg = cfg or step.cfg_for(dataset)
    protocol = ("DATASET.NUM_SHOTS", str(shots))

    def job(kind, where, subsample, model=None):
        extra = step.test_opts if kind == "test" else ()
        return Job(base2new_dir(where, dataset, shots, trainer, cfg, seed), "base2new", trainer, dataset, seed,
                   shots, cfg, kind, protocol + ("DATASET.SUBSAMPLE_CLASSES", subsample) + step.opts + extra, model)

    if entry.eval_only:
        return [job("test", "test_base", "base"), job("test", "test", "new")]
    train = job("train", "train", "base")
    return [train, job("test", "test", "new", train.id)]


def _xd_jobs(trainer, entry, step, targets, shots, seed, cfg=None):
    cfg = cfg or step.cfg_for(SOURCE_DATASET)  # the evaluations use the ImageNet model's config
    source = Job(xd_source_dir(trainer, cfg, shots, seed), "xd", trainer, SOURCE_DATASET, seed, shots, cfg,
                 "test" if entry.eval_only else "train",
                 ("DATASET.NUM_SHOTS", str(shots)) + step.opts + (step.test_opts if entry.eval_only else ()))
    model = None if entry.eval_only else source.id
    # Targets: all classes, the full test set (no NUM_SHOTS, as the reference scripts).
    return [source] + [Job(xd_target_dir(trainer, cfg, shots, dataset, seed), "xd", trainer, dataset, seed, shots,
                           cfg, "test", step.opts + step.test_opts, model) for dataset in targets]


def _fewshot_jobs(trainer, entry, step, dataset, shots, seed, cfg=None):
    cfg = cfg or step.cfg_for(dataset, shots)
    if entry.eval_only:  # zero-shot: K = 0, the dataset's full training set is not used
        return [Job(fewshot_dir(dataset, 0, trainer, cfg, seed), "fewshot", trainer, dataset, seed, 0, cfg, "test",
                    step.opts + step.test_opts)]
    return [Job(fewshot_dir(dataset, shots, trainer, cfg, seed), "fewshot", trainer, dataset, seed, shots, cfg,
                "train", ("DATASET.NUM_SHOTS", str(shots)) + step.opts)]


# ---------------------------------------------------------------------------------------------
# Command lines
# ---------------------------------------------------------------------------------------------

class StepError(Exception):
    """A step that cannot run yet or as asked; the message is one line naming the folder and the fix."""


def default_load_epoch(model_dir):
    """``best`` when the training run saved ``model-best.pth.tar`` (it deploys the best-validation
    model), else the epoch of its newest checkpoint (the ``checkpoint`` pointer file)."""
    if glob.glob(osp.join(glob.escape(model_dir), "*", "model-best.pth.tar")):
        return "best"
    pointers = sorted(glob.glob(osp.join(glob.escape(model_dir), "*", "checkpoint")))
    if not pointers:
        raise StepError(f"No checkpoint under {model_dir}: train first (or pass LOADEP)")
    with open(pointers[0]) as f:
        return f.readline().strip().replace("model.pth.tar-", "")


def train_argv(trainer, dataset, cfg, seed, output_dir, opts=(), data="data", user_opts=(), eval_only=False,
               model_dir=None, load_epoch=None):
    """The ``train.py`` arguments of a run: flags, then the protocol's options, then the user's.

    For an evaluation of a trained model, ``load_epoch`` None means ``default_load_epoch``; ``best``
    passes no ``--load-epoch`` (the engine then loads ``model-best.pth.tar``).
    """
    argv = ["--root", data]
    if seed is not None:
        argv += ["--seed", str(seed)]
    argv += ["--trainer", trainer, "--dataset-config-file", dataset_config_file(dataset),
             "--config-file", config_file(trainer, cfg), "--output-dir", output_dir]
    if model_dir:
        epoch = load_epoch or default_load_epoch(model_dir)
        argv += ["--model-dir", model_dir] + ([] if epoch == "best" else ["--load-epoch", str(epoch)])
    if eval_only:
        argv.append("--eval-only")
    return argv + list(opts) + list(user_opts)


def job_argv(job, output_root, data, user_opts=(), load_epoch=None):
    """``train_argv`` of a planned job; its output folder is ``output_root/job.id``."""
    model_dir = osp.join(output_root, job.model) if job.model else None
    return train_argv(job.trainer, job.dataset, job.cfg, job.seed, osp.join(output_root, job.id), job.opts, data,
                      user_opts, job.kind == "test", model_dir, load_epoch)


SCRIPT_STEPS = ("b2n_train", "b2n_test", "xd_train", "xd_test", "fewshot_train", "train", "test", "zeroshot")


def _script_job(args):
    """The planner's job for a protocol step of the shell scripts (same folder, same options)."""
    protocol = {"b2n": "base2new", "xd": "xd", "fewshot": "fewshot"}[args.step.split("_")[0]]
    entry = METHODS.get(args.trainer)
    if entry is None:  # a trainer outside the table: its given config, no options of its own
        if not args.cfg:
            raise StepError(f'no config given and "{args.trainer}" is not in harness/protocols.py METHODS: pass CFG')
        entry = Method(*[Step(args.cfg)] * 3)
    if entry.eval_only:
        raise StepError(f"{args.trainer} only evaluates: use scripts/benchmark.py or scripts/zsclip/zeroshot.sh")
    step, cfg = entry.step(protocol), args.cfg or None
    if protocol == "base2new":
        jobs = _base2new_jobs(args.trainer, entry, step, args.dataset, args.shots, args.seed, cfg)
        return jobs[0 if args.step == "b2n_train" else 1]
    if protocol == "xd":
        targets = [args.dataset] if args.step == "xd_test" else []
        return _xd_jobs(args.trainer, entry, step, targets, args.shots, args.seed, cfg)[-1]
    return _fewshot_jobs(args.trainer, entry, step, args.dataset, args.shots, args.seed, cfg)[0]


def script_step(args):
    """``(action, output folder, train.py argv)`` of one shell-script step (``command`` below).

    ``action`` is ``skip`` (the run finished), ``resume`` (an unfinished run is there) or ``run``.
    Protocol steps are the planner's jobs; ``train``/``test`` run into an explicit ``--dir``;
    ``zeroshot`` is the zero-shot script's evaluation.
    """
    user_opts = list(args.extra) + shlex.split(args.opts or "")
    if args.step in ("train", "test", "zeroshot"):
        if args.step == "zeroshot":
            cfg = args.cfg or (METHODS[args.trainer].fewshot.cfg if args.trainer in METHODS else "")
            output_dir = osp.join(args.output, zeroshot_dir(args.dataset, args.trainer, cfg, args.subsample))
            user_opts = ["DATASET.SUBSAMPLE_CLASSES", args.subsample] + user_opts
            seed, model_dir = None, None
        elif not args.dir or not args.cfg:
            raise StepError(f"step {args.step} needs --dir and --cfg")
        else:
            cfg, output_dir, seed, model_dir = args.cfg, args.dir, args.seed, args.model_dir or None

        def argv(load_epoch):
            return train_argv(args.trainer, args.dataset, cfg, seed, output_dir, (), args.data, user_opts,
                              args.step != "train", model_dir, load_epoch)
    else:
        job = _script_job(args)
        output_dir = osp.join(args.output, job.id)
        model_dir = osp.join(args.output, job.model) if job.model else None

        def argv(load_epoch):
            return job_argv(job, args.output, args.data, user_opts, load_epoch)
    try:
        state = run_state(output_dir)
        if state in ("finished", "legacy"):
            return "skip", output_dir, []
        if model_dir and run_state(model_dir) not in ("finished", "legacy"):
            raise StepError(f"training of {model_dir} is not finished: run (or resume) its training step first")
    except RunError as error:
        raise StepError(str(error)) from None
    return ("resume" if state == "unfinished" else "run"), output_dir, argv(args.load_epoch or None)


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m harness.protocols", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("command", help="a shell-script step's command line")
    cmd.add_argument("--step", choices=SCRIPT_STEPS, required=True)
    cmd.add_argument("--trainer", required=True)
    cmd.add_argument("--dataset", default=SOURCE_DATASET)
    cmd.add_argument("--seed", type=int)
    cmd.add_argument("--cfg", default="", help="config stem (default: the method's, from METHODS)")
    cmd.add_argument("--load-epoch", default="",
                     help="epoch to evaluate, or best (default: model-best if saved, else the newest)")
    cmd.add_argument("--shots", type=int, default=DEFAULT_SHOTS)
    cmd.add_argument("--subsample", default="all")
    cmd.add_argument("--dir", default="", help="output folder (generic train/test steps)")
    cmd.add_argument("--model-dir", default="", help="training run to evaluate (generic test step)")
    cmd.add_argument("--data", default="data")
    cmd.add_argument("--output", default="output")
    cmd.add_argument("--opts", default="", help="the user's OPTS string (shell words)")
    cmd.add_argument("extra", nargs="*", help="KEY VALUE options of the script (after --)")
    names = sub.add_parser("datasets", help="print a protocol's datasets (xd: its evaluation targets)")
    names.add_argument("protocol", choices=PROTOCOLS)
    return parser


def main(argv=None):
    """``python -m harness.protocols command --step STEP ...``: one line, shell-quoted: the action
    (``skip``/``resume``/``run``), the output folder and the ``train.py`` arguments (scripts/common.sh).
    ``python -m harness.protocols datasets PROTOCOL``: the protocol's datasets."""
    args = build_parser().parse_args(argv)
    if args.command == "datasets":
        print(" ".join(XD_TARGETS + DG_TARGETS if args.protocol == "xd" else B2N_DATASETS))
        return 0
    try:
        action, folder, train_args = script_step(args)
    except (StepError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(shlex.join([action, folder, *train_args]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
