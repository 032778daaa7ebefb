"""Upstream Dassl's generic API beyond what the CLIP trainers use (issue 11, item 5): TrainerXU,
dassl.modeling (+ ops), samplers, augmentation policies, distances, torchtools helpers, RAdam and the
config nodes of Dassl's own trainers."""
import math
import os.path as osp
import random
import re
import types

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from PIL import Image

import dassl
import toy
from dassl.config import get_cfg_default
from dassl.data import DataManager
from dassl.data.datasets import DATASET_REGISTRY, Datum, DatasetBase
from dassl.data.samplers import RandomClassSampler, RandomDomainSampler, SeqDomainSampler, build_sampler
from dassl.data.transforms import build_transform
from dassl.data.transforms.autoaugment import ImageNetPolicy
from dassl.data.transforms.randaugment import (
    CutoutAbs, Invert, Posterize, RandAugment, RandAugment2, RandAugmentFixMatch, Solarize, TranslateXabs,
    fixmatch_list, randaugment_list, randaugment_list2,
)
from dassl.engine import TrainerXU
from dassl.engine.trainer import SimpleNet
from dassl.metrics import compute_distance_matrix, cosine_distance, euclidean_squared_distance
from dassl.modeling import BACKBONE_REGISTRY, HEAD_REGISTRY, NETWORK_REGISTRY, Backbone, build_backbone, build_head
from dassl.modeling import ops
from dassl.modeling.ops import utils as ops_utils
from dassl.optim import build_optimizer
from dassl.optim.radam import AdamW, PlainRAdam, RAdam
from dassl.utils.torchtools import adjust_learning_rate, set_bn_to_eval

# ---------------------------------------------------------------- config, version, exports

UPSTREAM_TRAINER_KEYS = {
    "MCD": {"N_STEP_F": 4},
    "MME": {"LMDA": 0.1},
    "CDAC": {"CLASS_LR_MULTI": 10, "RAMPUP_COEF": 30, "RAMPUP_ITRS": 1000, "TOPK_MATCH": 5, "P_THRESH": 0.95,
             "STRONG_TRANSFORMS": ()},
    "SE": {"EMA_ALPHA": 0.999, "CONF_THRE": 0.95, "RAMPUP": 300},
    "M3SDA": {"LMDA": 0.5, "N_STEP_F": 4},
    "DAEL": {"WEIGHT_U": 0.5, "CONF_THRE": 0.95, "STRONG_TRANSFORMS": ()},
    "CROSSGRAD": {"EPS_F": 1.0, "EPS_D": 1.0, "ALPHA_F": 0.5, "ALPHA_D": 0.5},
    "DDAIG": {"G_ARCH": "", "LMDA": 0.3, "CLAMP": False, "CLAMP_MIN": -1.0, "CLAMP_MAX": 1.0, "WARMUP": 0,
              "ALPHA": 0.5},
    "DAELDG": {"WEIGHT_U": 0.5, "CONF_THRE": 0.95, "STRONG_TRANSFORMS": ()},
    "DOMAINMIX": {"TYPE": "crossdomain", "ALPHA": 1.0, "BETA": 1.0},
    "ENTMIN": {"LMDA": 1e-3},
    "MEANTEACHER": {"WEIGHT_U": 1.0, "EMA_ALPHA": 0.999, "RAMPUP": 5},
    "MIXMATCH": {"WEIGHT_U": 100.0, "TEMP": 2.0, "MIXUP_BETA": 0.75, "RAMPUP": 20000},
    "FIXMATCH": {"WEIGHT_U": 1.0, "CONF_THRE": 0.95, "STRONG_TRANSFORMS": ()},
}


def test_upstream_trainer_nodes_have_upstream_defaults_and_survive_extend_cfg(tmp_path):
    import train

    assert len(UPSTREAM_TRAINER_KEYS) == 14 and sum(map(len, UPSTREAM_TRAINER_KEYS.values())) == 44
    yaml = tmp_path / "fixmatch.yaml"
    yaml.write_text("TRAINER:\n  FIXMATCH:\n    CONF_THRE: 0.8\n    STRONG_TRANSFORMS: ['randaugment']\n")
    args = train.build_parser().parse_args(["--trainer", "ZeroshotCLIP", "--config-file", str(yaml),
                                            "DATASET.NAME", "EuroSAT", "TRAINER.MEANTEACHER.RAMPUP", "7"])
    for cfg in (get_cfg_default(), train.setup_cfg(args)):
        for node, keys in UPSTREAM_TRAINER_KEYS.items():
            assert set(cfg.TRAINER[node].keys()) == set(keys), node
    cfg = train.setup_cfg(args)
    expected = {n: dict(k) for n, k in UPSTREAM_TRAINER_KEYS.items()}
    expected["FIXMATCH"].update(CONF_THRE=0.8, STRONG_TRANSFORMS=("randaugment",))  # list -> tuple, as yacs does
    expected["MEANTEACHER"]["RAMPUP"] = 7
    for node, keys in expected.items():
        assert {k: cfg.TRAINER[node][k] for k in keys} == keys, node
    # extend_cfg's own nodes are still there, and none of them replaced an upstream one
    assert {"COOP", "COCOOP", "MMADAPTER", "MMRL"} <= set(cfg.TRAINER.keys())


