"""Shared fixtures. Dataset layer: a miniature data root and an image corrupter."""
import os

import pytest
import torch

# Tests use miniature models: one thread is as fast as two there, and immune to a busy machine
# (OpenMP threads oversubscribing a loaded CPU slow small ops down by 10-50x).
torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def session_eval_cache_dir(tmp_path_factory):
    """The eval cache (trainers/common/eval_inputs.py) of module- and session-scoped fixtures: never the user's."""
    from harness.disk_cache import ENV_VAR

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ENV_VAR, str(tmp_path_factory.mktemp("eval_cache_session")))
        yield


@pytest.fixture(autouse=True)
def eval_cache_dir(tmp_path_factory, monkeypatch):
    """Each test gets an empty eval cache of its own."""
    from harness.disk_cache import ENV_VAR

    directory = tmp_path_factory.mktemp("eval_cache")
    monkeypatch.setenv(ENV_VAR, str(directory))
    return str(directory)


@pytest.fixture(scope="session")
def mini_root(tmp_path_factory):
    """Miniature copies of all 15 datasets (``python -m datasets.mini``), built once per session.

    Treat it as read-mostly: tests that delete or edit files should build their own copy.
    """
    from datasets.mini import build

    root = tmp_path_factory.mktemp("mini_data")
    build(str(root), verbose=False)
    return str(root)


@pytest.fixture
def corrupt_image():
    """A function that overwrites an image file with bytes no image decoder accepts."""

    def corrupt(path):
        if os.path.exists(path):
            os.remove(path)  # a new file: never write through a hard link into shared data
        with open(path, "wb") as f:
            f.write(b"this is not an image file")
        return path

    return corrupt
