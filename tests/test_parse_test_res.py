"""Tests for parse_test_res.py: the CoOp-compatible per-folder mode and the --table mode."""

import csv
import io
import json
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

import parse_test_res as ptr
from harness.tables import (BASE2NEW_DATASETS, CROSS_DATASET_TARGETS, CSV_COLUMNS, DG_TARGETS,
                            GroupKey, build_tables, collect_groups, format_number, harmonic_mean, round_half_up)

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAINER = "MultiModalAdapter"


# ---------------------------------------------------------------------------
# Log-tree builders
# ---------------------------------------------------------------------------

def write_log(folder, accuracy, kind="train", finished=True, before=(), after=(), end_line="Finish training"):
    """Write a realistic Dassl log tail; ``accuracy`` is the text printed, e.g. ``"91.8"``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["Loading trainer: MultiModalAdapter", "Building custom CLIP", *before,
             "epoch [5/5] batch [20/20] time 0.101 (0.120) loss 0.3120 (0.3390) acc 93.7500 (91.1)"]
    if finished:
        if kind == "train":
            lines += [end_line, "Deploy the last-epoch model"]
        lines += ["Evaluate on the *test* set", "=> result", "* total: 2,465", "* correct: 2,263",
                  f"* accuracy: {accuracy}%", "* error: 8.2%", "* macro_f1: 90.9%", *after]
        if kind == "train":
            lines.append("Elapsed: 0:01:23")
    (folder / "log.txt").write_text("\n".join(lines) + "\n")
    return folder / "log.txt"


def base2new_folder(root, step, dataset, config=None, trainer=TRAINER, shots=16):
    folder = Path(root, "base2new", step, dataset, f"shots_{shots}", trainer)
    return folder / config if config else folder


def write_base2new(root, dataset, base_values, new_values, config="vit_b16_ep5", trainer=TRAINER):
    """One train_base and one test_new log per seed (``None`` skips that seed's log)."""
    for seed, value in enumerate(base_values, 1):
        if value is not None:
            write_log(base2new_folder(root, "train_base", dataset, config, trainer) / f"seed{seed}", value)
    for seed, value in enumerate(new_values, 1):
        if value is not None:
            write_log(base2new_folder(root, "test_new", dataset, config, trainer) / f"seed{seed}", value, "test")


def write_transfer(root, source_values, targets, config="vit_b16_xd", trainer=TRAINER):
    """ImageNet training logs plus evaluation logs for ``{target: [values]}``."""
    for seed, value in enumerate(source_values, 1):
        write_log(Path(root, "imagenet", trainer, f"{config}_16shots", f"seed{seed}"), value)
    for target, values in targets.items():
        for seed, value in enumerate(values, 1):
            write_log(Path(root, "evaluation", trainer, f"{config}_16shots", target, f"seed{seed}"), value, "test")


def run(argv, capsys):
    """Run main(); return (exit status, stdout, stderr)."""
    status = ptr.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def text_rows(output):
    """Map row label -> cells of the first text table in ``output``."""
    rows = {}
    for line in output.splitlines()[3:]:
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells[1:]
        if cells[0].startswith("Average"):
            break
    return rows


# ---------------------------------------------------------------------------
# Per-folder mode: exact CoOp output
# ---------------------------------------------------------------------------

def test_upstream_output_is_exact(tmp_path, capsys):
    for seed, value in zip((1, 2, 3), ("91.8", "92.0", "91.5")):
        write_log(tmp_path / f"seed{seed}", value)
    status, out, _ = run([tmp_path], capsys)
    assert status == 0
    expected = (
        f"Parsing files in {tmp_path}\n"
        f"file: {tmp_path}/seed1/log.txt. accuracy: 91.80%. \n"
        f"file: {tmp_path}/seed2/log.txt. accuracy: 92.00%. \n"
        f"file: {tmp_path}/seed3/log.txt. accuracy: 91.50%. \n"
        "===\n"
        f"Summary of directory: {tmp_path}\n"
        "* accuracy: 91.77% +- 0.21%\n"
        "===\n"
    )
    assert out == expected
    # hidden, so that CoOp's parser (every visible entry must be a run folder) still works here
    assert (tmp_path / ".parse.txt").read_text() == expected and not (tmp_path / "parse.txt").exists()


def test_upstream_ci95(tmp_path, capsys):
    for seed, value in zip((1, 2, 3), ("91.8", "92.0", "91.5")):
        write_log(tmp_path / f"seed{seed}", value)
    _, out, _ = run([tmp_path, "--ci95", "--no-parse-file"], capsys)
    assert out.splitlines()[-2] == "* accuracy: 91.77% +- 0.23%"  # 1.96 * 0.2055 / sqrt(3)
    assert not (tmp_path / ".parse.txt").exists()


def test_upstream_two_decimal_logs_and_keyword(tmp_path, capsys):
    write_log(tmp_path / "seed1", "83.20", after=["* macro_f1: 80.10%"])
    write_log(tmp_path / "seed2", "83.35")
    _, out, _ = run([tmp_path, "--no-parse-file"], capsys)
    assert "accuracy: 83.20%. " in out and "* accuracy: 83.28% +- 0.07%" in out
    _, out, _ = run([tmp_path, "--keyword", "macro_f1", "--no-parse-file"], capsys)
    assert f"file: {tmp_path}/seed1/log.txt. macro_f1: 80.10%. " in out  # last macro_f1 after the signal
    assert "* macro_f1: 85.50% +- 5.40%" in out


def test_test_log_uses_result_signal(tmp_path, capsys):
    write_log(tmp_path / "seed1", "71.2", kind="test")
    write_log(tmp_path / "seed2", "71.6", kind="test")
    status, _, err = run([tmp_path, "--no-parse-file"], capsys)
    assert status == 1
    assert err.strip().endswith(f"error: Nothing found in {tmp_path}")
    status, out, _ = run([tmp_path, "--test-log", "--no-parse-file"], capsys)
    assert status == 0
    assert "* accuracy: 71.40% +- 0.20%" in out


def test_nothing_found_raises_assertion_error(tmp_path):
    write_log(tmp_path / "seed1", "70.0", finished=False)
    with pytest.raises(AssertionError, match="Nothing found in"):
        ptr.upstream_report(str(tmp_path))


def test_accuracy_before_end_signal_is_ignored(tmp_path):
    log = write_log(tmp_path / "seed1", "91.8", before=["=> result", "* accuracy: 12.5%"])
    assert ptr.read_accuracy(log) == 91.8
    only_before = tmp_path / "seed2" / "log.txt"
    only_before.parent.mkdir()
    only_before.write_text("=> result\n* accuracy: 55.5%\nFinish training\nDeploy the last-epoch model\n")
    assert ptr.read_accuracy(only_before) is None


def test_last_match_wins_and_finished_training_accepted(tmp_path):
    log = write_log(tmp_path / "seed1", "80.0", after=["=> result", "* accuracy: 81.5%"])
    assert ptr.read_accuracy(log) == 81.5
    old = write_log(tmp_path / "seed2", "77.25", end_line="Finished training")
    assert ptr.read_accuracy(old) == 77.25
    assert ptr.read_accuracy(old, ptr.TEST_END_SIGNALS) == 77.25


def test_missing_log_skipped_and_timestamped_logs_ignored(tmp_path, capsys):
    write_log(tmp_path / "seed1", "90.0")
    rerun = write_log(tmp_path / "seed2", "10.0")
    rerun.rename(rerun.with_name("log.txt-2024-06-23-10-00-00"))
    write_log(tmp_path / "seed3", "92.0")
    (tmp_path / "seed3" / "log.txt-2024-06-23-10-00-00").write_text("Finish training\n* accuracy: 1.0%\n")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "notes.txt").write_text("not a run\n")
    status, out, err = run([tmp_path], capsys)
    assert status == 0
    assert "seed2" not in out
    assert "* accuracy: 91.00% +- 1.00%" in out
    assert f"skipping {tmp_path}/seed2: no log.txt" in err
    assert (tmp_path / "notes.txt").read_text() == "not a run\n"


