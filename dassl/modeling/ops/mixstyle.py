"""MixStyle (Zhou et al., ICLR 2021): mix instance-level feature statistics across samples."""
from ._style_mixing import StyleMixingLayer, layer_switches

__all__ = ["MixStyle", "activate_mixstyle", "deactivate_mixstyle", "random_mixstyle", "crossdomain_mixstyle",
           "run_without_mixstyle", "run_with_mixstyle"]


class MixStyle(StyleMixingLayer):
    """x [B, C, H, W] -> normalised x re-styled with lambda-mixed (mean, std) of x and its partner.

    lambda ~ Beta(alpha, alpha) per sample; statistics are detached.
    """

    def forward(self, x):
        if self._skip():
            return x
        batch_size = x.size(0)
        mu = x.mean(dim=[2, 3], keepdim=True).detach()
        sig = (x.var(dim=[2, 3], keepdim=True) + self.eps).sqrt().detach()
        x_normed = (x - mu) / sig
        lmda = self.beta.sample((batch_size, 1, 1, 1)).to(x.device)
        partner = self._partners(batch_size)
        mu_mix = mu * lmda + mu[partner] * (1 - lmda)
        sig_mix = sig * lmda + sig[partner] * (1 - lmda)
        return x_normed * sig_mix + mu_mix


(activate_mixstyle, deactivate_mixstyle, random_mixstyle, crossdomain_mixstyle,
 run_without_mixstyle, run_with_mixstyle) = layer_switches(MixStyle)