def test_version_and_upstream_names_are_importable():
    import dassl.data.samplers as samplers
    import dassl.data.transforms as transforms
    import dassl.engine as engine
    import dassl.evaluation as evaluation
    import dassl.metrics as metrics
    import dassl.modeling as modeling
    from dassl.utils import torchtools

    assert dassl.__version__ == "0.6.3"
    expected = {
        transforms: ["build_transform", "INTERPOLATION_MODES"],
        samplers: ["build_sampler", "RandomDomainSampler", "SeqDomainSampler", "RandomClassSampler"],
        evaluation: ["EVALUATOR_REGISTRY", "build_evaluator", "EvaluatorBase", "Classification"],
        engine: ["TRAINER_REGISTRY", "build_trainer", "TrainerBase", "SimpleTrainer", "TrainerX", "TrainerXU",
                 "SimpleNet"],
        metrics: ["compute_accuracy", "compute_distance_matrix", "cosine_distance", "euclidean_squared_distance"],
        modeling: ["BACKBONE_REGISTRY", "HEAD_REGISTRY", "NETWORK_REGISTRY", "build_backbone", "build_head",
                   "build_network", "Backbone"],
        ops: ["MaximumMeanDiscrepancy", "DSBN1d", "DSBN2d", "mixup", "EFDMix", "random_efdmix", "activate_efdmix",
              "run_with_efdmix", "deactivate_efdmix", "crossdomain_efdmix", "run_without_efdmix", "MixStyle",
              "random_mixstyle", "activate_mixstyle", "run_with_mixstyle", "deactivate_mixstyle",
              "crossdomain_mixstyle", "run_without_mixstyle", "TransNorm1d", "TransNorm2d", "Sequential2",
              "ReverseGrad", "cross_entropy", "SinkhornDivergence", "MinibatchEnergyDistance", "Conv2dDynamic",
              "Attention"],
        ops_utils: ["sharpen_prob", "reverse_index", "shuffle_index", "create_onehot", "sigmoid_rampup",
                    "linear_rampup", "ema_model_update"],
        torchtools: ["set_bn_to_eval", "adjust_learning_rate", "load_pretrained_weights", "open_all_layers",
                     "open_specified_layers", "count_num_param", "init_network_weights"],
    }
    for module, names in expected.items():
        missing = [n for n in names if not hasattr(module, n)]
        assert not missing, (module.__name__, missing)
    assert HEAD_REGISTRY.registered_names() == ["mlp"]
    backbones = set(BACKBONE_REGISTRY.registered_names())
    assert {"resnet18", "resnet50", "resnet18_ms_l123", "resnet50_efdmix_l12"} <= backbones
    assert NETWORK_REGISTRY.registered_names() == []


def test_eval_only_note_has_upstream_text(capsys):
    from dassl.engine import TrainerBase
    from trainers.common.checkpoint import load_adapted_model

    line = "Note that load_model() is skipped as no pretrained model is given (ignore this if it's done on purpose)"
    TrainerBase().load_model("")
    load_adapted_model(TrainerBase(), "")
    assert capsys.readouterr().out.splitlines() == [line, line]


# ---------------------------------------------------------------- TrainerXU


@DATASET_REGISTRY.register(force=True)
class ToyColoursXU(DatasetBase):
    """Labelled: 2 images per toy class (8); unlabelled: the other 4 per class (16)."""

    dataset_dir = "toy"

    def __init__(self, cfg):
        root = osp.join(cfg.DATASET.ROOT, self.dataset_dir)
        train_x, train_u = [], []
        for label, name in enumerate(toy.TOY_CLASSES):
            for i in range(6):
                item = Datum(impath=osp.join(root, name, f"{i}.png"), label=label, classname=name)
                (train_x if i < 2 else train_u).append(item)
        super().__init__(train_x=train_x, train_u=train_u, test=train_x)


class ToyXU(TrainerXU):
    """Records the dataset indices of every (labelled, unlabelled) batch pair it is given."""

    def build_model(self):
        self.model = nn.Linear(3, self.num_classes)
        self.optim = build_optimizer(self.model, self.cfg.OPTIM)
        self.register_model("model", self.model, self.optim, None)
        self.seen = []

    def forward_backward(self, batch_x, batch_u):
        input_x, label_x, input_u = self.parse_batch_train(batch_x, batch_u)
        assert input_x.shape == (4, 3, 16, 16) and label_x.shape == (4,) and input_u.shape == (4, 3, 16, 16)
        self.seen.append((batch_x["index"].tolist(), batch_u["index"].tolist()))
        loss = F.cross_entropy(self.model(input_x.mean((2, 3))), label_x) + 0 * input_u.sum()
        self.model_backward_and_update(loss)
        return {"loss": loss.item()}


@pytest.fixture(scope="module")
def xu_root(tmp_path_factory):
    return toy.make_toy_root(str(tmp_path_factory.mktemp("toy_xu")))


