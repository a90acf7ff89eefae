"""Test-time compute of a decoder in FLOPs, so methods can be compared at equal compute.

Per token and layer, a decoder multiplies by its weight matrices,
``2d² + 2·d·d_kv + 3·d·d_ff`` multiply-accumulates (the query and output projections,
the key and value projections, and the three matrices of a gated FFN), and attends over
its context of ``c`` tokens, ``2·d·c`` more (scores and the weighted sum of values).
The output head adds ``d·V`` for each token whose logits are taken. One
multiply-accumulate is two FLOPs. With a KV cache a sequence of ``p`` prompt and ``g``
generated tokens runs every one of its ``p + g`` tokens once; the token at position
``t`` (1-based) attends over ``t`` tokens; logits are taken for the ``g`` tokens
sampled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DecoderShape:
    """The sizes that set a decoder's compute.

    Attributes:
        d_model: hidden size ``d``.
        layers: decoder layers.
        d_kv: width of the key (and of the value) projection: KV heads × head size.
        d_ff: FFN inner width.
        vocab: output vocabulary ``V``.
    """

    d_model: int
    layers: int
    d_kv: int
    d_ff: int
    vocab: int

    @classmethod
    def from_config(cls, config: Any) -> DecoderShape:
        """The shape of a Hugging Face decoder config (Qwen2, Llama, Mistral and alike)."""
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return cls(
            d_model=config.hidden_size,
            layers=config.num_hidden_layers,
            d_kv=config.num_key_value_heads * head_dim,
            d_ff=config.intermediate_size,
            vocab=config.vocab_size,
        )

    def weight_macs_per_layer(self) -> int:
        d = self.d_model
        return 2 * d * d + 2 * d * self.d_kv + 3 * d * self.d_ff

    def token_flops(self, context: int, *, logits: bool = True) -> int:
        """FLOPs of one token that attends over ``context`` tokens (itself included)."""
        macs = self.layers * (self.weight_macs_per_layer() + 2 * self.d_model * context)
        return 2 * (macs + (self.d_model * self.vocab if logits else 0))

    def sequence_flops(self, prompt_tokens: int, generated_tokens: int) -> int:
        """FLOPs of encoding ``prompt_tokens`` and then sampling ``generated_tokens`` with a KV cache."""
        total = prompt_tokens + generated_tokens
        attended = total * (total + 1) // 2  # sum of t over positions 1..total
        macs = self.layers * (total * self.weight_macs_per_layer() + 2 * self.d_model * attended)
        return 2 * (macs + generated_tokens * self.d_model * self.vocab)
