"""``parse_test_res.py --table --summary`` (the methods side by side per protocol) and ``--plot`` (one
comparison figure per protocol), on faked output trees (log files only, as in test_parse_test_res.py)."""
import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from test_parse_test_res import REPO_ROOT, run, write_base2new, write_log, write_transfer

from harness.tables import (SUMMARY_CSV_COLUMNS, collect_groups, comparison_figures, format_number, harmonic_mean,
                            load_published, summary_report)

MMA, COOP = "MultiModalAdapter", "CoOp"


def make_two_method_tree(root):
    """MMA and CoOp on caltech101 and dtd, 2 seeds; CoOp's dtd new-class seed 2 did not run."""
    write_base2new(root, "caltech101", ["95.0", "95.4"], ["93.0", "94.0"], "vit_b16_ep5", MMA)
    write_base2new(root, "dtd", ["83.2", "83.4"], ["65.0", "66.0"], "vit_b16_ep5", MMA)
    write_base2new(root, "caltech101", ["96.0", "96.2"], ["92.0", "92.4"], "vit_b16_ctxv1", COOP)
    write_base2new(root, "dtd", ["80.0", "81.0"], ["55.0", None], "vit_b16_ctxv1", COOP)


def hm_text(base, new):
    return str(format_number(harmonic_mean(base, new)))


def table_block(output, title):
    """The lines of the summary titled ``title`` (up to the next blank line)."""
    lines = output.splitlines()
    start = lines.index(title)
    end = lines.index("", start) if "" in lines[start:] else len(lines)
    return lines[start:end]


def test_base2new_summary_text(tmp_path, capsys):
    make_two_method_tree(tmp_path)
    status, out, _ = run([tmp_path, "--table", "--summary"], capsys)
    assert status == 0
    block = table_block(out, "Base-to-novel summary | 16 shots")
    assert block[1].split() == [COOP, MMA]  # the column groups, methods in name order
    assert block[2].split() == ["Dataset"] + ["Base", "New", "HM"] * 2
    rows = {cells[0]: cells[1:] for cells in (re.split(r"\s{2,}", line.strip()) for line in block[4:7])}
    assert rows["caltech101"] == ["96.10", "92.20", hm_text(96.1, 92.2), "95.20", "93.50", hm_text(95.2, 93.5)]
    # CoOp's dtd New is one seed of two: marked; MMA's averages cover both datasets, CoOp's only caltech101
    assert rows["dtd"] == ["80.50", "55.00 (1/2)", hm_text(80.5, 55.0), "83.30", "65.50", hm_text(83.3, 65.5)]
    assert rows["Average"] == ["96.10*", "92.20*", hm_text(96.1, 92.2) + "*",
                               "89.25*", "79.50*", hm_text(89.25, 79.5) + "*"]  # 2 of the 11 datasets run
    notes = block[7:]
    assert any(note.startswith("Base / New: accuracy (%)") and "HM: harmonic mean" in note for note in notes)
    assert "(k/n): only k of the method's n seeds finished for this cell; --: no finished run" in notes
    assert f"methods: {COOP}: config vit_b16_ctxv1, n = 2; {MMA}: config vit_b16_ep5, n = 2" in notes
    assert any(note.startswith(f"* {COOP}: Average over 1 of 11 datasets (incomplete: dtd; not run: imagenet")
               for note in notes)
    assert any(note.startswith(f"* {MMA}: Average over 2 of 11 datasets (not run: imagenet") for note in notes)
    assert f"the averages cover different datasets ({COOP}: 1, {MMA}: 2): compare them with care" in notes
    assert notes[-1].startswith(f"incomplete or not run: {COOP} (1 of 4 cells)")