def xu_cfg(root, out, count_iter):
    cfg = get_cfg_default()
    cfg.DATASET.ROOT, cfg.DATASET.NAME, cfg.OUTPUT_DIR = root, "ToyColoursXU", out
    cfg.INPUT.SIZE = (16, 16)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.TRAIN_X.BATCH_SIZE = 4
    cfg.OPTIM.NAME, cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH = "sgd", 0.1, 1
    cfg.TRAIN.COUNT_ITER = count_iter
    cfg.VERBOSE = False
    return cfg


@pytest.mark.parametrize("count_iter, num_batches", [("train_x", 2), ("train_u", 4), ("smaller_one", 2)])
def test_trainer_xu_epoch_length_and_reiteration(xu_root, tmp_path, capsys, count_iter, num_batches):
    torch.manual_seed(0)
    trainer = ToyXU(xu_cfg(xu_root, str(tmp_path), count_iter))
    assert (len(trainer.train_loader_x), len(trainer.train_loader_u)) == (2, 4)  # 8 / 4 and 16 / 4
    capsys.readouterr()
    trainer.epoch, trainer.max_epoch = 0, 1
    trainer.run_epoch()
    assert trainer.num_batches == num_batches and len(trainer.seen) == num_batches
    xs = [idx for batch_x, _ in trainer.seen for idx in batch_x]
    us = [idx for _, batch_u in trainer.seen for idx in batch_u]
    # the shorter loader starts a new (reshuffled) pass when it runs out: each pass is a permutation
    for seq, size in ((xs, 8), (us, 16)):
        for start in range(0, len(seq) - size + 1, size):
            assert sorted(seq[start:start + size]) == list(range(size))
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch [")]
    assert len(lines) == num_batches  # fewer batches than PRINT_FREQ: every batch is printed
    pattern = (r"epoch \[1/1\] batch \[(\d+)/%d\] time [\d.]+ \([\d.]+\) data [\d.]+ \([\d.]+\) "
               r"loss [\d.]+ \([\d.]+\) lr 1\.0000e-01 eta \d+:\d\d:\d\d" % num_batches)
    assert [int(re.fullmatch(pattern, ln).group(1)) for ln in lines] == list(range(1, num_batches + 1))


def test_trainer_xu_bad_count_iter_and_missing_unlabelled_data(xu_root, tmp_path):
    trainer = ToyXU(xu_cfg(xu_root, str(tmp_path), "both"))
    trainer.epoch, trainer.max_epoch = 0, 1
    with pytest.raises(ValueError, match="TRAIN.COUNT_ITER \"both\""):
        trainer.run_epoch()
    cfg = xu_cfg(xu_root, str(tmp_path), "train_x")
    cfg.DATASET.NAME = "ToyColours"  # labelled data only
    trainer = ToyXU(cfg)
    with pytest.raises(ValueError, match="needs unlabelled data"):
        trainer.run_epoch()


# ---------------------------------------------------------------- modeling: backbones, heads, SimpleNet


@BACKBONE_REGISTRY.register(force=True)
def tiny_test_backbone(pretrained=True, **kwargs):
    class Tiny(Backbone):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 3)
            self._out_features = 6

        def forward(self, x):
            return self.conv(x).mean((2, 3))

    return Tiny()


def test_simplenet_builds_backbone_head_and_classifier_from_the_registries(capsys):
    cfg = get_cfg_default()
    cfg.MODEL.BACKBONE.NAME = "tiny_test_backbone"
    cfg.MODEL.HEAD.NAME = "mlp"
    cfg.MODEL.HEAD.HIDDEN_LAYERS = (10, 5)
    net = SimpleNet(cfg, cfg.MODEL, num_classes=3)
    assert capsys.readouterr().out.splitlines() == ["Backbone: tiny_test_backbone", "Head: mlp"]
    assert net.fdim == 5 and net.head.out_features == 5
    assert [type(m).__name__ for m in net.head.mlp] == ["Linear", "BatchNorm1d", "ReLU"] * 2
    x = torch.randn(4, 3, 8, 8)
    y, f = net(x, return_feature=True)
    assert y.shape == (4, 3) and f.shape == (4, 5)
    torch.testing.assert_close(y, net.classifier(net.head(net.backbone(x))))
    cfg.MODEL.HEAD.HIDDEN_LAYERS = ()  # no hidden layers: no head, as upstream
    features_only = SimpleNet(cfg, cfg.MODEL, num_classes=0)
    assert features_only.head is None and features_only.classifier is None and features_only(x).shape == (4, 6)
    with pytest.raises(ValueError, match=r"do you mean \[resnet18\]"):
        build_backbone("resnet81")


def test_mlp_head_options():
    head = build_head("mlp", verbose=False, in_features=7, hidden_layers=4, activation="leaky_relu", bn=False,
                      dropout=0.5)
    assert [type(m).__name__ for m in head.mlp] == ["Linear", "LeakyReLU", "Dropout"] and head.out_features == 4
    with pytest.raises(ValueError, match="HIDDEN_LAYERS"):
        build_head("mlp", verbose=False, in_features=7, hidden_layers=[])


