"""Protocol scripts called without their arguments print one usage line (exit 2), never a bash error."""
import glob
import os.path as osp
import re
import subprocess

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SCRIPTS = sorted(osp.relpath(p, REPO) for p in glob.glob(osp.join(REPO, "scripts", "*", "*.sh")))


def documented_usage(path):
    """The arguments named in the script's header comment (``#   bash scripts/x/y.sh ARGS``)."""
    with open(osp.join(REPO, path)) as f:
        header = f.read().split("source ")[0]
    match = re.search(r"(?:bash scripts/\S+|zeroshot\.sh) ([A-Z\[][A-Z_ \[\]]*[A-Z\]])", header)
    return match.group(1)


@pytest.mark.parametrize("path", SCRIPTS)
def test_script_without_arguments_prints_its_usage(path, tmp_path):
    proc = subprocess.run(["bash", path], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "OUTPUT": str(tmp_path)})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [f"usage: bash {path} {documented_usage(path)}"]
    assert proc.stdout == "" and not osp.exists(osp.join(tmp_path, "base2new"))
    helped = subprocess.run(["bash", path, "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and helped.stdout.startswith(f"usage: bash {path} ")