def test_base2new_summary_std_and_markdown(tmp_path, capsys):
    make_two_method_tree(tmp_path)
    _, out, _ = run([tmp_path, "--table", "--summary", "--format", "markdown", "--std"], capsys)
    lines = out.splitlines()
    assert lines[0] == "### Base-to-novel summary | 16 shots"
    header = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert header == ["Dataset", "Base (CoOp)", "New (CoOp)", "HM (CoOp)", f"Base ({MMA})", f"New ({MMA})",
                      f"HM ({MMA})"]
    rows = {cells[0]: cells[1:] for cells in ([cell.strip() for cell in line.strip("|").split("|")]
                                              for line in lines[4:7])}
    assert rows["dtd"][:2] == ["80.50 ± 0.50", "55.00 ± 0.00 (1/2)"]
    assert rows["caltech101"][3:5] == ["95.20 ± 0.20", "93.50 ± 0.50"]
    assert rows["Average"][0] == "96.10\\*"  # escaped for Markdown
    assert "- ±: population standard deviation over seeds" in lines
    assert any(line.startswith(f"- \\* {COOP}: Average over 1 of 11 datasets") for line in lines)


def test_base2new_summary_csv(tmp_path, capsys):
    make_two_method_tree(tmp_path)
    _, out, _ = run([tmp_path, "--table", "--summary", "--format", "csv"], capsys)
    reader = csv.DictReader(io.StringIO(out))
    records = list(reader)
    assert tuple(reader.fieldnames) == SUMMARY_CSV_COLUMNS
    assert len(records) == 2 * 3 * 3  # methods x (2 datasets + average) x (base, new, hm)
    by_key = {(r["dataset"], r["method"], r["metric"]): r for r in records}
    partial = by_key["dtd", COOP, "new"]
    assert (partial["mean"], partial["std"], partial["seeds"], partial["expected_seeds"], partial["complete"]) == (
        "55.00", "0.00", "1", "2", "0")
    full = by_key["caltech101", MMA, "new"]
    assert (full["mean"], full["std"], full["seeds"], full["complete"], full["config"]) == (
        "93.50", "0.50", "2", "1", "vit_b16_ep5")
    assert by_key["average", MMA, "hm"]["mean"] == hm_text(89.25, 79.5)
    assert by_key["average", COOP, "base"]["complete"] == "0"  # over 1 of the 2 datasets run
    assert {r["protocol"] for r in records} == {"base2new"} and {r["shots"] for r in records} == {"16"}
    # the frame pandas users want: one number per (dataset, method, metric)
    assert len(by_key) == len(records)


def test_fewshot_and_transfer_summaries(tmp_path, capsys):
    """Few-shot: one summary per shot count, rows only where a method has a result; transfer: the
    source row first, the average over the targets."""
    for shots, base in ((1, 40), (2, 50)):
        for seed in (1, 2):
            write_log(tmp_path / f"few_shot/dtd/shots_{shots}/{COOP}/vit_b16/seed{seed}", str(base + seed))
            write_log(tmp_path / f"few_shot/dtd/shots_{shots}/{MMA}/vit_b16_ep5/seed{seed}", str(base + 5 + seed))
        write_log(tmp_path / f"few_shot/eurosat/shots_{shots}/{COOP}/vit_b16/seed1", str(base + 20))
    write_log(tmp_path / f"few_shot/eurosat/shots_1/{COOP}/vit_b16/seed2", "60.0")
    write_transfer(tmp_path, ["70.0", "71.0"], {"caltech101": ["93.0", "94.0"], "eurosat": ["50.0", "52.0"]},
                   trainer=MMA)
    _, out, _ = run([tmp_path, "--table", "--summary"], capsys)
    one = table_block(out, "Few-shot summary | 1 shot")
    assert one[1].split() == ["Dataset", COOP, MMA]
    assert one[3].split() == ["dtd", "41.50", "46.50"] and one[4].split() == ["eurosat", "60.00", "--"]
    assert one[5].split() == ["Average", "50.75*", "46.50*"]
    two = table_block(out, "Few-shot summary | 2 shots")
    assert two[4].split() == ["eurosat", "70.00", "(1/2)", "--"]  # seed 2 of CoOp's 2-shot eurosat missing
    cross = table_block(out, "Cross-dataset summary | 16 shots")
    assert [re.split(r"\s{2,}", line.strip()) for line in cross[3:7]] == [
        ["imagenet (source)", "70.50"], ["caltech101", "93.50"], ["eurosat", "51.00"], ["Average", "72.25*"]]
    assert out.index("Cross-dataset summary") < out.index("Few-shot summary | 1 shot") < out.index("| 2 shots")


