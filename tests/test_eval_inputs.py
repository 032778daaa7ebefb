"""The eval cache (trainers/common/eval_inputs.py, harness/disk_cache.py): cached frozen image features and
preprocessed test images equal the direct path, keys change with weights, transform and split, entries
are never read partially under concurrent writers, and the size cap evicts the least recently used."""
import multiprocessing
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

import toy
from harness.disk_cache import HEADER_BYTES, DiskCache, key_digest
from harness.run import config_identity
from prompt_learning import REPO, build, no_env_report, trainer_args  # noqa: F401 (autouse fixture)
from trainers.common.feature_cache import sequential_loader
from trainers.common.eval_images import CachedImageLoader
from trainers.common.eval_inputs import (
    CachedFeatureLoader, FrozenImageFeatures, cache_entry, clip_image_features, weights_digest,
)

FP32 = {"CLIP_Adapter": [], "AttnMMAdapter": [], "ZeroshotCLIP": [], "CoOp": [], "CoCoOp": [],
        "MultiModalAdapter": ["TRAINER.MMADAPTER.PREC", "fp32"], "MMRL": ["TRAINER.MMRL.PREC", "fp32"]}
CONFIGS = {"ZeroshotCLIP": "vit_b16", "CLIP_Adapter": "vit_b16", "CoOp": "vit_b16_ctxv1",
           "CoCoOp": "vit_b16_c4_ep10_batch1", "AttnMMAdapter": "vit_b16", "MultiModalAdapter": "vit_b16_ep5",
           "MMRL": "vit_b16"}


@pytest.fixture(scope="module")
def photo_root(tmp_path_factory):
    """The toy dataset with textured images of different sizes, JPEG and PNG, RGB and greyscale."""
    root = toy.make_toy_root(str(tmp_path_factory.mktemp("photos")), per_class=4, num_classes=4)
    rng = np.random.default_rng(0)
    for folder, _, files in sorted(os.walk(osp.join(root, "toy"))):
        for i, name in enumerate(sorted(files)):
            height, width = (int(v) for v in rng.integers(30, 300, size=2))
            shape = (height, width) if i == 3 else (height, width, 3)
            image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
            image.save(osp.join(folder, name), format="JPEG" if i % 2 else "PNG")
    return root


def make(trainer, root, out, *opts):
    args = trainer_args(trainer, CONFIGS[trainer], root, out, "DATALOADER.TEST.BATCH_SIZE", "3",
                        *FP32[trainer], *opts)
    return build(args)[0]


def logits_by_batch(trainer, loader):
    trainer.set_model_mode("eval")
    out = []
    with torch.no_grad():
        for batch in loader:
            inputs, labels = trainer.parse_batch_test(batch)
            out.append((batch["index"], labels, trainer.model_inference(inputs)))
    return out


def assert_same_logits(cached, direct):
    assert len(cached) == len(direct) > 1
    for (index_c, label_c, logits_c), (index_d, label_d, logits_d) in zip(cached, direct):
        assert torch.equal(index_c, index_d) and torch.equal(label_c, label_d)
        torch.testing.assert_close(logits_c, logits_d, atol=1e-5, rtol=0)


def entries(cache_dir, kind):
    folder = osp.join(cache_dir, kind)
    return sorted(os.listdir(folder)) if osp.isdir(folder) else []


# ---------------------------------------------------------------------------------------------
# Frozen image features
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["ZeroshotCLIP", "CLIP_Adapter", "CoOp", "CoCoOp", "AttnMMAdapter"])
def test_cached_features_give_the_direct_logits(name, photo_root, tmp_path, eval_cache_dir, capsys):
    trainer = make(name, photo_root, tmp_path / "a")
    assert isinstance(trainer.test_loader, CachedFeatureLoader)
    direct = logits_by_batch(trainer, trainer.dm.test_loader)
    assert_same_logits(logits_by_batch(trainer, trainer.test_loader), direct)  # computed and stored
    assert "computed for 8 images, stored in the eval cache" in capsys.readouterr().out
    assert len(entries(eval_cache_dir, "features")) == 1

    again = make(name, photo_root, tmp_path / "b")  # another run: same seed, same weights
    assert_same_logits(logits_by_batch(again, again.test_loader), direct)  # read from disk
    assert "Test image features: 8 images from the eval cache" in capsys.readouterr().out
    assert len(entries(eval_cache_dir, "features")) == 1


