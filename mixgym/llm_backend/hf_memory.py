"""What an `HFBackend` model config is checked for before anything is built: attention heads that
split the hidden size, and a memory estimate against what the device has (`mixgym.resources`),
so that a model too large is refused with its estimate instead of being killed minutes later.

>>> from types import SimpleNamespace
>>> config = SimpleNamespace(model_type="gpt_neox", hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
...                          intermediate_size=256, vocab_size=4096, tie_word_embeddings=False)
>>> parameter_count(config)
720896
>>> check_heads(SimpleNamespace(hidden_size=64, num_attention_heads=6))
Traceback (most recent call last):
...
mixgym.llm_backend.hf_memory.HeadsMismatch: the model's hidden size 64 is not divisible by its number of attention heads 6
"""

from __future__ import annotations

from typing import Any


def _config_value(config: Any, *names: str) -> Any:
    """The first of `names` that the model config sets (architectures name the same thing differently)."""
    return next((getattr(config, n) for n in names if isinstance(getattr(config, n, None), int)), None)


class HeadsMismatch(ValueError):
    """A model config whose attention heads do not split its hidden size evenly."""


def check_heads(config: Any) -> None:
    """A hidden size that the attention heads cannot split evenly, named before transformers fails on it."""
    hidden = _config_value(config, "hidden_size", "n_embd", "d_model")
    heads = _config_value(config, "num_attention_heads", "n_head")
    if hidden is not None and heads is not None and (heads < 1 or hidden % heads):
        raise HeadsMismatch(f"the model's hidden size {hidden} is not divisible by its number of attention heads {heads}")


def parameter_count(config: Any) -> int:
    """About how many parameters a decoder of `config` has: embeddings (and an untied output
    matrix), and per layer attention (4 h^2) and MLP (3 h i for gated MLPs, else 2 h i)."""
    hidden = _config_value(config, "hidden_size", "n_embd", "d_model") or 0
    layers = _config_value(config, "num_hidden_layers", "n_layer") or 0
    inner = _config_value(config, "intermediate_size", "n_inner") or 4 * hidden
    vocab = _config_value(config, "vocab_size") or 0
    gated = getattr(config, "model_type", "") in ("llama", "mistral", "qwen2", "gemma")
    tied = bool(getattr(config, "tie_word_embeddings", True))
    return vocab * hidden * (1 if tied else 2) + layers * (4 * hidden * hidden + (3 if gated else 2) * hidden * inner)


def estimate_memory(config: Any, micro_batch: int, seq_len: int, pretrained: bool = False) -> int:
    """An estimate of the peak bytes of training `config` (fp32): weights, gradients, AdamW's two
    moments and the previous weights kept for weight statistics (5 copies; 6 with the pretrained
    weights kept for resets), plus activations of one micro-batch (about 34 h + 5 heads x seq_len
    numbers per token per layer, Korthikanti et al. 2022, and 3 copies of the logits)."""
    hidden = _config_value(config, "hidden_size", "n_embd", "d_model") or 0
    layers = _config_value(config, "num_hidden_layers", "n_layer") or 0
    heads = _config_value(config, "num_attention_heads", "n_head") or 1
    vocab = _config_value(config, "vocab_size") or 0
    tokens = micro_batch * seq_len
    activations = tokens * layers * (34 * hidden + 5 * heads * seq_len) + 3 * 4 * tokens * vocab
    return 4 * parameter_count(config) * (6 if pretrained else 5) + activations
