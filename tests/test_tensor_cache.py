"""The one cache rule of the trainers (trainers/common/eval_cache.py ``TensorCache``): each event of
the rule drops a stored value, nothing else does, and MMA's and MMRL's caches give the numbers of
their direct paths before and after every event."""
import contextlib
import io

import pytest
import torch
import torch.nn as nn

from clip import load
from trainers.common.eval_cache import TensorCache
from trainers.common.utils import freeze_except
from trainers.mma import ADAPTER_LISTS, AdapterLearner, MultiModalAdapterCLIP, mma_prompts
from trainers.mmrl import MMRLCLIP, MultiModalRepresentationLearner

CLASSNAMES = ["red_square", "green_thing", "blue_sky", "a_much_longer_class_name"]
BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


class Toy(nn.Module):
    """A frozen map on a fixed buffer, and a learner on top."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.frozen = nn.Linear(4, 4).requires_grad_(False)
        self.learner = nn.Linear(4, 4)
        self.register_buffer("prompt", torch.randn(3, 4))

    def frozen_value(self):
        return self.frozen(self.prompt)

    def learned_value(self):
        return self.learner(self.frozen(self.prompt))


def counted(compute):
    calls = []

    def wrapper():
        calls.append(1)
        return compute()
    return wrapper, calls


def test_frozen_value_survives_training_steps_and_follows_every_frozen_change():
    toy = Toy()
    cache = TensorCache(toy)
    compute, calls = counted(toy.frozen_value)
    optim = torch.optim.SGD(toy.learner.parameters(), lr=0.1)

    def check(expected_calls):
        value = cache.get(compute)
        assert len(calls) == expected_calls and not value.requires_grad
        assert torch.equal(value, toy.frozen_value())

    check(1)
    for _ in range(2):  # training steps change only trainable tensors, which the value does not read
        toy.learner.train()
        toy.learned_value().sum().backward()
        optim.step()
        check(1)
    toy.frozen.load_state_dict({k: v + 1 for k, v in toy.frozen.state_dict().items()})
    check(2)
    with torch.no_grad():
        toy.prompt.mul_(2)  # an in-place change of a buffer
    check(3)
    toy.double()  # new storage (and new buffer objects)
    check(4)
    assert cache.value.dtype == torch.float64
    toy.float()
    check(5)
    with torch.autocast(**BF16):
        check(6)
        assert cache.value.dtype == torch.bfloat16
        check(6)
    check(7)  # autocast off again: the fp32 value is computed again (one value is stored)
    cache.enabled = False
    check(8)
    check(9)


def test_learned_value_follows_training_mode_steps_loading_and_autocast():
    toy = Toy()
    cache = TensorCache(toy, learner=toy.learner)
    compute, calls = counted(toy.learned_value)
    optim = torch.optim.SGD(toy.learner.parameters(), lr=0.1)

    def check(expected_calls, grad=False):
        value = cache.get(compute)
        assert len(calls) == expected_calls and value.requires_grad == grad
        with torch.no_grad():
            assert torch.equal(value, toy.learned_value())

    toy.learner.train()  # training: computed at every call, with autograd, and not stored
    check(1, grad=True)
    check(2, grad=True)
    assert len(cache) == 0
    toy.learner.eval()
    check(3)
    check(3)
    toy.learned_value().sum().backward()
    optim.step()  # a step without going back to training mode
    check(4)
    toy.learner.load_state_dict({k: v * 0.5 for k, v in toy.learner.state_dict().items()})
    check(5)
    toy.frozen.load_state_dict({k: v - 1 for k, v in toy.frozen.state_dict().items()})  # frozen tensors count too
    check(6)
    with torch.autocast(**BF16):
        check(7)
        check(7)
    toy.learner.train()
    check(8, grad=True)
    assert len(cache) == 0 and cache.value is None


# ---------------------------------------------------------------------------------------------
# MMA and MMRL: cached = direct, before and after each event
# ---------------------------------------------------------------------------------------------

def tiny_clip():
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):
        return load("test-tiny", weights="random")[0]


def mma_pair():
    """The same MMA model twice, with every cache and with none: (model, learner, text tower) each."""
    models = []
    for cached in (True, False):
        clip_model = tiny_clip()
        learner = AdapterLearner(clip_model, mma_prompts("a photo of a", CLASSNAMES), 5, 12, 8, 0.5)
        model = MultiModalAdapterCLIP(clip_model, learner, cache_frozen_text=cached, cache_eval_text=cached)
        freeze_except(model, ADAPTER_LISTS)
        models.append((model, learner, clip_model.transformer))
    return models, lambda model, images: model(images)


def mmrl_pair():
    models = []
    for cached in (True, False):
        clip_model = tiny_clip().requires_grad_(False)
        learner = MultiModalRepresentationLearner.for_clip(clip_model, 2, 16, 3)
        prompts = [f"a photo of a {c.replace('_', ' ')}." for c in CLASSNAMES]
        model = MMRLCLIP(clip_model, learner, prompts, [4, 6, 9], cache_text_lower_layers=cached)
        model.eval_cache.enabled = cached
        models.append((model, learner, clip_model.transformer))

    def logits(model, images):
        out = model(images)
        return torch.cat([out.class_logits, out.rep_logits], dim=1)
    return models, logits


@pytest.mark.parametrize("pair", [mma_pair, mmrl_pair], ids=["MMA", "MMRL"])
def test_method_caches_equal_the_direct_path_after_each_event(pair):
    ((cached, learner, text_tower), (direct, direct_learner, _)), logits = pair()
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    text_block1_calls = []
    text_tower.resblocks[0].register_forward_hook(lambda m, i, o: text_block1_calls.append(1))
    last = None

    def same(autocast=False):
        nonlocal last
        for lrn in (learner, direct_learner):
            lrn.eval()
        with torch.no_grad(), torch.autocast(**BF16, enabled=autocast):
            a, b = logits(cached, images), logits(direct, images)
        torch.testing.assert_close(a, b, atol=0, rtol=0)
        if last is not None:
            assert not torch.equal(a, last)  # the event changed the numbers: a stale value would show
        last = a

    same()
    for lrn, m in ((learner, cached), (direct_learner, direct)):  # one training step on each
        optim = torch.optim.SGD(lrn.parameters(), lr=1.0)
        lrn.train()
        logits(m, images).logsumexp(-1).sum().backward()
        optim.step()
    same()
    state = {k: v + 0.01 for k, v in direct_learner.named_parameters()}
    for lrn in (learner, direct_learner):  # loading weights (in eval mode)
        lrn.load_state_dict(state, strict=False)
    same()
    same(autocast=True)  # the autocast state
    # Training steps and loading changed only the learner: the frozen text blocks ran once per precision.
    assert len(text_block1_calls) == 2