def test_resnet_backbones_match_torchvision_layout():
    backbone = build_backbone("resnet18", verbose=False, pretrained=False)
    reference = torchvision.models.resnet18()
    assert backbone.out_features == 512
    assert set(reference.state_dict()) - set(backbone.state_dict()) == {"fc.weight", "fc.bias"}
    assert set(backbone.state_dict()) <= set(reference.state_dict())
    backbone.load_state_dict(reference.state_dict(), strict=False)
    reference.fc = nn.Identity()
    backbone.eval(), reference.eval()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(backbone(x), reference(x))
    assert build_backbone("resnet50", verbose=False, pretrained=False).out_features == 2048


def test_resnet_mixstyle_variant_mixes_in_training_only():
    torch.manual_seed(0)
    mixed = build_backbone("resnet18_ms_l12", verbose=False, pretrained=False)
    plain = build_backbone("resnet18", verbose=False, pretrained=False)
    plain.load_state_dict(mixed.state_dict())
    assert isinstance(mixed.mixstyle, ops.MixStyle) and mixed.ms_layers == ["layer1", "layer2"]
    x = torch.randn(4, 3, 64, 64)
    mixed.eval(), plain.eval()
    torch.testing.assert_close(mixed(x), plain(x))
    mixed.mixstyle.p = 1.0
    mixed.train(), plain.train()
    assert not torch.allclose(mixed(x), plain(x))
    with ops.run_without_mixstyle(mixed):
        torch.testing.assert_close(mixed(x), plain(x))


# ---------------------------------------------------------------- samplers


def items(domains_and_labels):
    return [types.SimpleNamespace(domain=d, label=c) for d, c in domains_and_labels]


def chunks(seq, size):
    return [seq[i:i + size] for i in range(0, len(seq), size)]


def test_random_domain_sampler_batches():
    data = items([(d, 0) for d in (0, 1, 2) for _ in range(9)])
    random.seed(0)
    sampler = RandomDomainSampler(data, batch_size=6, n_domain=2)
    order = list(sampler)
    assert len(set(order)) == len(order) and len(order) % 6 == 0
    for batch in chunks(order, 6):
        domains = [data[i].domain for i in batch]
        assert domains[:3] == [domains[0]] * 3 and domains[3:] == [domains[3]] * 3 and domains[0] != domains[3]
    every_domain = RandomDomainSampler(data, batch_size=6, n_domain=0)
    for batch in chunks(list(every_domain), 6):
        assert sorted(data[i].domain for i in batch) == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="divisible"):
        RandomDomainSampler(data, batch_size=7, n_domain=2)


def test_seq_domain_sampler_orders_domains_and_stops_at_the_smallest():
    data = items([(2, 0)] * 8 + [(0, 0)] * 4 + [(1, 0)] * 6)
    sampler = SeqDomainSampler(data, batch_size=6)
    order = list(sampler)
    assert len(sampler) == len(order) == 12  # domain 0 has 4 images: two batches of 2 per domain
    assert [[data[i].domain for i in b] for b in chunks(order, 6)] == [[0, 0, 1, 1, 2, 2]] * 2
    assert len(set(order)) == 12


def test_random_class_sampler_groups_and_resamples_small_classes():
    data = items([(0, 0)] * 5 + [(0, 1)] * 4 + [(0, 2)] * 1 + [(0, 3)] * 2)
    random.seed(1), np.random.seed(1)
    order = list(RandomClassSampler(data, batch_size=4, n_ins=2))
    assert len(order) % 4 == 0
    for batch in chunks(order, 4):
        labels = [data[i].label for i in batch]
        assert labels[0] == labels[1] and labels[2] == labels[3] and labels[0] != labels[2]
    assert all(order[k] == order[k + 1] for k in range(0, len(order), 2) if data[order[k]].label == 2)
    with pytest.raises(ValueError, match="no less than n_ins"):
        RandomClassSampler(data, batch_size=2, n_ins=4)


def test_build_sampler_dispatch_and_seeded_order():
    data = items([(d, c) for d in (0, 1) for c in (0, 1, 2) for _ in range(4)])
    for name, cls in (("RandomDomainSampler", RandomDomainSampler), ("SeqDomainSampler", SeqDomainSampler),
                      ("RandomClassSampler", RandomClassSampler)):
        orders = []
        for _ in range(2):
            random.seed(5), np.random.seed(5)
            sampler = build_sampler(name, data_source=data, batch_size=4, n_domain=2, n_ins=2)
            assert type(sampler) is cls
            orders.append(list(sampler))
        assert orders[0] == orders[1]
    with pytest.raises(ValueError, match="Unknown sampler type: Foo"):
        build_sampler("Foo", data_source=data)


def test_class_sampler_through_data_manager(xu_root):
    cfg = get_cfg_default()
    cfg.DATASET.ROOT, cfg.DATASET.NAME, cfg.VERBOSE = xu_root, "ToyColours", False
    cfg.INPUT.SIZE = (16, 16)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.TRAIN_X.SAMPLER = "RandomClassSampler"
    cfg.DATALOADER.TRAIN_X.BATCH_SIZE, cfg.DATALOADER.TRAIN_X.N_INS = 4, 2
    random.seed(0)
    for batch in DataManager(cfg).train_loader_x:
        labels = batch["label"].tolist()
        assert labels[0] == labels[1] and labels[2] == labels[3] and labels[0] != labels[2]


# ---------------------------------------------------------------- transforms