def test_multi_exp(tmp_path, capsys):
    for experiment, values in (("exp_a", ("80.0", "82.0")), ("exp_b", ("70.0", "71.0"))):
        for seed, value in enumerate(values, 1):
            write_log(tmp_path / experiment / f"seed{seed}", value)
    status, out, _ = run([tmp_path, "--multi-exp", "--no-parse-file"], capsys)
    assert status == 0
    lines = out.splitlines()
    assert lines.count("===") == 4
    assert f"Summary of directory: {tmp_path}/exp_a" in lines
    assert "* accuracy: 81.00% +- 1.00%" in lines
    assert "* accuracy: 70.50% +- 0.50%" in lines
    assert lines[-2:] == ["Average performance", "* accuracy: 75.75%"]


def test_script_runs_from_repo_root(tmp_path):
    write_log(tmp_path / "seed1", "66.6", kind="test")
    result = subprocess.run([sys.executable, "parse_test_res.py", str(tmp_path), "--test-log"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2] == "* accuracy: 66.60% +- 0.00%"
    missing = subprocess.run([sys.executable, "parse_test_res.py", str(tmp_path)],
                             cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1] == f"error: Nothing found in {tmp_path}"


def test_mode_options_are_checked(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        ptr.main([str(tmp_path), "--std"])
    assert exit_info.value.code == 2
    assert "--std requires --table" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ptr.main([str(tmp_path), "--table", "--ci95"])


# ---------------------------------------------------------------------------
# Table mode
# ---------------------------------------------------------------------------

def make_two_dataset_tree(root, config="vit_b16_ep5"):
    write_base2new(root, "dtd", ["79.0", "80.0", "81.0"], ["60.0", "60.0", "60.0"], config)
    write_base2new(root, "caltech101", ["90.0", "90.0", "90.0"], ["89.0", "90.0", "91.0"], config)


@pytest.mark.parametrize("config", ["vit_b16_ep5", None])
def test_base2new_table_numbers(tmp_path, capsys, config):
    make_two_dataset_tree(tmp_path, config)
    status, out, _ = run([tmp_path, "--table", "--std"], capsys)
    assert status == 0
    title = f"Base-to-novel | {TRAINER} | {config or '(no config level)'} | 16 shots"
    assert out.splitlines()[0] == title
    rows = text_rows(out)
    assert list(rows) == ["caltech101", "dtd", "Average*"]  # canonical order, not alphabetical
    assert rows["dtd"] == ["80.00 ± 0.82", "3", "60.00 ± 0.00", "3", "68.57"]
    assert rows["caltech101"] == ["90.00 ± 0.00", "3", "90.00 ± 0.82", "3", "90.00"]
    # Average HM = HM(85, 75) = 79.69, not the mean of per-dataset HMs (79.29).
    assert rows["Average*"] == ["85.00", "75.00", "79.69"]
    assert "* Average over 2 of 11 datasets" in out


def test_base2new_text_layout(tmp_path, capsys):
    write_base2new(tmp_path, "oxford_pets", ["95.4", "95.5", "95.3"], ["98.1", "98.0", "98.2"])
    _, out, _ = run([tmp_path, "--table"], capsys)
    assert out.splitlines()[:7] == [
        f"Base-to-novel | {TRAINER} | vit_b16_ep5 | 16 shots",
        "Dataset       Base  n    New  n     HM",
        "-----------  -----  -  -----  -  -----",
        "oxford_pets  95.40  3  98.10  3  96.73",
        "Average*     95.40     98.10     96.73",
        "n: seeds averaged for the number on its left (k/N: only k of the N seeds found finished); "
        "HM = 2·Base·New / (Base + New)",
        "* Average over 1 of 11 datasets (not run: imagenet, caltech101, stanford_cars, oxford_flowers, "
        "food101, fgvc_aircraft, sun397, dtd, eurosat, ucf101)",
    ]


def test_table_api_reads_both_layouts(tmp_path):
    make_two_dataset_tree(tmp_path / "with_cfg", "vit_b16_ep5")
    make_two_dataset_tree(tmp_path / "without_cfg", None)
    for root, config in ((tmp_path / "with_cfg", "vit_b16_ep5"), (tmp_path / "without_cfg", None)):
        groups, ignored = collect_groups(root)
        assert ignored == []
        [table] = build_tables(groups)
        assert table.key == GroupKey(TRAINER, config, 16)
        dtd = table.rows[1]
        assert dtd.dataset == "dtd" and dtd.metric("base").seeds == 3
        assert dtd.metric("base").std == pytest.approx(0.8164966, abs=1e-6)
        assert table.rows[-1].metric("hm").mean == pytest.approx(2 * 85 * 75 / 160)


def test_unfinished_and_missing_runs_are_marked(tmp_path, capsys):
    write_base2new(tmp_path, "dtd", ["80.0", "81.0", "82.0"], ["60.0", "61.0", None])
    write_log(base2new_folder(tmp_path, "test_new", "dtd", "vit_b16_ep5") / "seed3", "0", "test", finished=False)
    write_base2new(tmp_path, "eurosat", ["90.0", "91.0", "92.0"], [None, None, None])
    write_base2new(tmp_path, "caltech101", ["95.0", "95.0", None], ["94.0", "94.0", "94.0"])
    status, out, _ = run([tmp_path, "--table"], capsys)
    assert status == 0
    rows = text_rows(out)
    assert rows["dtd"] == ["81.00", "3", "60.50", "2/3", "69.27"]  # HM(81, 60.5) = 69.265
    assert rows["eurosat"] == ["91.00", "3", "--", "0/3", "--"]
    assert rows["caltech101"] == ["95.00", "2/3", "94.00", "3", "94.50"]
    assert rows["Average*"] == ["--", "--", "--"]  # no dataset has both sides complete
    assert "* Average over 0 of 11 datasets (incomplete: caltech101, dtd, eurosat;" in out
    assert "unfinished: 1 run" in out
    assert "test_new/dtd/shots_16/MultiModalAdapter/vit_b16_ep5/seed3/log.txt: no '=> result' line" in out
    assert "missing: 4 runs" in out
    assert "train_base/caltech101/shots_16/MultiModalAdapter/vit_b16_ep5/seed3: no such folder" in out
    assert "eurosat: no test_new runs (seeds 1, 2, 3)" in out
    assert " 0.00 " not in out


def test_missing_log_in_table_mode_is_unfinished(tmp_path, capsys):
    write_base2new(tmp_path, "dtd", ["80.0", "80.0"], ["60.0", "60.0"])
    (base2new_folder(tmp_path, "train_base", "dtd", "vit_b16_ep5") / "seed3").mkdir()
    _, out, _ = run([tmp_path, "--table"], capsys)
    assert text_rows(out)["dtd"][:2] == ["80.00", "2/3"]
    assert "train_base/dtd/shots_16/MultiModalAdapter/vit_b16_ep5/seed3/log.txt: no log.txt" in out


def test_csv_and_markdown_are_parseable(tmp_path, capsys):
    make_two_dataset_tree(tmp_path)
    _, out, _ = run([tmp_path, "--table", "--format", "csv", "--compare", "MMA"], capsys)
    records = list(csv.DictReader(io.StringIO(out)))
    assert list(records[0]) == list(CSV_COLUMNS)
    by_key = {(record["dataset"], record["metric"]): record for record in records}
    assert by_key[("dtd", "base")]["mean"] == "80.00"
    assert by_key[("dtd", "base")]["std"] == "0.82"
    assert by_key[("dtd", "base")]["seeds"] == "3"
    assert by_key[("dtd", "base")]["published"] == "83.20"
    assert by_key[("dtd", "base")]["diff"] == "-3.20"
    assert by_key[("average", "hm")]["mean"] == "79.69"
    assert by_key[("average", "hm")]["complete"] == "0"
    assert by_key[("caltech101", "hm")]["complete"] == "1"

    _, out, _ = run([tmp_path, "--table", "--format", "markdown"], capsys)
    table_lines = [line for line in out.splitlines() if line.startswith("|")]
    assert len({line.count(" | ") for line in table_lines if "---" not in line}) == 1
    assert table_lines[0] == "| Dataset | Base | n | New | n | HM |"
    assert "| dtd | 80.00 | 3 | 60.00 | 3 | 68.57 |" in table_lines
    assert out.startswith(f"### Base-to-novel | {TRAINER} | vit_b16_ep5 | 16 shots")


def test_compare_differences_and_unverified_marks(tmp_path, capsys):
    write_base2new(tmp_path, "dtd", ["83.0", "83.5", "83.1"], ["65.0", "66.0", "65.9"])
    _, out, _ = run([tmp_path, "--table", "--compare", "MultiModalAdapter"], capsys)
    rows = text_rows(out)
    # ours 83.20 / 65.63 / HM 73.38 vs MMA's published 83.20 / 65.63 / 73.38
    assert rows["dtd"] == ["83.20", "3", "65.63", "3", "73.38", "83.20", "65.63", "73.38", "+0.00", "+0.00", "+0.00"]
    _, out, _ = run([tmp_path, "--table", "--compare", "mmrl"], capsys)
    rows = text_rows(out)
    assert rows["dtd"][5:] == ["85.67?", "65.00?", "73.92?", "-2.47", "+0.63", "-0.54"]
    # the published average over exactly the datasets run (here dtd alone), not over all 11
    assert rows["Average*"][3:] == ["85.67?", "65.00?", "73.92?", "-2.47", "+0.63", "-0.54"]
    assert "MMRL published average over the 1 dataset run here (dtd)" in out
    assert "its average over all datasets is 85.68 / 77.16 / 81.20" in out
    assert "? published number not verified" in out


def test_compare_unknown_method(tmp_path, capsys):
    make_two_dataset_tree(tmp_path)
    status, out, err = run([tmp_path, "--table", "--compare", "NoSuchMethod"], capsys)
    assert status == 1 and out == ""
    [line] = err.strip().splitlines()
    assert line.startswith("error: unknown method 'NoSuchMethod' for --compare; available: ")
    for method in ("MMA", "MMRL", "CLIP", "CLIP-Adapter", "CoOp", "CoCoOp", "MaPLe"):
        assert method in line


def test_transfer_tables(tmp_path, capsys):
    write_transfer(tmp_path, ["70.9", "71.0", "71.1"],
                   {"caltech101": ["93.7", "93.8", "93.9"], "eurosat": ["48.0", "50.0", "49.0"],
                    "imagenet_a": ["51.1", "51.2", "51.0"], "imagenetv2": ["64.3", "64.4", "64.2"]})
    _, out, _ = run([tmp_path, "--table", "--compare", "MMA"], capsys)
    cross, dg = out.split("\n\n")
    assert cross.splitlines()[0] == f"Cross-dataset | {TRAINER} | vit_b16_xd | 16 shots"
    rows = text_rows(cross)
    assert list(rows) == ["imagenet (source)", "caltech101", "eurosat", "Average*"]
    assert rows["imagenet (source)"] == ["71.00", "3", "71.00", "+0.00"]
    assert rows["eurosat"] == ["49.00", "3", "49.24", "-0.24"]
    assert rows["Average*"] == ["71.40", "71.52", "-0.12"]  # MMA's published mean over caltech101, eurosat
    assert dg.splitlines()[0] == f"Domain generalisation | {TRAINER} | vit_b16_xd | 16 shots"
    rows = text_rows(dg)
    assert list(rows) == ["imagenet (source)", "imagenetv2", "imagenet_a", "Average*"]
    assert rows["Average*"] == ["57.70", "57.73", "-0.03"]
    assert "(not run: imagenet_sketch, imagenet_r)" in dg


def test_mmrl_cross_dataset_layout_and_protocol_root(tmp_path, capsys):
    config = "vit_b16_cross_datasets"
    write_base2new(tmp_path, "imagenet", ["72.0"], [], config, "MMRL")
    write_log(base2new_folder(tmp_path, "test_new", "dtd", config, "MMRL") / "seed1", "45.9", "test")
    write_base2new(tmp_path, "dtd", ["85.0"], ["65.0"], "vit_b16", "MMRL")
    _, out, _ = run([tmp_path / "base2new", "--table"], capsys)
    titles = [line for line in out.splitlines() if " | MMRL | " in line]
    assert titles == ["Base-to-novel | MMRL | vit_b16 | 16 shots",
                      "Cross-dataset | MMRL | vit_b16_cross_datasets | 16 shots"]
    assert text_rows(out.split("\n\n")[1])["dtd"] == ["45.90", "1"]


def test_table_nothing_found(tmp_path, capsys):
    (tmp_path / "random" / "seed1").mkdir(parents=True)
    status, _, err = run([tmp_path, "--table"], capsys)
    assert status == 1
    assert "ignoring" in err and f"error: Nothing found in {tmp_path}" in err


def test_plot_without_matplotlib(tmp_path, capsys, monkeypatch):
    make_two_dataset_tree(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes "import matplotlib" fail
    status, _, err = run([tmp_path, "--table", "--plot", tmp_path / "plot.png"], capsys)
    assert status == 1
    assert "pip install matplotlib" in err
    assert not (tmp_path / "plot.png").exists()


def test_plot_with_matplotlib(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    make_two_dataset_tree(tmp_path)
    status, _, _ = run([tmp_path, "--table", "--compare", "MMA", "--plot", tmp_path / "plot.png"], capsys)
    assert status == 0
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_round_half_up_matches_paper_rounding():
    assert str(round_half_up(66.605)) == "66.61"
    assert str(round_half_up(60.474999999999994)) == "60.48"
    assert str(round_half_up(83.20363636363636)) == "83.20"
    assert str(round_half_up(np.float64(66.605))) == "66.61"  # numpy means too (their repr is not a number)
    assert harmonic_mean(85.68, 77.16) == pytest.approx(81.1971, abs=1e-4)


# ---------------------------------------------------------------------------
# Reproducing MMA's published averages from per-seed logs
# ---------------------------------------------------------------------------

def load_mma():
    return json.loads((REPO_ROOT / "results" / "published.json").read_text())["methods"]["MMA"]


def spread_over_seeds(published):
    """Three two-decimal seed values (old Dassl log format) whose mean is ``published``."""
    centre = Decimal(f"{published:.2f}")
    return [f"{centre + offset:.2f}" for offset in (Decimal("-0.10"), Decimal("0.00"), Decimal("0.10"))]


def write_mma_tree(root, ucf101_new):
    mma = load_mma()
    for dataset in BASE2NEW_DATASETS:
        entry = mma["base2new"][dataset]
        new = ucf101_new if dataset == "ucf101" else entry["new"]
        write_base2new(root, dataset, spread_over_seeds(entry["base"]), spread_over_seeds(new), config=None)
    targets = {name: spread_over_seeds(mma["cross_dataset"][name]["acc"]) for name in CROSS_DATASET_TARGETS}
    targets.update({name: spread_over_seeds(mma["domain_generalization"][name]["acc"]) for name in DG_TARGETS})
    write_transfer(root, spread_over_seeds(mma["cross_dataset"]["imagenet"]["acc"]), targets, config="vit_b16_ep1_xd")


def mma_tables(root):
    groups, _ = collect_groups(root)
    return {table.protocol: table for table in build_tables(groups)}


def displayed(metric):
    return format_number(metric.mean)


def test_mma_published_averages_reproduced(tmp_path):
    """MMA paper: B2N 83.20 / 76.80 / 79.87, cross-dataset 66.61, DG 60.48.

    The MMA table prints UCF101 New as 80.03, but then HM(86.23, 80.03) = 83.01 (printed 82.20)
    and the 11-dataset New mean is 76.94 (printed 76.80). Both printed numbers agree with a UCF101
    New of 78.53, so 80.03 is a typo (results.md 2.11, mma.md 14.2). This test uses 78.53; the
    next test shows what the printed value gives.
    """
    write_mma_tree(tmp_path, ucf101_new=78.53)
    tables = mma_tables(tmp_path)
    base2new = tables["base2new"]
    average = base2new.rows[-1]
    assert average.label == "Average"  # all 11 datasets complete, nothing flagged
    assert [displayed(average.metric(name)) for name in ("base", "new", "hm")] == ["83.20", "76.80", "79.87"]
    mean_of_hms = sum(row.metric("hm").mean for row in base2new.rows[:-1]) / 11
    assert f"{mean_of_hms:.2f}" == "79.72"  # the rule the paper did not use
    mma = load_mma()
    for row in base2new.rows[:-1]:
        published = mma["base2new"][row.dataset]
        assert displayed(row.metric("base")) == f"{published['base']:.2f}"
        assert row.metric("base").seeds == 3
        if row.dataset != "ucf101":
            assert displayed(row.metric("hm")) == f"{published['hm']:.2f}"
    assert displayed(base2new.rows[-2].metric("hm")) == "82.20"  # ucf101 with 78.53 gives the printed HM
    cross = tables["cross_dataset"]
    assert cross.rows[-1].label == "Average"
    assert displayed(cross.rows[0].metric("acc")) == "71.00"
    assert displayed(cross.rows[-1].metric("acc")) == "66.61"  # 66.605 rounded half up
    dg = tables["domain_generalization"]
    assert [row.dataset for row in dg.rows] == ["imagenet", *DG_TARGETS, "average"]
    assert displayed(dg.rows[-1].metric("acc")) == "60.48"  # 60.475 rounded half up


def test_mma_printed_ucf101_does_not_reproduce_average(tmp_path, capsys):
    """With the printed UCF101 New (80.03) the rule gives New 76.94 and HM 79.95, not 76.80 / 79.87."""
    write_mma_tree(tmp_path, ucf101_new=80.03)
    average = mma_tables(tmp_path)["base2new"].rows[-1]
    assert [displayed(average.metric(name)) for name in ("base", "new", "hm")] == ["83.20", "76.94", "79.95"]
    _, out, _ = run([tmp_path, "--table", "--compare", "MMA"], capsys)
    rows = text_rows(out)
    assert rows["ucf101"] == ["86.23", "3", "80.03", "3", "83.01", "86.23", "80.03", "82.20", "+0.00", "+0.00", "+0.81"]
    assert rows["Average"][3:] == ["83.20", "76.80", "79.87", "+0.00", "+0.14", "+0.08"]
    assert "MMA published, ucf101: New 80.03 as printed is most likely a typo" in out


# ---------------------------------------------------------------------------
# The published-numbers file
# ---------------------------------------------------------------------------

def published_methods():
    return json.loads((REPO_ROOT / "results" / "published.json").read_text())["methods"]


def test_published_file_has_required_methods():
    methods = published_methods()
    for name in ("MMA", "MMRL", "CLIP", "CLIP-Adapter", "CoOp", "CoCoOp", "MaPLe"):
        assert set(methods[name]["base2new"]) == set(BASE2NEW_DATASETS) | {"average"}
    assert methods["MMA"]["cross_dataset"]["average"]["acc"] == 66.61
    assert methods["MMRL"]["domain_generalization"]["average"]["acc"] == 60.59


def test_published_averages_follow_the_rules():
    """Per-dataset columns average to the published averages (except MMA's UCF101 typo)."""
    half_up = round_half_up
    for name, numbers in published_methods().items():
        rows = [numbers["base2new"][dataset] for dataset in BASE2NEW_DATASETS if dataset in numbers["base2new"]]
        average = numbers["base2new"].get("average")
        if len(rows) == 11:  # partial tables (e.g. MMRL++'s) have nothing to average
            base = sum(row["base"] for row in rows) / 11
            new = sum(row.get("new_implied", row["new"]) for row in rows) / 11
            assert float(half_up(base)) == average["base"], name
            assert float(half_up(new)) == average["new"], name
        if average is not None:
            assert float(half_up(harmonic_mean(average["base"], average["new"]))) == average["hm"], name
        for protocol, targets in (("cross_dataset", CROSS_DATASET_TARGETS),
                                  ("domain_generalization", DG_TARGETS)):
            block = numbers.get(protocol, {})
            if all(target in block for target in targets):
                mean = sum(block[target]["acc"] for target in targets) / len(targets)
                assert float(half_up(mean)) == block["average"]["acc"], (name, protocol)


def test_published_unverified_flags():
    """results.md: [R], [R-AC] and [U] numbers need a visible unverified flag unless a seed confirms them."""
    for name, numbers in published_methods().items():
        for protocol in ("base2new", "cross_dataset", "domain_generalization"):
            block = numbers.get(protocol, {})
            for dataset, entry in block.items():
                needs_flag = entry["confidence"] in ("R", "R-AC", "U") and "confirmed_by" not in entry
                if entry["confidence"] == "C" and protocol != "base2new":
                    # an average computed from the per-target values inherits their flag
                    needs_flag = any(other.get("unverified", False) for other in block.values() if other is not entry)
                assert entry.get("unverified", False) == needs_flag, (name, protocol, dataset)


# ---------------------------------------------------------------------------
# What the parser believes (run integrity)
# ---------------------------------------------------------------------------

def test_out_of_range_and_non_finite_accuracies_are_rejected_naming_the_file(tmp_path, capsys):
    write_log(tmp_path / "seed1", "250.0")
    write_log(tmp_path / "seed2", "1e999")
    write_log(tmp_path / "seed3", "inf")
    write_log(tmp_path / "seed4", "70.0", after=["note: * accuracy: 99.0% is not a result line"])
    status, out, err = run([tmp_path], capsys)
    assert status == 0
    assert f"file: {tmp_path}/seed4/log.txt. accuracy: 70.00%. " in out and "seed1" not in out
    for seed, value in ((1, "250.0"), (2, "1e999"), (3, "inf")):
        assert f"warning: ignoring '* accuracy: {value}%' in {tmp_path}/seed{seed}/log.txt" in err
    saved = (tmp_path / ".parse.txt").read_text()
    assert "ignoring '* accuracy: 250.0%'" in saved and "* accuracy: 70.00% +- 0.00%" in saved
    # table mode: the rejected values leave the cells unfinished instead of entering the averages
    write_base2new(tmp_path / "tree", "dtd", ["250.0", "80.0"], ["1e999", "60.0"])
    status, out, err = run([tmp_path / "tree", "--table"], capsys)
    assert status == 0 and text_rows(out)["dtd"][:4] == ["80.00", "1/2", "60.00", "1/2"]
    assert "1e999" in err


def test_compare_averages_the_published_numbers_over_the_datasets_run(tmp_path, capsys):
    write_base2new(tmp_path, "caltech101", ["90.0"], ["89.0"])
    write_base2new(tmp_path, "eurosat", ["80.0"], ["70.0"])
    _, out, _ = run([tmp_path, "--table", "--compare", "MMA"], capsys)
    rows = text_rows(out)
    assert rows["Average*"][3:6] == ["91.93", "88.17", "90.01"]  # not MMA's 11-dataset 83.20 / 76.80 / 79.87
    assert "MMA published average over the 2 datasets run here (caltech101, eurosat)" in out


def test_compare_marks_another_shot_count_or_backbone(tmp_path, capsys):
    write_base2new(tmp_path, "dtd", ["80.0"], ["60.0"])
    for folder in (base2new_folder(tmp_path, "train_base", "dtd", "vit_b16_ep5") / "seed1",
                   base2new_folder(tmp_path, "test_new", "dtd", "vit_b16_ep5") / "seed1"):
        (folder / "run.json").write_text(json.dumps({"run_id": "x", "config_hash": "h",
                                                     "identity": {"MODEL.BACKBONE.NAME": "test-tiny"}}))
        (folder / "finished.json").write_text(json.dumps({"run_id": "x", "config_hash": "h"}))
    _, out, _ = run([tmp_path, "--table", "--compare", "MMA"], capsys)
    assert text_rows(out)["dtd"][5] == "83.20†"
    assert "† not comparable: these runs use backbone test-tiny (published: ViT-B/16)" in out
    write_base2new(tmp_path / "two", "dtd", ["80.0"], ["60.0"])
    (tmp_path / "two" / "base2new" / "train_base" / "dtd" / "shots_16").rename(
        tmp_path / "two" / "base2new" / "train_base" / "dtd" / "shots_2")
    (tmp_path / "two" / "base2new" / "test_new" / "dtd" / "shots_16").rename(
        tmp_path / "two" / "base2new" / "test_new" / "dtd" / "shots_2")
    _, out, _ = run([tmp_path / "two", "--table", "--compare", "MMA"], capsys)
    assert "† not comparable: these runs use 2 shots (published: 16)" in out


def test_tables_count_only_finished_runs(tmp_path, capsys):
    """A run with a record but no finished marker (killed, or still running) is not counted."""
    write_base2new(tmp_path, "dtd", ["80.0", "90.0"], ["60.0", "60.0"])
    seed2 = base2new_folder(tmp_path, "train_base", "dtd", "vit_b16_ep5") / "seed2"
    (seed2 / "run.json").write_text(json.dumps({"run_id": "x", "config_hash": "h", "identity": {}}))
    _, out, _ = run([tmp_path, "--table"], capsys)
    assert text_rows(out)["dtd"][:2] == ["80.00", "1/2"]
    assert "seed2/log.txt: unfinished (no finished.json): resume it" in out or \
        "seed2: unfinished (no finished.json): resume it" in out


# ---------------------------------------------------------------------------
# Few-shot tables, eval-only runs in training layouts (zero-shot CLIP)
# ---------------------------------------------------------------------------

def write_record(folder, kind):
    """The run record and finished marker train.py writes (harness/run.py)."""
    (folder / "run.json").write_text(json.dumps({"run_id": "r", "kind": kind, "config_hash": "h", "identity": {}}))
    (folder / "finished.json").write_text(json.dumps({"run_id": "r", "config_hash": "h"}))


def write_fewshot(root, dataset, shots, values, config="vit_b16_few_shot", trainer="MMRL"):
    for seed, value in enumerate(values, 1):
        if value is not None:
            write_log(Path(root, "few_shot", dataset, f"shots_{shots}", trainer, config, f"seed{seed}"), value)


def make_fewshot_tree(root):
    write_fewshot(root, "eurosat", 1, ["60.0", "62.0"])
    write_fewshot(root, "eurosat", 2, ["70.0", None])
    write_fewshot(root, "imagenet", 1, ["50.0", "52.0"], "vit_b16_imagenet")  # MMRL's ImageNet config
    write_fewshot(root, "imagenet", 2, ["55.0", "57.0"], "vit_b16_imagenet")


def test_fewshot_table_per_shot_count_with_average(tmp_path, capsys):
    make_fewshot_tree(tmp_path)
    status, out, _ = run([tmp_path, "--table", "--compare", "MMRL"], capsys)
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == "Few-shot | MMRL | vit_b16_few_shot (imagenet: vit_b16_imagenet)"
    assert lines[1].split() == ["Dataset", "1-shot", "n", "2-shot", "n"]  # no published few-shot numbers
    rows = text_rows(out)
    assert rows["imagenet"] == ["51.00", "2", "56.00", "2"]
    assert rows["eurosat"] == ["61.00", "2", "70.00", "1/2"]
    assert rows["Average*"] == ["56.00", "56.00"]  # 2 shots: only ImageNet is complete
    assert "1-shot: * Average over 2 of 11 datasets (not run: caltech101," in out
    assert "2-shot: * Average over 1 of 11 datasets (incomplete: eurosat; not run: caltech101," in out
    assert "missing: 1 run" in out and "few_shot/eurosat/shots_2/MMRL/vit_b16_few_shot/seed2: no such folder" in out


def test_fewshot_csv_has_one_line_per_dataset_and_shot_count(tmp_path, capsys):
    make_fewshot_tree(tmp_path)
    _, out, _ = run([tmp_path, "--table", "--format", "csv"], capsys)
    records = [r for r in csv.DictReader(io.StringIO(out)) if r["protocol"] == "few_shot"]
    by_key = {(r["dataset"], r["shots"]): r for r in records}
    assert set(by_key) == {(d, k) for d in ("imagenet", "eurosat", "average") for k in ("1", "2")}
    assert by_key["eurosat", "2"]["mean"] == "70.00" and by_key["eurosat", "2"]["seeds"] == "1"
    assert {r["metric"] for r in records} == {"acc"} and by_key["average", "1"]["mean"] == "56.00"


def test_fewshot_curve_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    make_fewshot_tree(tmp_path)
    status, _, _ = run([tmp_path, "--table", "--plot", tmp_path / "curve.png"], capsys)
    assert status == 0 and (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_eval_only_runs_in_training_layouts_are_read_from_their_record(tmp_path, capsys):
    """Zero-shot CLIP (scripts/benchmark.py): base-class and ImageNet-source evaluations, whose logs
    end with '=> result' (no 'Finish training'), in base2new/test_base and imagenet/."""
    for step, value in (("test_base", "70.0"), ("test_new", "74.0")):
        folder = base2new_folder(tmp_path, step, "dtd", "vit_b16", "ZeroshotCLIP") / "seed1"
        write_log(folder, value, "test")
        write_record(folder, "test")
    source = Path(tmp_path, "imagenet", "ZeroshotCLIP", "vit_b16_16shots", "seed1")
    write_log(source, "66.7", "test")
    write_record(source, "test")
    write_log(Path(tmp_path, "evaluation", "ZeroshotCLIP", "vit_b16_16shots", "dtd", "seed1"), "44.0", "test")
    _, out, _ = run([tmp_path, "--table"], capsys)
    b2n, cross = out.split("\n\n")[:2]
    assert b2n.splitlines()[0] == "Base-to-novel | ZeroshotCLIP | vit_b16 | 16 shots"
    assert text_rows(b2n)["dtd"] == ["70.00", "1", "74.00", "1", "71.94"]
    assert text_rows(cross)["imagenet (source)"] == ["66.70", "1"]
