"""The output layout, round trip: every folder the shell scripts and the benchmark runner write (both
through harness/protocols.py's planner) is read back by the tables where it was written, for every
trainer in METHODS and every protocol.

One output root holds all of them (so a layout that takes another's folders shows too); each run is
a minimal finished run as train.py leaves it: ``run.json`` and ``finished.json`` written by
``harness.run.Run``, a checkpoint pointer, and a log with its result line.
"""
import contextlib
import io
import os.path as osp
import shlex
from pathlib import Path

import numpy as np
import pytest
from yacs.config import CfgNode

import harness.run
from harness import protocols
from harness.protocols import METHODS, PROTOCOLS
from harness.tables import build_tables, collect_groups, harmonic_mean

SEEDS = (1, 2)
# A few datasets per protocol keep the test small; ImageNet has its own config in several methods,
# eurosat is a cross-dataset target and imagenet_a a domain-generalisation one. Every shot count.
DATASETS = {"base2new": ["imagenet", "eurosat"], "xd": ["eurosat", "imagenet_a"], "fewshot": ["imagenet", "eurosat"]}
SCRIPT_STEPS = {("base2new", "train"): "b2n_train", ("base2new", "test"): "b2n_test", ("xd", "train"): "xd_train",
                ("xd", "test"): "xd_test", ("fewshot", "train"): "fewshot_train"}


