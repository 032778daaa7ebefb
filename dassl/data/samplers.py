"""Samplers selectable by name (``DATALOADER.*.SAMPLER``).

The three balanced samplers draw with Python's ``random`` (and NumPy for classes with fewer than
``n_ins`` items), so a fixed ``SEED`` fixes their order. Like upstream, each one measures its
epoch length at construction by drawing one epoch, which advances the random state once.
"""
import random
from collections import defaultdict

import numpy as np
from torch.utils.data.sampler import RandomSampler, Sampler, SequentialSampler

__all__ = ["RandomDomainSampler", "SeqDomainSampler", "RandomClassSampler", "build_sampler"]


def _indices_by(data_source, attribute):
    """{value of ``item.<attribute>``: [dataset indices]} in order of first appearance."""
    groups = defaultdict(list)
    for index, item in enumerate(data_source):
        groups[getattr(item, attribute)].append(index)
    return groups


def _take(pool, k):
    """Draw ``k`` indices from ``pool`` without replacement; remove them from it."""
    chosen = random.sample(pool, k)
    taken = set(chosen)
    pool[:] = [i for i in pool if i not in taken]
    return chosen


class _DomainSampler(Sampler):
    """Batches of ``n_domain`` domains x ``batch_size // n_domain`` images; the epoch ends as soon
    as one used domain has fewer images left than that."""

    def __init__(self, data_source, batch_size, n_domain, sort_domains=False):
        self.data_source = data_source
        self.domain_dict = _indices_by(data_source, "domain")
        self.domains = sorted(self.domain_dict) if sort_domains else list(self.domain_dict)
        if n_domain is None or n_domain <= 0:
            n_domain = len(self.domains)
        if batch_size % n_domain != 0:
            raise ValueError(f"batch_size={batch_size} must be divisible by the number of domains "
                             f"per batch ({n_domain})")
        self.batch_size = batch_size
        self.n_domain = n_domain
        self.n_img_per_domain = batch_size // n_domain
        self.length = len(list(self.__iter__()))

    def _domains_of_next_batch(self):
        raise NotImplementedError

    def __iter__(self):
        pools = {d: list(idxs) for d, idxs in self.domain_dict.items()}
        order = []
        exhausted = False
        while not exhausted:
            for domain in self._domains_of_next_batch():
                order.extend(_take(pools[domain], self.n_img_per_domain))
                exhausted = exhausted or len(pools[domain]) < self.n_img_per_domain
        return iter(order)

    def __len__(self):
        return self.length


class RandomDomainSampler(_DomainSampler):
    """Each batch: ``n_domain`` randomly chosen domains (0 or less: all), each with K = batch_size /
    n_domain random images."""

    def __init__(self, data_source, batch_size, n_domain):
        super().__init__(data_source, batch_size, n_domain)

    def _domains_of_next_batch(self):
        return random.sample(self.domains, self.n_domain)


class SeqDomainSampler(_DomainSampler):
    """Each batch: every domain in sorted order, each with K = batch_size / #domains random images."""

    def __init__(self, data_source, batch_size):
        super().__init__(data_source, batch_size, 0, sort_domains=True)

    def _domains_of_next_batch(self):
        return self.domains


class RandomClassSampler(Sampler):
    """Each batch: ``batch_size // n_ins`` random classes, each with ``n_ins`` images.

    A class is cut into shuffled groups of ``n_ins`` (a class with fewer images is first resampled
    to ``n_ins`` with replacement; leftovers are dropped); the epoch ends when fewer classes than a
    batch needs still have groups.
    """

    def __init__(self, data_source, batch_size, n_ins):
        if batch_size < n_ins:
            raise ValueError(f"batch_size={batch_size} must be no less than n_ins={n_ins}")
        self.data_source = data_source
        self.batch_size = batch_size
        self.n_ins = n_ins
        self.ncls_per_batch = batch_size // n_ins
        self.index_dic = _indices_by(data_source, "label")
        self.labels = list(self.index_dic)
        if len(self.labels) < self.ncls_per_batch:
            raise ValueError(f"{len(self.labels)} classes cannot fill a batch of {self.ncls_per_batch} "
                             f"classes x {n_ins} images; lower batch_size or raise N_INS")
        self.length = len(list(self.__iter__()))

    def _groups(self, label):
        idxs = list(self.index_dic[label])
        if len(idxs) < self.n_ins:
            idxs = list(np.random.choice(idxs, size=self.n_ins, replace=True))
        random.shuffle(idxs)
        n_full = len(idxs) // self.n_ins
        return [idxs[g * self.n_ins:(g + 1) * self.n_ins] for g in range(n_full)]

    def __iter__(self):
        groups = {label: self._groups(label) for label in self.labels}
        available = list(self.labels)
        order = []
        while len(available) >= self.ncls_per_batch:
            for label in random.sample(available, self.ncls_per_batch):
                order.extend(groups[label].pop(0))
                if not groups[label]:
                    available.remove(label)
        return iter(order)

    def __len__(self):
        return self.length


def build_sampler(sampler_type, cfg=None, data_source=None, batch_size=32, n_domain=0, n_ins=16):
    if sampler_type == "RandomSampler":
        return RandomSampler(data_source)
    if sampler_type == "SequentialSampler":
        return SequentialSampler(data_source)
    if sampler_type == "RandomDomainSampler":
        return RandomDomainSampler(data_source, batch_size, n_domain)
    if sampler_type == "SeqDomainSampler":
        return SeqDomainSampler(data_source, batch_size)
    if sampler_type == "RandomClassSampler":
        return RandomClassSampler(data_source, batch_size, n_ins)
    raise ValueError(f"Unknown sampler type: {sampler_type}")