def test_methods_share_entries_and_test_accuracy_is_unchanged(photo_root, tmp_path, eval_cache_dir, capsys):
    zs = make("ZeroshotCLIP", photo_root, tmp_path / "zs")
    coop = make("CoOp", photo_root, tmp_path / "coop")
    coop.model.clip_model.load_state_dict(zs.clip_model.state_dict())  # the same CLIP
    direct = make("ZeroshotCLIP", photo_root, tmp_path / "off", "EVAL_CACHE.FEATURES", "False")
    direct.clip_model.load_state_dict(zs.clip_model.state_dict())
    assert not isinstance(direct.test_loader, CachedFeatureLoader)
    assert zs.test() == direct.test()
    coop.test()
    assert "Test image features: 8 images from the eval cache" in capsys.readouterr().out
    assert len(entries(eval_cache_dir, "features")) == 1  # ZeroshotCLIP's features served CoOp
    # The switch cannot change results, so it is not part of a run's identity.
    assert not any(key.startswith("EVAL_CACHE.") for key in config_identity(zs.cfg))


def test_feature_key_changes_with_weights_transform_and_split(photo_root, tmp_path):
    trainer = make("ZeroshotCLIP", photo_root, tmp_path / "a")
    clip_model = trainer.clip_model

    def key(t, loader=None, split="test"):
        source = FrozenImageFeatures(t, lambda x: clip_image_features(t.clip_model, x), t.clip_model.visual,
                                     "encoder", None)
        return key_digest(source.key_fields(split, loader or t.dm.test_loader))

    base = key(trainer)
    assert key(make("ZeroshotCLIP", photo_root, tmp_path / "b")) == base  # same run again: same key
    assert key(trainer, split="val") != base
    assert key(make("ZeroshotCLIP", photo_root, tmp_path / "c", "INPUT.INTERPOLATION", "bilinear")) != base
    items = trainer.dm.dataset.test
    assert key(trainer, sequential_loader(trainer.cfg, items[:-1], trainer.dm.tfm_test, batch_size=3)) != base
    assert key(trainer, sequential_loader(trainer.cfg, items, trainer.dm.tfm_test, batch_size=3)) == base
    assert key(make("ZeroshotCLIP", photo_root, tmp_path / "e", "DATALOADER.TEST.BATCH_SIZE", "5")) != base
    before = weights_digest(clip_model.visual)
    saved = {k: v.clone() for k, v in clip_model.visual.state_dict().items()}
    with torch.no_grad():
        clip_model.visual.proj[0, 0] += 1e-3
    assert weights_digest(clip_model.visual) != before and key(trainer) != base
    clip_model.visual.load_state_dict(saved)
    clip_model.visual.half()  # a precision cast is a different encoder
    assert weights_digest(clip_model.visual) != before
    clip_model.visual.float()
    clip_model.visual.load_state_dict(saved)
    assert weights_digest(clip_model.visual) == before and key(trainer) == base
    image = trainer.dm.dataset.test[0].impath
    os.utime(image, ns=(1, 1))  # a replaced image file
    assert key(trainer) != base


def test_changed_weights_are_recomputed(photo_root, tmp_path, eval_cache_dir):
    first = make("CLIP_Adapter", photo_root, tmp_path / "a")
    logits_by_batch(first, first.test_loader)
    second = make("CLIP_Adapter", photo_root, tmp_path / "b")
    with torch.no_grad():
        second.model.clip_model.visual.conv1.weight.mul_(1.5)
    assert_same_logits(logits_by_batch(second, second.test_loader), logits_by_batch(second, second.dm.test_loader))
    assert len(entries(eval_cache_dir, "features")) == 2