def script_output_dir(job, output):
    """The ``--output-dir`` of the command line scripts/common.sh runs for the job's step
    (``python -m harness.protocols command ...``, as the scripts call it)."""
    argv = ["command", f"--step={SCRIPT_STEPS[job.protocol, job.kind]}", f"--trainer={job.trainer}",
            f"--dataset={job.dataset}", f"--seed={job.seed}", f"--shots={job.shots}", f"--output={output}"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert protocols.main(argv) == 0
    action, folder, *train_args = shlex.split(printed.getvalue())
    assert action == "run" and train_args[train_args.index("--output-dir") + 1] == folder
    return folder


def runner_output_dir(job, output):
    """The ``--output-dir`` of the command line scripts/benchmark.py runs for the job."""
    argv = protocols.job_argv(job, output, "data")
    return argv[argv.index("--output-dir") + 1]


def write_finished_run(folder, job, model_dir, accuracy):
    """A finished run: record and marker through harness.run.Run, a checkpoint pointer (what a test
    step looks for), and the log lines the parser reads."""
    cfg = CfgNode({"OUTPUT_DIR": folder, "SEED": job.seed, "TRAINER": {"NAME": job.trainer},
                   "DATASET": {"NAME": job.dataset, "NUM_SHOTS": job.shots}})
    with harness.run.Run(cfg, job.kind, f"train.py ({job.label()})", model_dir=model_dir) as run:
        lines = ["epoch [1/1] batch [1/1] loss 0.5000", "Finish training"] if job.kind == "train" else []
        Path(folder, "log.txt").write_text("\n".join(lines + ["=> result", f"* accuracy: {accuracy}%", ""]))
        Path(folder, "prompt_learner").mkdir()
        Path(folder, "prompt_learner", "checkpoint").write_text("model.pth.tar-1\n")
        run.finish(accuracy)


def expected_place(job):
    """(protocol, side) of a job, from what the run does (not from its path)."""
    if job.protocol == "base2new":
        opts = dict(zip(job.opts[::2], job.opts[1::2]))
        return "base2new", opts["DATASET.SUBSAMPLE_CLASSES"]
    if job.protocol == "xd":
        return "transfer", "source" if job.dataset == protocols.SOURCE_DATASET else "target"
    return "few_shot", job.shots


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Every job of every trainer and protocol written into one output root: ``(root, [(job, folder,
    accuracy)])``."""
    root = str(tmp_path_factory.mktemp("output"))
    runs = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(harness.run, "code_version", lambda: "test")  # no git call per run
        for trainer in METHODS:
            for protocol in PROTOCOLS:
                for job in protocols.plan(trainer, protocol, SEEDS, DATASETS[protocol]):
                    folder = runner_output_dir(job, root)
                    if not METHODS[trainer].eval_only:  # zero-shot trainers have no protocol scripts
                        assert script_output_dir(job, root) == folder, job.label()
                    accuracy = round(40 + (len(runs) * 37 % 5000) / 100, 2)  # distinct per run
                    model_dir = osp.join(root, job.model) if job.model else ""
                    write_finished_run(folder, job, model_dir, accuracy)
                    runs.append((job, folder, accuracy))
    groups, ignored = collect_groups(root)
    return root, runs, groups, ignored


def cells_by_folder(groups):
    return {cell.folder: (group, side, dataset) for group in groups for (side, dataset), cell in group.cells.items()}


def test_every_written_folder_is_read_back_once(written):
    root, runs, groups, ignored = written
    assert ignored == []
    parents = {Path(folder).parent for _, folder, _ in runs}
    assert set(cells_by_folder(groups)) == parents  # no folder left out, none read twice into one cell
    assert len(runs) == sum(len(cell.runs) for group in groups for cell in group.cells.values())


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("trainer", METHODS)
def test_runs_are_placed_where_they_were_written(written, trainer, protocol):
    root, runs, groups, _ = written
    placed = cells_by_folder(groups)
    jobs = [(job, folder, accuracy) for job, folder, accuracy in runs if (job.trainer, job.protocol) == (trainer, protocol)]
    assert jobs
    for job, folder, accuracy in jobs:
        group, side, dataset = placed[Path(folder).parent]
        cell = group.cells[side, dataset]
        assert (group.protocol, side) == expected_place(job), job.label()
        assert (dataset, group.key.trainer, cell.config) == (job.dataset, trainer, job.cfg), job.label()
        assert group.key.shots == (None if protocol == "fewshot" else job.shots), job.label()
        # every per-dataset / per-shot config lands in the table of the protocol's main config
        assert group.key.config == METHODS[trainer].step(protocol).cfg, job.label()
        run = cell.runs[job.seed]
        assert (run.folder, run.accuracy, run.problem) == (Path(folder), accuracy, None), job.label()


TABLES = {"base2new": ("base2new",), "xd": ("cross_dataset", "domain_generalization"), "fewshot": ("few_shot",)}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("trainer", METHODS)
def test_tables_hold_the_written_accuracies(written, trainer, protocol):
    root, runs, groups, _ = written
    tables = [table for table in build_tables(groups) if table.key.trainer == trainer]
    by_protocol = {table.protocol: table for table in tables if table.protocol in TABLES[protocol]}
    assert len(by_protocol) == len(TABLES[protocol]) == len([t for t in tables if t.protocol in TABLES[protocol]])
    values = {}  # (table protocol, row dataset, metric) -> accuracies over seeds
    for job, _, accuracy in runs:
        if (job.trainer, job.protocol) != (trainer, protocol):
            continue
        _, side = expected_place(job)
        if protocol == "base2new":
            cells = [("base2new", job.dataset, side)]
        elif protocol == "fewshot":
            cells = [("few_shot", job.dataset, f"shots_{job.shots}")]
        elif side == "source":  # the source row heads both transfer tables
            cells = [(name, job.dataset, "acc") for name in TABLES["xd"]]
        else:
            table = "domain_generalization" if job.dataset in protocols.DG_TARGETS else "cross_dataset"
            cells = [(table, job.dataset, "acc")]
        for cell in cells:
            values.setdefault(cell, []).append(accuracy)
    seeds = 1 if METHODS[trainer].eval_only else len(SEEDS)
    for (table, dataset, metric), accuracies in values.items():
        [row] = [row for row in by_protocol[table].rows if row.dataset == dataset]
        assert row.metric(metric).mean == pytest.approx(np.mean(accuracies)), (table, dataset, metric)
        assert row.metric(metric).seeds == row.metric(metric).expected == seeds == len(accuracies)
    for table in by_protocol.values():
        rows = {row.dataset for row in table.rows} - {"average"}
        assert rows == {dataset for name, dataset, _ in values if name == table.protocol}
        average, shown = table.rows[-1], table.rows[:-1]
        averaged = shown[1:] if table.protocol in TABLES["xd"] else shown  # not the source row
        for metric in average.metrics:
            if metric.name == "hm":
                expected = harmonic_mean(average.metric("base").mean, average.metric("new").mean)
            else:
                expected = np.mean([row.metric(metric.name).mean for row in averaged])
            assert metric.mean == pytest.approx(expected), (table.protocol, metric.name)
