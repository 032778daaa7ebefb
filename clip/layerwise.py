"""CLIP's two towers run block by block, so that methods can act between blocks.

``encode_text``/``encode_image`` here equal open_clip's ``model.encode_text``/``encode_image``
exactly; methods pass ``before_block`` (replace or insert tokens before block i) and
``after_block`` (add to a block's output) hooks, with blocks numbered 1..L as in the papers.
All tensors are batch-first: ``[N, tokens, width]``.
"""
import torch

from .clip import model_dtype

__all__ = [
    "text_embeddings", "image_embeddings", "run_blocks", "text_head", "image_head",
    "causal_mask", "prompt_length", "encode_text", "encode_text_embeddings", "encode_image", "eot_positions",
    "replace_tokens", "insert_tokens", "replace_before_blocks", "Rows", "run_block_rows",
]


def prompt_length(tokens):
    """Positions needed to encode ``tokens`` [N, 77]: up to the last end-of-text token.

    Under the causal mask, positions after a prompt's EOT cannot affect its feature, so the text
    tower may run on ``tokens[:, :prompt_length(tokens)]`` with identical results.
    """
    return int(eot_positions(tokens).max().item()) + 1


def eot_positions(tokens):
    """Index of the end-of-text token (the highest id) in each row of ``tokens`` [N, L]."""
    return tokens.argmax(dim=-1)


def causal_mask(model, length):
    """The text tower's additive causal mask [length, length] (-inf above the diagonal).

    ``length`` may exceed the context length (methods that insert tokens into the text tower);
    such a mask is built the same way as the model's own.
    """
    mask = model.attn_mask
    if length <= mask.shape[0]:
        return mask[:length, :length]
    return torch.full((length, length), float("-inf"), dtype=mask.dtype, device=mask.device).triu_(1)


def text_embeddings(model, tokens):
    """Token plus positional embeddings ``[N, L, d_t]`` for ``tokens`` [N, L] (any L <= 77)."""
    dtype = model_dtype(model)
    x = model.token_embedding(tokens).to(dtype)
    return x + model.positional_embedding[: tokens.shape[1]].to(dtype)


def image_embeddings(visual, images):
    """Patch tokens with class token and positions, after ``ln_pre``: ``[B, 1 + P, d_v]``."""
    x = visual.conv1(images.to(visual.conv1.weight.dtype))  # [B, d_v, grid, grid]
    x = x.flatten(2).transpose(1, 2)  # [B, P, d_v]
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1)
    x = x + visual.positional_embedding.to(x.dtype)
    x = visual.patch_dropout(x)
    return visual.ln_pre(x)


class Rows:
    """The token rows a caller reads from a tower's output: positions ``start .. stop-1`` of every
    sequence (e.g. CLS: ``Rows(0, 1)``), or one position per sequence (``Rows(index=eot)``, [N])."""

    def __init__(self, start=0, stop=1, index=None):
        self.start, self.stop, self.index = start, stop, index

    def take(self, x):
        """[N, L, ...] -> [N, R, ...]."""
        if self.index is None:
            return x[:, self.start:self.stop]
        return x[torch.arange(x.shape[0], device=x.device), self.index].unsqueeze(1)

    def mask(self, attn_mask):
        """The rows of an additive mask [L, L]: [R, L], or [N, 1, 1, L] (one per sequence, all heads)."""
        if self.index is None:
            return attn_mask[self.start:self.stop]
        return attn_mask[self.index][:, None, None, :]


def run_block_rows(block, x, rows, attn_mask=None):
    """``rows.take(block(x))`` [N, R, d], at ~R/L of the cost for the project's blocks (``forward_rows``)."""
    if hasattr(block, "forward_rows"):
        return block(x, attn_mask=attn_mask, rows=rows)
    return rows.take(block(x, attn_mask=attn_mask))