def test_two_configs_of_one_trainer_are_two_methods(tmp_path, capsys):
    write_base2new(tmp_path, "dtd", ["80.0", "82.0"], ["60.0", "62.0"], "vit_b16_ep5", MMA)
    write_base2new(tmp_path, "dtd", ["81.0", "83.0"], ["64.0", "66.0"], "vit_b16_paper", MMA)
    _, out, _ = run([tmp_path, "--table", "--summary", "--format", "csv"], capsys)
    methods = {(r["method"], r["config"]) for r in csv.DictReader(io.StringIO(out))}
    assert methods == {(f"{MMA} (vit_b16_ep5)", "vit_b16_ep5"), (f"{MMA} (vit_b16_paper)", "vit_b16_paper")}


def test_summary_options_are_checked(tmp_path, capsys):
    make_two_method_tree(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run([tmp_path, "--summary"], capsys)
    assert exit_info.value.code == 2 and "--summary requires --table" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        run([tmp_path, "--table", "--summary", "--compare", "MMA"], capsys)
    assert exit_info.value.code == 2 and "--compare cannot be used with --summary" in capsys.readouterr().err


def test_per_trainer_tables_explain_n(tmp_path, capsys):
    make_two_method_tree(tmp_path)
    _, out, _ = run([tmp_path, "--table"], capsys)
    legend = "n: seeds averaged for the number on its left (k/N: only k of the N seeds found finished)"
    assert out.count(legend) == 2  # under each trainer's table


# ---------------------------------------------------------------------------
# --plot
# ---------------------------------------------------------------------------

def published_numbers():
    return json.loads((REPO_ROOT / "results" / "published.json").read_text())["methods"]


def test_base2new_figure_content(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.container import BarContainer

    make_two_method_tree(tmp_path)
    groups, _ = collect_groups(tmp_path)
    [(suffix, figure)] = comparison_figures(summary_report(groups, load_published()))
    assert suffix == "base2new"
    axes = figure.get_axes()
    assert [axis.get_ylabel() for axis in axes] == ["Base (%)", "New (%)", "HM (%)"]
    assert [label.get_text() for label in axes[-1].get_xticklabels()] == ["caltech101", "dtd", "Average"]
    width, height = figure.get_size_inches()
    assert width <= 18 and height <= 10
    base_axis = axes[0]
    bars = [container for container in base_axis.containers if isinstance(container, BarContainer)]
    assert [container.get_label() for container in bars] == [COOP, MMA]
    coop_bars = bars[0]
    assert [bar.get_height() for bar in coop_bars] == pytest.approx([96.1, 80.5, 96.1])
    # error bars: mean ± population std over seeds per dataset; none for the average
    segments = coop_bars.errorbar.lines[2][0].get_segments()
    assert [tuple(np.round(segment[:, 1], 4)) for segment in segments if len(segment)] == [(96.0, 96.2), (80.0, 81.0)]
    # MMA's New on dtd is complete, CoOp's is one seed of two: hatched; so are averages over 2 of 11 datasets
    new_bars = [container for container in axes[1].containers if isinstance(container, BarContainer)]
    assert [bool(bar.get_hatch()) for bar in new_bars[0]] == [False, True, True]
    assert [bool(bar.get_hatch()) for bar in new_bars[1]] == [False, False, True]
    # the methods' own published numbers (results/published.json) as markers
    published = published_numbers()
    markers = [collection for collection in base_axis.collections if collection.get_label().startswith("published")]
    points = sorted(tuple(np.round(offset, 2)) for marker in markers for offset in marker.get_offsets())
    expected = []
    for method, trainer_position in (("CoOp", 0), ("MMA", 1)):
        entries = published[method]["base2new"]
        for index, dataset in enumerate(("caltech101", "dtd")):
            expected.append((round(index + (trainer_position - 0.5) * 0.4, 2), entries[dataset]["base"]))
    mma_average = float(format_number(float(np.mean([published["MMA"]["base2new"][d]["base"] for d in ("caltech101", "dtd")]))))
    coop_caltech = published["CoOp"]["base2new"]["caltech101"]["base"]  # CoOp's average covers caltech101 only
    expected += [(round(2 - 0.2, 2), coop_caltech), (round(2 + 0.2, 2), mma_average)]
    assert points == sorted(expected)
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert legend == ["published (paper)", COOP, MMA, "hatched: not all seeds / datasets"]


def test_plot_writes_one_file_per_protocol(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    make_two_method_tree(tmp_path)
    write_transfer(tmp_path, ["70.0", "71.0"], {"caltech101": ["93.0", "94.0"], "imagenetv2": ["64", "65"]},
                   trainer=MMA)
    status, _, err = run([tmp_path, "--table", "--summary", "--plot", tmp_path / "out.png"], capsys)
    assert status == 0
    written = [tmp_path / f"out_{name}.png" for name in ("base2new", "cross_dataset", "domain_generalization")]
    assert err.splitlines() == [f"wrote {path}" for path in written]
    assert all(path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for path in written)
    assert not (tmp_path / "out.png").exists()


def test_fewshot_figure_content(tmp_path):
    pytest.importorskip("matplotlib")
    for shots, base in ((1, 40), (2, 50), (4, 60)):
        for seed in (1, 2):
            write_log(tmp_path / f"few_shot/dtd/shots_{shots}/{COOP}/vit_b16/seed{seed}", str(base + seed))
            write_log(tmp_path / f"few_shot/eurosat/shots_{shots}/{MMA}/vit_b16_ep5/seed{seed}", str(base + 2 * seed))
    groups, _ = collect_groups(tmp_path)
    [(suffix, figure)] = comparison_figures(summary_report(groups))
    assert suffix == "few_shot"
    visible = [axis for axis in figure.get_axes() if axis.get_visible()]
    assert [axis.get_title() for axis in visible] == ["dtd", "eurosat", "Average"]
    [dtd_curve] = visible[0].containers  # one ErrorbarContainer per method with results there
    assert dtd_curve.get_label() == COOP
    data_line = dtd_curve.lines[0]
    assert list(data_line.get_xdata()) == [1, 2, 4] and list(data_line.get_ydata()) == [41.5, 51.5, 61.5]
    [eurosat_curve] = visible[1].containers
    assert eurosat_curve.get_label() == MMA
    spans = [tuple(segment[:, 1]) for segment in eurosat_curve.lines[2][0].get_segments()]
    assert spans == [(42.0, 44.0), (52.0, 54.0), (62.0, 64.0)]  # mean 43 ± population std 1, ...
    assert [curve.get_label() for curve in visible[2].containers] == [COOP, MMA]


@pytest.mark.parametrize("name, message", [("missing/out.png", "folder"), ("out.xyz", "unknown image type")])
def test_bad_plot_path_fails_before_reading(tmp_path, capsys, name, message):
    pytest.importorskip("matplotlib")
    make_two_method_tree(tmp_path)
    status, out, err = run([tmp_path, "--table", "--plot", tmp_path / name], capsys)
    assert status == 1 and out == ""
    assert err.strip().splitlines() == [line for line in err.strip().splitlines() if line.startswith("error: --plot")]
    assert message in err and str(Path(tmp_path / name)) in err