def test_augmentation_policies_are_built_in_upstream_order(capsys):
    cfg = get_cfg_default()
    cfg.INPUT.SIZE = (32, 32)
    cfg.INPUT.TRANSFORMS = ("colorjitter", "randaugment2", "randaugment_fixmatch", "randaugment", "svhn_policy",
                            "cifar10_policy", "imagenet_policy", "random_flip", "normalize")
    tfm = build_transform(cfg, is_train=True)
    printed = capsys.readouterr().out.splitlines()
    assert printed[printed.index("+ random flip") + 1:printed.index("+ to torch tensor of range [0, 1]")] == [
        "+ imagenet policy", "+ cifar10 policy", "+ svhn policy", "+ randaugment (n=2, m=10)",
        "+ randaugment_fixmatch (n=2)", "+ randaugment2 (n=2)",
        "+ color jitter (brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)"]
    names = [type(t).__name__ for t in tfm.transforms]
    assert names[2:8] == ["ImageNetPolicy", "CIFAR10Policy", "SVHNPolicy", "RandAugment", "RandAugmentFixMatch",
                          "RandAugment2"]
    random.seed(0), torch.manual_seed(0), np.random.seed(0)
    img = Image.fromarray(np.random.RandomState(0).randint(0, 256, (40, 48, 3), dtype=np.uint8))
    assert tfm(img).shape == (3, 32, 32)


def test_imagenet_policy_is_torchvision_autoaugment_with_grey_fill():
    img = Image.fromarray(np.random.RandomState(1).randint(0, 256, (24, 24, 3), dtype=np.uint8))
    reference = torchvision.transforms.AutoAugment(torchvision.transforms.AutoAugmentPolicy.IMAGENET,
                                                   fill=[128, 128, 128])
    for seed in range(5):
        torch.manual_seed(seed)
        ours = np.asarray(ImageNetPolicy()(img))
        torch.manual_seed(seed)
        assert np.array_equal(ours, np.asarray(reference(img)))


def test_randaugment_operations_run_over_their_ranges():
    img = Image.fromarray(np.random.RandomState(2).randint(0, 256, (20, 30, 3), dtype=np.uint8))
    random.seed(0), np.random.seed(0)
    for op, lo, hi in randaugment_list() + randaugment_list2() + fixmatch_list():
        for v in (lo, hi):
            out = op(img, v)
            assert out.size == img.size and out.mode == "RGB", op.__name__
    for policy in (RandAugment(3, 30), RandAugment2(3, p=1.0), RandAugmentFixMatch(3)):
        assert policy(img).size == img.size
    with pytest.raises(ValueError, match="RANDAUGMENT_M"):
        RandAugment(2, 31)


def test_randaugment_operation_semantics():
    pixels = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3) * 3
    img = Image.fromarray(pixels)
    assert np.array_equal(np.asarray(Invert(img, 0)), 255 - pixels)
    assert np.array_equal(np.asarray(Posterize(img, 4.7)), pixels & 0xF0)
    assert np.array_equal(np.asarray(Solarize(img, 100)), np.where(pixels >= 100, 255 - pixels, pixels))
    shifted = np.asarray(TranslateXabs(img, 2))
    assert np.array_equal(shifted[:, :4], pixels[:, 2:]) or np.array_equal(shifted[:, 2:], pixels[:, :4])
    np.random.seed(0)
    painted = (np.asarray(CutoutAbs(Image.new("RGB", (10, 10)), 4)) == (125, 123, 114)).all(-1)
    rows, cols = np.nonzero(painted.any(1))[0], np.nonzero(painted.any(0))[0]
    assert painted[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all() and painted.sum() == len(rows) * len(cols)
    assert len(rows) <= 5 and len(cols) <= 5  # PIL's box includes both corners: side v + 1 at most


# ---------------------------------------------------------------- metrics and torchtools


def test_distance_matrices():
    a, b = torch.randn(5, 7, dtype=torch.float64), torch.randn(3, 7, dtype=torch.float64)
    torch.testing.assert_close(euclidean_squared_distance(a, b), torch.cdist(a, b) ** 2)
    torch.testing.assert_close(compute_distance_matrix(a, b), torch.cdist(a, b) ** 2)
    cos = 1 - F.cosine_similarity(a.unsqueeze(1), b.unsqueeze(0), dim=2)
    torch.testing.assert_close(cosine_distance(a, b), cos)
    torch.testing.assert_close(compute_distance_matrix(a, b, metric="cosine"), cos)
    with pytest.raises(ValueError, match="Unknown distance metric: l1"):
        compute_distance_matrix(a, b, metric="l1")
    with pytest.raises(ValueError, match="Feature sizes differ"):
        compute_distance_matrix(a, b[:, :3])


def test_adjust_learning_rate_and_set_bn_to_eval():
    optim = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    adjust_learning_rate(optim, 0.1, epoch=45, stepsize=20, gamma=0.5)
    assert optim.param_groups[0]["lr"] == pytest.approx(0.025)
    adjust_learning_rate(optim, 0.1, epoch=25, linear_decay=True, final_lr=0.02, max_epoch=100)
    assert optim.param_groups[0]["lr"] == pytest.approx(0.08)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm1d(4)), nn.Dropout())
    model.train()
    model.apply(set_bn_to_eval)
    assert [m.training for m in (model[0], model[1], model[2][0], model[3])] == [True, False, False, True]


