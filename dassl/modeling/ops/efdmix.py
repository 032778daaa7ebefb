"""EFDMix (Zhang et al., CVPR 2022): exact feature distribution mixing by sorting."""
from ._style_mixing import StyleMixingLayer, layer_switches

__all__ = ["EFDMix", "activate_efdmix", "deactivate_efdmix", "random_efdmix", "crossdomain_efdmix",
           "run_without_efdmix", "run_with_efdmix"]


class EFDMix(StyleMixingLayer):
    """Per channel, each value moves towards the partner's value of the same rank:
    out = x + (1 - lambda) * (sorted_partner[rank(x)] - x.detach()), lambda ~ Beta(alpha, alpha)."""

    def forward(self, x):
        if self._skip():
            return x
        batch_size, channels = x.shape[:2]
        flat = x.view(batch_size, channels, -1)
        sorted_values, sort_index = flat.sort(dim=-1)
        lmda = self.beta.sample((batch_size, 1, 1)).to(x.device)
        partner = self._partners(batch_size)
        rank = sort_index.argsort(dim=-1)
        matched = sorted_values[partner].gather(-1, rank)  # partner's value at x's rank
        out = flat + (matched - flat.detach()) * (1 - lmda)
        return out.view_as(x)


(activate_efdmix, deactivate_efdmix, random_efdmix, crossdomain_efdmix,
 run_without_efdmix, run_with_efdmix) = layer_switches(EFDMix)