# ---------------------------------------------------------------------------------------------
# Preprocessed test images
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("workers", ["0", "1"])
def test_preprocessed_images_are_the_direct_tensors(photo_root, tmp_path, eval_cache_dir, workers):
    trainer = make("MultiModalAdapter", photo_root, tmp_path / "a", "DATALOADER.NUM_WORKERS", workers)
    assert isinstance(trainer.test_loader, CachedImageLoader)
    for _ in range(2):  # decoded and stored, then read back
        batches = list(zip(trainer.test_loader, trainer.dm.test_loader))
        assert len(batches) == len(trainer.dm.test_loader) == 3
        for cached, direct in batches:
            assert torch.equal(cached["img"], direct["img"]) and cached["img"].is_contiguous()
            for key in ("label", "domain", "index"):
                assert torch.equal(cached[key], direct[key])
            assert cached["impath"] == direct["impath"]
    assert len(entries(eval_cache_dir, "images")) == 1


def test_image_cache_keys_and_switch(photo_root, tmp_path, eval_cache_dir):
    trainer = make("MMRL", photo_root, tmp_path / "a")
    trainer.test()
    make("MMRL", photo_root, tmp_path / "b").test()
    assert len(entries(eval_cache_dir, "images")) == 1  # shared by runs
    other = make("MMRL", photo_root, tmp_path / "c", "INPUT.INTERPOLATION", "bilinear")
    other.test()
    assert len(entries(eval_cache_dir, "images")) == 2
    for cached, direct in zip(other.test_loader, other.dm.test_loader):
        assert torch.equal(cached["img"], direct["img"])
    off = make("MMRL", photo_root, tmp_path / "d", "EVAL_CACHE.IMAGES", "False")
    assert off.test_loader is off.dm.test_loader


def test_unreadable_images_are_skipped_like_the_direct_path(tmp_path, corrupt_image):
    root = str(tmp_path / "data")
    toy.make_toy_root(root, per_class=4, num_classes=4)
    trainer = make("MultiModalAdapter", root, tmp_path / "a", "DATASET.SKIP_BAD_IMAGES", "True")
    corrupt_image(trainer.dm.dataset.test[1].impath)
    with pytest.warns(UserWarning, match="Skipping unreadable image"):
        cached = [b["index"].tolist() for b in trainer.test_loader]
        direct = [b["index"].tolist() for b in trainer.dm.test_loader]
    assert sum(cached, []) == sum(direct, []) and 1 not in sum(cached, [])


def test_image_split_above_the_cap_stays_direct(photo_root, tmp_path, eval_cache_dir, capsys):
    trainer = make("MultiModalAdapter", photo_root, tmp_path / "a", "EVAL_CACHE.MAX_GB", "0.001")
    batches = list(trainer.test_loader)
    assert "more than EVAL_CACHE.MAX_GB" in capsys.readouterr().out
    assert len(batches) == 3 and entries(eval_cache_dir, "images") == []


# ---------------------------------------------------------------------------------------------
# The store: atomic entries, concurrent processes, eviction, command line
# ---------------------------------------------------------------------------------------------

def payload(n, seed):
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)


def _slow_writer(directory, key, ready, chunks):
    """Write an entry chunk by chunk; ``ready`` is set after the first chunk (then it may be killed)."""
    def gen():
        for i in range(chunks):
            yield payload(4096, i)
            ready.set()
            time.sleep(0.001)
    DiskCache(directory).put("test", key, {"n": chunks}, {"rows": chunks}, gen())


def test_a_killed_writer_leaves_no_entry(tmp_path):
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    store = DiskCache(str(tmp_path))
    child = ctx.Process(target=_slow_writer, args=(str(tmp_path), "k1", ready, 10**9))
    child.start()
    assert ready.wait(60)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert store.get("test", "k1") is None  # only the temporary file exists
    leftovers = [name for name in os.listdir(tmp_path / "test") if ".tmp-" in name]
    assert len(leftovers) == 1
    assert store.remove_stale_temp_files() == [str(tmp_path / "test" / leftovers[0])]
    store.put("test", "k1", {}, {"rows": 1}, [payload(100, 0)])
    assert bytes(store.get("test", "k1").read_payload()) == payload(100, 0).tobytes()


def _poll_reader(directory, key, expected, results):
    store, seen = DiskCache(directory), 0
    while True:
        entry = store.get("test", key)
        if entry is not None:
            results.put(("whole", bytes(entry.read_payload()) == expected, seen))
            return
        seen += 1