# ---------------------------------------------------------------- RAdam


def run_optimizer(make, steps=25, dtype=torch.float32, emulate_fp16=False):
    """Minimise ||w - target||^2; ``emulate_fp16``: fp32 weights rounded to fp16 like fp16 storage would."""
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(6, 4).to(dtype))
    target = torch.randn(6, 4)
    if emulate_fp16:
        w.data = w.data.half().float()
    opt = make([w])
    for _ in range(steps):
        opt.zero_grad()
        ((w.float() - target) ** 2).sum().backward()
        if emulate_fp16:
            w.grad = w.grad.half().float()
        opt.step()
        if emulate_fp16:
            w.data = w.data.half().float()
    return w.detach().float()


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_radam_equals_torch_radam_with_decoupled_weight_decay(wd):
    # 25 steps with beta2 = 0.999: rho_t < 5 for the first steps (SGD-like), rectified afterwards
    ours = run_optimizer(lambda p: RAdam(p, lr=0.01, weight_decay=wd))
    reference = run_optimizer(lambda p: torch.optim.RAdam(p, lr=0.01, weight_decay=wd, decoupled_weight_decay=True))
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(run_optimizer(lambda p: PlainRAdam(p, lr=0.01, weight_decay=wd)), ours)


def test_radam_without_sgd_fallback_waits_for_the_rectified_phase():
    assert RAdam.rectified_step_size(5, 0.9, 0.999)[0] is False
    assert RAdam.rectified_step_size(6, 0.9, 0.999)[0] is True  # rho_6 = 5.0099
    start = run_optimizer(lambda p: RAdam(p), steps=0)
    frozen = run_optimizer(lambda p: RAdam(p, degenerated_to_sgd=False, weight_decay=0.1), steps=5)
    torch.testing.assert_close(frozen, start, rtol=0, atol=0)
    assert not torch.equal(run_optimizer(lambda p: RAdam(p, degenerated_to_sgd=False), steps=6), start)


def test_radam_on_fp16_parameters_keeps_fp32_moments():
    ours = run_optimizer(lambda p: RAdam(p, lr=0.01, weight_decay=0.1), dtype=torch.float16)
    reference = run_optimizer(lambda p: RAdam(p, lr=0.01, weight_decay=0.1), emulate_fp16=True)
    torch.testing.assert_close(ours, reference, rtol=0, atol=0)
    w = nn.Parameter(torch.ones(2, dtype=torch.float16))
    opt = RAdam([w])
    w.grad = torch.full((2,), 1e-4, dtype=torch.float16)
    opt.step()
    assert opt.state[w]["exp_avg"].dtype == torch.float32 and w.dtype == torch.float16


def test_adamw_matches_torch_and_warms_up():
    ours = run_optimizer(lambda p: AdamW(p, lr=0.01, weight_decay=0.1))
    reference = run_optimizer(lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1))
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)  # eps placement differs by ~1e-8
    w = nn.Parameter(torch.tensor([1.0]))
    opt = AdamW([w], lr=0.1, warmup=4)
    w.grad = torch.tensor([2.0])
    opt.step()  # step 1: lr 1e-8 + 0.1 / 4; Adam's first step moves by lr * sign(grad)
    assert w.item() == pytest.approx(1.0 - (1e-8 + 0.025), abs=1e-6)


def test_build_optimizer_radam_is_dassl_radam():
    cfg = get_cfg_default()
    cfg.OPTIM.NAME = "radam"
    opt = build_optimizer(nn.Linear(2, 2), cfg.OPTIM)
    assert type(opt) is RAdam and opt.defaults["weight_decay"] == 5e-4 and opt.defaults["lr"] == 0.0003


# ---------------------------------------------------------------- ops


def test_reverse_grad_and_cross_entropy():
    x = torch.randn(3, 4, requires_grad=True)
    out = ops.ReverseGrad()(x)
    torch.testing.assert_close(out, x)
    out.sum().backward()
    torch.testing.assert_close(x.grad, -torch.ones(3, 4))
    logits, target = torch.randn(5, 4), torch.tensor([0, 3, 1, 1, 2])
    torch.testing.assert_close(ops.cross_entropy(logits, target), F.cross_entropy(logits, target))
    torch.testing.assert_close(ops.cross_entropy(logits, target, label_smooth=0.1, reduction="sum"),
                               F.cross_entropy(logits, target, label_smoothing=0.1, reduction="sum"))
    assert ops.cross_entropy(logits, target, reduction="none").shape == (5,)


def replay_mixing(seed, batch_size, alpha, mix_dims):
    """The draws a mixing layer makes after ``seed``: (lambda, partners) for mix="random"."""
    random.seed(seed), torch.manual_seed(seed)
    random.random()
    lmda = torch.distributions.Beta(alpha, alpha).sample((batch_size, *[1] * mix_dims))
    return lmda, torch.randperm(batch_size)


