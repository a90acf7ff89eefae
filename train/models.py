"""Model factory: Qwen2-architecture presets trained from scratch, named by size, or any HF model path.

Presets (``d_model``, layers, attention heads, KV heads, FFN width); parameter counts
are for a character vocabulary of about 100 tokens with tied embeddings:

========  =======  ======  =====  ========  =====  ==========
name      d_model  layers  heads  KV heads  FFN    parameters
========  =======  ======  =====  ========  =====  ==========
tiny      32       2       4      2         64     ~0.02M (tests)
1M        128      4       4      1         512    ~0.96M
3M        256      6       4      1         512    ~3.37M (the research's 3M model)
17M       512      8       8      2         1024   ~17.9M
38M       640      10      10     2         1536   ~39.4M
144M      1024     12      16     4         3072   ~144.8M
========  =======  ======  =====  ========  =====  ==========

A model that is not a preset is a local directory or a hub id: :func:`check_model_source`
refuses a name that is neither before anything is loaded (a mistyped path never reaches
the hub), and a hub id the hub cannot provide is a :class:`ModelNotFoundError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, Qwen2Config

# name -> (hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads, intermediate_size)
PRESETS: dict[str, tuple[int, int, int, int, int]] = {
    "tiny": (32, 2, 4, 2, 64),
    "1M": (128, 4, 4, 1, 512),
    "3M": (256, 6, 4, 1, 512),
    "17M": (512, 8, 8, 2, 1024),
    "38M": (640, 10, 10, 2, 1536),
    "144M": (1024, 12, 16, 4, 3072),
}


class ModelNotFoundError(ValueError):
    """A model name that is no preset, no saved model directory and no model the hub provides."""


def is_hub_id(name: str) -> bool:
    """Whether ``name`` has the form of a hub repo id (``name`` or ``org/name``)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def check_model_source(model: str, *, presets: bool = False) -> None:
    """Raise :class:`ModelNotFoundError` unless ``model`` can be loaded: a saved model directory,
    a hub id, or (with ``presets``) a preset name. Only the local file system is looked at."""
    if presets and model in PRESETS:
        return
    kinds = f"a preset ({', '.join(PRESETS)}), " if presets else ""
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"model: {model} holds no saved model (no config.json)")
        return
    if not is_hub_id(model):
        raise ModelNotFoundError(f"model: no such directory {model!r}; it takes {kinds}a model directory or a hub id")


@contextlib.contextmanager
def hub_errors(model: str) -> Iterator[None]:
    """Turn a failed ``from_pretrained`` of ``model`` into one clear :class:`ModelNotFoundError`."""
    try:
        yield
    except OSError as err:
        reason = (str(err).strip() or type(err).__name__).splitlines()[0]
        if Path(model).expanduser().exists():
            raise ModelNotFoundError(f"model: cannot load {model} ({reason})") from None
        message = f"model: {model!r} is no local directory and the hub could not provide it ({reason})"
        raise ModelNotFoundError(message) from None


def load_pretrained(model: str, **kwargs: Any) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """The tokenizer and causal LM saved at ``model`` (a directory or a hub id); ``kwargs`` go to
    ``AutoModelForCausalLM.from_pretrained``."""
    from transformers import AutoModelForCausalLM

    from backtrack_gym.train.tokenizer import load_tokenizer

    check_model_source(model)
    with hub_errors(model):
        return load_tokenizer(model), AutoModelForCausalLM.from_pretrained(model, **kwargs)


def model_config(
    size: str,
    vocab_size: int,
    *,
    pad_token_id: int | None = None,
    eos_token_id: int | None = None,
    bos_token_id: int | None = None,
    max_position_embeddings: int = 4096,
    **overrides: Any,
) -> Qwen2Config:
    """The :class:`~transformers.Qwen2Config` of preset ``size`` for ``vocab_size`` tokens.

    ``overrides`` set any other config field (e.g. ``attn_implementation``, ``rope_theta``).
    """
    from transformers import Qwen2Config

    if size not in PRESETS:
        raise ValueError(f"unknown model size {size!r}; known: {list(PRESETS)}")
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    hidden, layers, heads, kv_heads, ffn = PRESETS[size]
    fields: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "intermediate_size": ffn,
        "max_position_embeddings": max_position_embeddings,
        "tie_word_embeddings": True,
        "pad_token_id": pad_token_id,
        "eos_token_id": eos_token_id,
        "bos_token_id": bos_token_id,
        "attn_implementation": "sdpa",
    }
    fields.update(overrides)
    return Qwen2Config(**fields)


def build_model(
    size_or_path: str, tokenizer: PreTrainedTokenizerBase, *, seed: int | None = None, **kwargs: Any
) -> PreTrainedModel:
    """A causal LM for ``tokenizer``: a fresh preset (randomly initialised) or a pretrained model.

    A preset name builds :func:`model_config` (``kwargs`` are config overrides) with
    weights drawn under ``torch.manual_seed(seed)`` when ``seed`` is given. Anything
    else is a local path or hub name passed to ``AutoModelForCausalLM.from_pretrained``
    (``kwargs`` go there too); the tokenizer's ``<backtrack>``/``<bksp>``/eos/pad are
    added to it and the embeddings resized when needed.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from backtrack_gym.train.tokenizer import add_special_tokens_to

    if size_or_path in PRESETS:
        config = model_config(
            size_or_path,
            len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id,
            **kwargs,
        )
        if seed is not None:
            torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config)
    check_model_source(size_or_path, presets=True)
    with hub_errors(size_or_path):
        model = AutoModelForCausalLM.from_pretrained(size_or_path, **kwargs)
    add_special_tokens_to(tokenizer, model)
    return model


def count_parameters(size: str, vocab_size: int) -> int:
    """Number of parameters of preset ``size`` (tied embeddings counted once), built on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config(size, vocab_size))
    return sum(p.numel() for p in model.parameters())
