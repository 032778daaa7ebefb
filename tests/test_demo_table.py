"""scripts/demo_table.py: zero-shot CLIP beside each trained model, from the base-to-novel layout."""
import importlib.util
import os.path as osp

import pytest

from test_parse_test_res import base2new_folder, write_base2new, write_log

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("demo_table", osp.join(REPO, "scripts", "demo_table.py"))
demo_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo_table)


def write_zero_shot(root, dataset, base, new):
    """ZeroshotCLIP's eval-only runs of the benchmark (``test_base`` and ``test_new``, seed 1)."""
    for step, value in (("test_base", base), ("test_new", new)):
        write_log(base2new_folder(root, step, dataset, "vit_b16", "ZeroshotCLIP", shots=8) / "seed1", value, "test")


def test_rows_pair_each_trained_model_with_zero_shot(tmp_path, capsys):
    write_zero_shot(tmp_path, "dtd", "60.0", "70.0")
    write_base2new(tmp_path, "dtd", ["70.0", "74.0"], ["66.0", "68.0"], trainer="MMRL", config="vit_b16")
    for seed, value in ((1, "50.0"), (2, "52.0")):  # another dataset with no zero-shot run
        write_log(base2new_folder(tmp_path, "train_base", "eurosat", "vit_b16", "MMRL") / f"seed{seed}", value)
    (dtd, trainer, shots, zs, trained), (eurosat, *_, zs_eurosat, _) = demo_table.rows(str(tmp_path))
    assert (dtd, trainer, shots, eurosat) == ("dtd", "MMRL", 16, "eurosat")
    assert zs == pytest.approx((60.0, 70.0, 2 * 60 * 70 / 130))
    assert trained == pytest.approx((72.0, 67.0, 2 * 72 * 67 / 139))
    assert zs_eurosat == (None, None, None)
    assert demo_table.main([str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["Dataset", "Trainer", "Shots", "ZS", "Base", "ZS", "New", "ZS", "HM", "Base", "New",
                                "HM", "dBase", "dNew"]
    assert lines[1].split()[-2:] == ["+12.0", "-3.0"] and lines[2].split()[3:6] == ["--"] * 3


def test_nothing_to_show_is_one_error_line(tmp_path, capsys):
    assert demo_table.main([str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == f"error: no base-to-novel runs under {tmp_path}"