def test_mixstyle_mixes_channel_statistics():
    x = torch.randn(4, 3, 5, 5) * torch.arange(1, 5).view(4, 1, 1, 1) + torch.arange(4).view(4, 1, 1, 1)
    layer = ops.MixStyle(p=1.0, alpha=0.3)
    assert repr(layer) == "MixStyle(p=1.0, alpha=0.3, eps=1e-06, mix=random)"
    random.seed(3), torch.manual_seed(3)
    out = layer(x)
    lmda, perm = replay_mixing(3, 4, 0.3, 3)
    mu, sig = x.mean((2, 3), keepdim=True), (x.var((2, 3), keepdim=True) + 1e-6).sqrt()
    expected = (x - mu) / sig * (lmda * sig + (1 - lmda) * sig[perm]) + lmda * mu + (1 - lmda) * mu[perm]
    torch.testing.assert_close(out, expected)
    layer.eval()
    assert layer(x) is x


def test_mixing_switches_and_crossdomain_partners():
    model = nn.Sequential(ops.MixStyle(p=1.0), ops.EFDMix(p=1.0))
    x = torch.randn(4, 2, 3, 3)
    with ops.run_with_mixstyle(model, mix="crossdomain"):
        assert model[0]._activated and model[0].mix == "crossdomain" and model[1].mix == "random"
    assert not model[0]._activated and model[1]._activated  # EFDMix is not a MixStyle
    model.apply(ops.activate_mixstyle)
    with ops.run_without_efdmix(model):
        assert not model[1]._activated
        torch.testing.assert_close(model[1](x), x)
    assert model[1]._activated
    for _ in range(5):
        partners = model[0]._partners(6).tolist()
        assert sorted(partners[:3]) == [3, 4, 5] and sorted(partners[3:]) == [0, 1, 2]
    model[0].update_mix_method("both")
    with pytest.raises(NotImplementedError):
        model[0](x)


def test_efdmix_matches_sorted_values():
    x = torch.randn(4, 3, 4, 4, requires_grad=True)
    layer = ops.EFDMix(p=1.0, alpha=0.3)
    random.seed(4), torch.manual_seed(4)
    out = layer(x)
    lmda, perm = replay_mixing(4, 4, 0.3, 2)
    flat = x.detach().flatten(2)
    expected_sorted = lmda * flat.sort(-1).values + (1 - lmda) * flat[perm].sort(-1).values
    torch.testing.assert_close(out.detach().flatten(2).sort(-1).values, expected_sorted)
    # each value keeps its rank within its channel
    torch.testing.assert_close(out.detach().flatten(2).argsort(-1), flat.argsort(-1), rtol=0, atol=0)
    out.sum().backward()
    assert x.grad is not None


def brute_force_mmd(x, y, kernel):
    def mean_k(a, b, skip_diagonal):
        values = [kernel(a[i], b[j]) for i in range(len(a)) for j in range(len(b)) if not (skip_diagonal and i == j)]
        return sum(values) / len(values)

    return mean_k(x, x, True) + mean_k(y, y, True) - 2 * mean_k(x, y, False)


def test_mmd_kernels_against_brute_force():
    torch.manual_seed(0)
    x, y = torch.randn(5, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64) + 0.5
    kernels = {
        "linear": lambda a, b: a @ b,
        "poly": lambda a, b: (a @ b + 2.0) ** 2,
        "rbf": lambda a, b: sum(torch.exp(-((a - b) ** 2).sum() / (2 * s ** 2)) for s in (1, 5, 10)),
    }
    for name, kernel in kernels.items():
        torch.testing.assert_close(ops.MaximumMeanDiscrepancy(name)(x, y), brute_force_mmd(x, y, kernel))
    xn, yn = F.normalize(x, dim=1), F.normalize(y, dim=1)
    torch.testing.assert_close(ops.MaximumMeanDiscrepancy("linear", normalize=True)(x, y),
                               brute_force_mmd(xn, yn, kernels["linear"]))
    with pytest.raises(NotImplementedError):
        ops.MaximumMeanDiscrepancy("laplace")(x, y)


def test_dsbn_uses_the_selected_domain():
    layer = ops.DSBN2d(3, n_domain=2)
    layer.select_bn(1)
    layer(torch.randn(4, 3, 2, 2) + 5)
    assert layer.bn[0].running_mean.abs().sum() == 0 and (layer.bn[1].running_mean > 0.2).all()
    with pytest.raises(ValueError):
        layer.select_bn(2)
    assert isinstance(ops.DSBN1d(3, 2).bn[0], nn.BatchNorm1d)