def run_blocks(blocks, x, attn_mask=None, first=1, last=None, before_block=None, after_block=None, rows=None):
    """Run ``blocks[first-1 : last]`` (1-based, inclusive) on ``x`` [N, L, d].

    ``before_block(i, x) -> x`` may replace or insert tokens before block i;
    ``after_block(i, x_in, x_out) -> x_out`` may modify block i's output given its input.
    ``rows`` (a ``Rows``): the last block computes only those rows; the result is [N, R, d], and
    ``after_block`` gets the same rows of that block's input.
    """
    last = len(blocks) if last is None else last
    for i in range(first, last + 1):
        if before_block is not None:
            x = before_block(i, x)
        mask = attn_mask
        if mask is not None and mask.shape[-1] != x.shape[1]:
            raise ValueError(f"attention mask {tuple(mask.shape)} does not fit {x.shape[1]} tokens before block {i}")
        if rows is not None and i == last:
            x_out = run_block_rows(blocks[i - 1], x, rows, mask)
            x = rows.take(x)
        else:
            x_out = blocks[i - 1](x, attn_mask=mask)
        if after_block is not None:
            x_out = after_block(i, x, x_out)
        x = x_out
    if rows is not None and first > last:  # no block ran
        x = rows.take(x)
    return x


def replace_tokens(x, tokens, start):
    """``x`` [N, L, d] with positions ``start .. start+K-1`` replaced by ``tokens`` ([K, d], the same
    in every row, or [N, K, d]).

    Out of place, so gradients reach ``tokens``; they are cast to ``x``'s dtype. A negative
    ``start`` counts from the end as in indexing (``-K``: the last K positions).
    """
    length, k = x.shape[1], tokens.shape[-2]
    begin = start + length if start < 0 else start
    if begin < 0 or begin + k > length:
        raise ValueError(f"cannot replace {k} tokens at position {start} of a sequence of {length}")
    tokens = tokens.to(x.dtype).expand(x.shape[0], -1, -1)
    # One copy of x (and of its gradient); a cat of slices would zero-fill two full gradients.
    return x.slice_scatter(tokens, dim=1, start=begin, end=begin + k)


def insert_tokens(x, tokens, at):
    """``x`` [N, L, d] with ``tokens`` [K, d] (the same in every row) inserted before position ``at``:
    [N, L + K, d]."""
    tokens = tokens.to(x.dtype).expand(x.shape[0], -1, -1)
    return torch.cat([x[:, :at], tokens, x[:, at:]], dim=1)


def replace_before_blocks(tokens_by_block, start):
    """A ``before_block`` hook for deep prompts: before each block i in ``tokens_by_block``
    ({i: [K, d]}), positions ``start .. start+K-1`` get that block's tokens; other blocks run on
    what the previous block produced there."""
    def before_block(i, x):
        tokens = tokens_by_block.get(i)
        return x if tokens is None else replace_tokens(x, tokens, start)
    return before_block


def text_head(model, x, eot_index):
    """``ln_final``, the row at each prompt's EOT, then ``text_projection``: ``[N, embed_dim]``."""
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), eot_index]
    return x @ model.text_projection


def image_head(visual, x):
    """``ln_post`` on the class token, then ``proj``: ``[B, embed_dim]``."""
    return visual.ln_post(x[:, 0]) @ visual.proj


def encode_text(model, tokens, truncate=True, before_block=None, after_block=None):
    """Text features ``[N, embed_dim]``; with no hooks equal to ``model.encode_text(tokens)``."""
    if truncate:
        tokens = tokens[:, : prompt_length(tokens)]
    x = model.token_embedding(tokens).to(model_dtype(model))
    return encode_text_embeddings(model, x, eot_positions(tokens), before_block, after_block)


def encode_text_embeddings(model, x, eot_index, before_block=None, after_block=None):
    """Text features ``[N, embed_dim]`` of token embeddings ``x`` [N, L, d_t] (no positions yet, L <= 77).

    For prompt learners whose input is a sequence of embeddings rather than token ids: positions
    are added to every token (learned ones included), then the blocks with the causal mask of
    length L, ``ln_final``, the row at ``eot_index`` [N] and ``text_projection``.
    """
    length = x.shape[1]
    x = x + model.positional_embedding[:length].to(x.dtype)
    x = run_blocks(model.transformer.resblocks, x, attn_mask=causal_mask(model, length),
                   before_block=before_block, after_block=after_block)
    return text_head(model, x, eot_index)


def encode_image(model, images, before_block=None, after_block=None):
    """Image features ``[B, embed_dim]``; with no hooks equal to ``model.encode_image(images)``."""
    visual = model.visual
    x = image_embeddings(visual, images)
    x = run_blocks(visual.transformer.resblocks, x, before_block=before_block, after_block=after_block)
    return image_head(visual, x)
