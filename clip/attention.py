"""open_clip's residual attention block, with a faster path where autograd records or autocast is on.

``clip.load`` gives every plain self-attention block of the model this class (``adopt_blocks``):
same parameters, same state-dict keys, same maths; only how the attention and the casts are done
differs, and only where it is faster:

- ``nn.MultiheadAttention`` transposes its batch-first input to sequence-first, and ``F.linear``
  of that non-contiguous input with a frozen weight runs as one small matmul per position with
  the weight expanded (the reference's sequence-first CLIP never does this). On a CPU that is 2x
  slower than one matmul in fp32 and 40x slower in bf16, which made ``PREC amp`` on a CPU many
  times slower than fp32. ``self_attention`` projects q/k/v on the contiguous input and calls
  ``F.scaled_dot_product_attention`` as ``nn.MultiheadAttention`` does.
- Autocast casts a frozen fp32 weight again at every call (it keeps only casts of trainable
  leaves); ``autocast_weight`` casts each frozen weight once (the same rounding, the same numbers).

In eval mode without autograd or autocast, ``nn.MultiheadAttention`` takes its fused inference
kernel and the block runs as open_clip's, so frozen features and evaluation logits stay bit-equal
to open_clip's (there ``self_attention`` would be ~10% faster on a CPU, with rounding differences).
"""
import open_clip.transformer
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.weak import WeakIdKeyDictionary

__all__ = ["ResidualAttentionBlock", "adopt_blocks", "self_attention", "autocast_weight"]

# Frozen weights in the autocast dtype: {weight: ((version, data_ptr, dtype), cast weight)}.
_AUTOCAST_WEIGHTS = WeakIdKeyDictionary()


def autocast_weight(weight, device_type):
    """``weight`` as autocast would cast it for a matmul on ``device_type``, cast once per weight.

    The copy is kept until the weight changes in place (``load_state_dict``), moves or dies.
    Outside autocast, and for trainable or non-fp32 weights, ``weight`` itself.
    """
    if (weight is None or weight.requires_grad or weight.dtype != torch.float32
            or not torch.is_autocast_enabled(device_type)):
        return weight
    dtype = torch.get_autocast_dtype(device_type)
    key = (weight._version, weight.data_ptr(), dtype)
    entry = _AUTOCAST_WEIGHTS.get(weight)
    if entry is None or entry[0] != key:
        entry = (key, weight.detach().to(dtype))
        _AUTOCAST_WEIGHTS[weight] = entry
    return entry[1]


def linear(x, weight, bias):
    """``F.linear`` with frozen weights cast for autocast once (``autocast_weight``)."""
    device_type = x.device.type
    return F.linear(x, autocast_weight(weight, device_type), autocast_weight(bias, device_type))


def self_attention(attn, x, attn_mask=None, queries=None):
    """``attn(x, x, x, need_weights=False)[0]`` for a batch-first ``nn.MultiheadAttention`` on ``x`` [N, L, d].

    ``queries`` [N, R, d] (rows of ``x``): only those rows attend (over all of ``x``) -> [N, R, d];
    ``attn_mask`` then has their rows only ([R, L], or [N, 1, R, L] per sequence).
    """
    n, length, width = x.shape
    heads, head_width = attn.num_heads, width // attn.num_heads
    if queries is None:
        qkv = linear(x, attn.in_proj_weight, attn.in_proj_bias)  # [N, L, 3d]
        q, k, v = qkv.view(n, length, 3, heads, head_width).permute(2, 0, 3, 1, 4).unbind(0)  # [N, h, L, d/h]
    else:
        w_q, w_kv = attn.in_proj_weight.split([width, 2 * width])
        b_q, b_kv = attn.in_proj_bias.split([width, 2 * width])
        q = linear(queries, w_q, b_q).view(n, -1, heads, head_width).transpose(1, 2)  # [N, h, R, d/h]
        kv = linear(x, w_kv, b_kv)  # [N, L, 2d]
        k, v = kv.view(n, length, 2, heads, head_width).permute(2, 0, 3, 1, 4).unbind(0)  # [N, h, L, d/h]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask, dropout_p=attn.dropout if attn.training else 0.0)
    out = out.transpose(1, 2).reshape(n, -1, width)
    return linear(out, attn.out_proj.weight, attn.out_proj.bias)


class ResidualAttentionBlock(open_clip.transformer.ResidualAttentionBlock):
    """open_clip's block on batch-first ``x`` [N, L, d]; see the module docstring for what differs."""

    def forward(self, q_x, k_x=None, v_x=None, attn_mask=None, rows=None):
        if rows is not None:
            return self.forward_rows(q_x, rows, attn_mask)
        if k_x is not None or v_x is not None or self._fused_inference(q_x):
            return super().forward(q_x, k_x, v_x, attn_mask=attn_mask)
        x = q_x
        y = self.ln_1(x)
        mask = attn_mask.to(y.dtype) if attn_mask is not None else None  # as open_clip casts it
        x = x + self.ls_1(self_attention(self.attn, y, mask))
        mlp = self.mlp
        h = mlp.gelu(linear(self.ln_2(x), mlp.c_fc.weight, mlp.c_fc.bias))
        return x + self.ls_2(linear(h, mlp.c_proj.weight, mlp.c_proj.bias))

    def forward_rows(self, x, rows, attn_mask=None):
        """The block's output at the ``rows`` of ``x`` only: [N, R, d] (``rows.take``; see ``layerwise.Rows``);
        called as ``block(x, attn_mask=..., rows=rows)``, so module hooks see it.

        Every row still serves as key and value; only the chosen rows are queries and go through
        the MLP, so a tower's last block costs ~R/L of a full one where only R rows are read.
        """
        y = self.ln_1(x)
        mask = rows.mask(attn_mask.to(y.dtype)) if attn_mask is not None else None
        x = rows.take(x) + self.ls_1(self_attention(self.attn, y, mask, queries=rows.take(y)))
        mlp = self.mlp
        h = mlp.gelu(linear(self.ln_2(x), mlp.c_fc.weight, mlp.c_fc.bias))
        return x + self.ls_2(linear(h, mlp.c_proj.weight, mlp.c_proj.bias))

    def _fused_inference(self, x):
        """True where ``nn.MultiheadAttention`` takes its fused inference kernel: eval mode, no
        autocast, nothing for autograd to record."""
        attn = self.attn
        records = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in attn.parameters()))
        return not (records or attn.training or torch.is_autocast_enabled(x.device.type))


def _plain(block):
    """An open_clip self-attention block whose parts ``ResidualAttentionBlock.forward`` reproduces."""
    attn, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
    return (type(block) is open_clip.transformer.ResidualAttentionBlock and type(attn) is nn.MultiheadAttention
            and attn.batch_first and attn._qkv_same_embed_dim and attn.bias_k is None and not attn.add_zero_attn
            and not hasattr(block, "ln_1_kv")
            and isinstance(mlp, nn.Sequential) and list(mlp._modules) == ["c_fc", "gelu", "c_proj"])


def adopt_blocks(model):
    """Give every plain open_clip block of ``model`` the class ``ResidualAttentionBlock`` (it adds
    no state); returns how many. Other blocks (e.g. cross-attention) stay as they are."""
    count = 0
    for module in model.modules():
        if _plain(module):
            module.__class__ = ResidualAttentionBlock
            count += 1
    return count
