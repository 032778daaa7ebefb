"""Samplers selectable by name (``DATALOADER.*.SAMPLER``)."""
from torch.utils.data.sampler import RandomSampler, SequentialSampler

__all__ = ["build_sampler"]


def build_sampler(sampler_type, cfg=None, data_source=None, batch_size=32, n_domain=0, n_ins=16):
    if sampler_type == "RandomSampler":
        return RandomSampler(data_source)
    if sampler_type == "SequentialSampler":
        return SequentialSampler(data_source)
    if sampler_type in ("RandomDomainSampler", "SeqDomainSampler", "RandomClassSampler"):
        raise NotImplementedError(f"Sampler {sampler_type} is not needed by CLIP trainers and not implemented")
    raise ValueError(f"Unknown sampler type: {sampler_type}")