def test_transnorm_normalises_each_domain_and_weights_channels():
    torch.manual_seed(0)
    layer = ops.TransNorm2d(3)
    src, tgt = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2) * 2 + 1

    def stats(t):
        flat = t.transpose(0, 1).reshape(3, -1)
        return flat.mean(1), flat.var(1)

    def norm(t, mean, var):
        return (t - mean.view(1, 3, 1, 1)) / (var.view(1, 3, 1, 1) + 1e-5).sqrt()

    def alpha(ms, vs, mt, vt):
        w = 1 / (1 + (ms / (vs + 1e-5).sqrt() - mt / (vt + 1e-5).sqrt()).abs())
        return (3 * w / w.sum()).view(1, 3, 1, 1)

    (ms, vs), (mt, vt) = stats(src), stats(tgt)
    out = layer(torch.cat([src, tgt]))
    torch.testing.assert_close(out, (1 + alpha(ms, vs, mt, vt)) * torch.cat([norm(src, ms, vs), norm(tgt, mt, vt)]))
    torch.testing.assert_close(layer.running_mean_t, 0.9 * mt)  # momentum * 0 + (1 - momentum) * batch
    torch.testing.assert_close(layer.running_var_s, 0.1 + 0.9 * vs)
    layer.eval()
    rm_s, rv_s, rm_t, rv_t = layer.running_mean_s, layer.running_var_s, layer.running_mean_t, layer.running_var_t
    torch.testing.assert_close(layer(tgt), (1 + alpha(rm_s, rv_s, rm_t, rv_t)) * norm(tgt, rm_t, rv_t))
    with pytest.raises(ValueError, match="Expected the input to be 2-D"):
        ops.TransNorm1d(3)(torch.randn(2, 3, 1, 1))


def test_conv2d_dynamic_adds_attention_weighted_templates():
    torch.manual_seed(0)
    conv = ops.Conv2dDynamic(32, 8, kernel_size=3, stride=2, padding=1)
    assert list(conv.kernel_templates) == ["conv_nn", "conv_11", "conv_n1", "conv_1n"]
    assert conv.kernel_templates["conv_nn"].groups == 8 and conv.attention.squeeze == 2
    x = torch.randn(2, 32, 9, 9)
    weights = conv.attention(x)
    torch.testing.assert_close(weights.sum(1), torch.ones(2))
    expected = conv.conv(x) + sum(t(x) * weights[:, i].view(-1, 1, 1, 1)
                                  for i, t in enumerate(conv.kernel_templates.values()))
    torch.testing.assert_close(conv(x), expected)
    assert conv(x).shape == (2, 8, 5, 5)
    with pytest.raises(ValueError, match="padding"):
        ops.Conv2dDynamic(32, 8, kernel_size=3, stride=1, padding=0)
    with pytest.raises(ValueError, match="odd"):
        ops.Conv2dDynamic(32, 8, kernel_size=4, stride=1, padding=2)


def test_sinkhorn_plan_has_uniform_marginals_and_divergence_is_zero_on_itself():
    torch.manual_seed(0)
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64) + 1
    sinkhorn = ops.SinkhornDivergence(dist_metric="euclidean", eps=0.5, max_iter=200)
    _, pi = sinkhorn.transport_cost(x, y, return_pi=True)
    torch.testing.assert_close(pi.sum(1), torch.full((6,), 1 / 6, dtype=torch.float64), atol=1e-3, rtol=0)
    torch.testing.assert_close(pi.sum(0), torch.full((5,), 1 / 5, dtype=torch.float64), atol=1e-3, rtol=0)
    assert abs(sinkhorn(x, x).item()) < 1e-9 and sinkhorn(x, y).item() > 0
    energy = ops.MinibatchEnergyDistance()(torch.randn(8, 4), torch.randn(8, 4) + 3)
    assert energy.shape == () and math.isfinite(energy.item())


def test_mixup_sequential2_and_ops_utils():
    torch.manual_seed(0)
    x1, x2 = torch.zeros(6, 1, 2, 2), torch.ones(6, 1, 2, 2)
    y1, y2 = torch.eye(3)[[0, 1, 2, 0, 1, 2]], torch.eye(3)[[1, 2, 0, 1, 2, 0]]
    xmix, ymix = ops.mixup(x1, x2, y1, y2, beta=0.5, preserve_order=True)
    lmda = 1 - xmix[:, 0, 0, 0]  # x1 = 0, x2 = 1
    assert (lmda >= 0.5).all()
    torch.testing.assert_close(ymix, y1 * lmda[:, None] + y2 * (1 - lmda[:, None]))

    class Swap(nn.Module):
        def forward(self, a, b):
            return b, a

    a, b = torch.tensor(1.0), torch.tensor(2.0)
    assert ops.Sequential2(Swap(), Swap(), Swap())(a, b) == (b, a)

    p = torch.tensor([[0.2, 0.8], [0.5, 0.5]])
    torch.testing.assert_close(ops_utils.sharpen_prob(p), torch.tensor([[1 / 17, 16 / 17], [0.5, 0.5]]))
    data, label = ops_utils.reverse_index(torch.arange(3.0), torch.tensor([7, 8, 9]))
    assert data.tolist() == [2.0, 1.0, 0.0] and label.tolist() == [9, 8, 7]
    assert ops_utils.create_onehot(torch.tensor([2, 0]), 3).tolist() == [[0, 0, 1], [1, 0, 0]]
    assert ops_utils.sigmoid_rampup(0, 10) == pytest.approx(math.exp(-5))
    assert ops_utils.sigmoid_rampup(15, 10) == 1.0 and ops_utils.linear_rampup(5, 10) == 0.5
    model, ema = nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)
    nn.init.constant_(model.weight, 1.0), nn.init.constant_(ema.weight, 0.0)
    ops_utils.ema_model_update(model, ema, alpha=0.9)
    assert ema.weight.item() == pytest.approx(0.1)