def test_readers_see_no_entry_or_the_whole_entry(tmp_path):
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    expected = b"".join(payload(4096, i).tobytes() for i in range(200))
    reader = ctx.Process(target=_poll_reader, args=(str(tmp_path), "k2", expected, results))
    reader.start()
    _slow_writer(str(tmp_path), "k2", ctx.Event(), 200)
    kind, equal, _ = results.get(timeout=60)
    reader.join()
    assert kind == "whole" and equal


def _racer(directory, log, barrier, results):
    store = DiskCache(directory)

    def create():
        with open(log, "a") as f:
            f.write("created\n")
        return bytes(store.put("test", "k3", {}, {"rows": 1}, [payload(1 << 16, 7)]).read_payload())

    barrier.wait()
    results.put(cache_entry(store, "test", "k3", "a test entry", lambda e: bytes(e.read_payload()), create))


def test_racing_runs_compute_an_entry_once(tmp_path):
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    log = str(tmp_path / "log")
    racers = [ctx.Process(target=_racer, args=(str(tmp_path / "cache"), log, barrier, results)) for _ in range(3)]
    for p in racers:
        p.start()
    values = [results.get(timeout=60) for _ in racers]
    for p in racers:
        p.join()
    assert values == [payload(1 << 16, 7).tobytes()] * 3
    with open(log) as f:
        assert f.read() == "created\n"  # the others waited for the lock, then read the entry


def test_damaged_entries_are_not_read(tmp_path, capsys):
    store = DiskCache(str(tmp_path))
    path = store.put("test", "k4", {}, {"rows": 1}, [payload(1000, 1)]).path
    with open(path, "r+b") as f:
        f.truncate(HEADER_BYTES + 10)
    assert store.get("test", "k4") is None and not osp.exists(path)
    assert "damaged eval cache entry" in capsys.readouterr().out
    path = store.put("test", "k4", {}, {"rows": 1}, [payload(1000, 1)]).path
    with open(path, "r+b") as f:
        f.seek(HEADER_BYTES + 5)
        f.write(b"\xff\x00")
    with pytest.raises(ValueError, match="digest"):
        store.get("test", "k4").read_payload()
    recomputed = cache_entry(store, "test", "k4", "", lambda e: e.read_payload(), lambda: "recomputed")
    assert recomputed == "recomputed" and not osp.exists(path)


def test_size_cap_evicts_least_recently_used(tmp_path):
    size = HEADER_BYTES + 10_000
    store = DiskCache(str(tmp_path), max_bytes=int(2.5 * size))
    paths = [store.put("test", f"e{i}", {}, {"rows": 1}, [payload(10_000, i)]).path for i in range(2)]
    for age, path in zip((300, 200), paths):  # e0 used longest ago
        os.utime(path, (os.path.getmtime(path) - age,) * 2)
    assert store.get("test", "e0") is not None  # a read makes e0 the most recently used
    store.put("test", "e2", {}, {"rows": 1}, [payload(10_000, 2)])
    assert sorted(os.listdir(tmp_path / "test")) == ["e0.entry", "e2.entry"]
    store.max_bytes = size // 2  # a new entry larger than the cap is kept; everything else goes
    store.put("test", "e3", {}, {"rows": 1}, [payload(10_000, 3)])
    assert sorted(os.listdir(tmp_path / "test")) == ["e3.entry"]


def test_command_line_info_verify_clean(tmp_path):
    store = DiskCache(str(tmp_path))
    fields = {"dataset": "ToyColours", "split": "test", "backbone": "test-tiny"}
    store.put("features", "a" * 40, fields, {"rows": 7}, [payload(100, 0)])
    damaged = store.put("images", "b" * 40, fields, {"rows": 3}, [payload(100, 1)]).path
    with open(damaged, "r+b") as f:
        f.seek(HEADER_BYTES)
        f.write(b"\x00\x01\x02")

    def cli(*args):
        done = subprocess.run([sys.executable, "-m", "harness.disk_cache", *args, "--dir", str(tmp_path)],
                              cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    info = cli("info")
    assert "2 entries" in info and "ToyColours/test" in info and "7 rows" in info
    assert "removed 1 damaged" in cli("verify") and not osp.exists(damaged)
    assert "Removed 1 entries" in cli("clean")
    assert "0 entries" in cli("info")
