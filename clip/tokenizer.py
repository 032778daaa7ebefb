"""OpenAI-compatible ``tokenize`` on open_clip's BPE (identical vocabulary and ids)."""
import torch
from open_clip.tokenizer import SimpleTokenizer

__all__ = ["tokenize", "SOT_ID", "EOT_ID"]

_tokenizer = SimpleTokenizer()
SOT_ID = _tokenizer.sot_token_id  # 49406
EOT_ID = _tokenizer.eot_token_id  # 49407, the highest id: argmax over a row finds it


def tokenize(texts, context_length=77, truncate=False):
    """Token ids ``[N, context_length]`` (int64), zero-padded.

    Too-long text raises (OpenAI's behaviour) unless ``truncate``, which keeps EOT as the last token.
    """
    if isinstance(texts, str):
        texts = [texts]
    result = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, text in enumerate(texts):
        tokens = [SOT_ID] + _tokenizer.encode(text) + [EOT_ID]
        if len(tokens) > context_length:
            if not truncate:
                raise RuntimeError(f"Input {text!r} is too long for context length {context_length}")
            tokens = tokens[:context_length]
            tokens[-1] = EOT_ID
        result[i, :len(tokens)] = torch.tensor(tokens)
    return result
