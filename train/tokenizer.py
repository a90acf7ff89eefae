"""Tokenizers for backtrack-gym: a character-level one per task alphabet, or any HF one with our tokens added.

The character tokenizer is a ``tokenizers`` WordLevel model with one token per
character of the task's charset (plus newline) and the special tokens below, wrapped
in :class:`transformers.PreTrainedTokenizerFast`; it round-trips through
``save_pretrained`` and ``AutoTokenizer.from_pretrained``, and beside a model
through :func:`save_tokenizer` and ``AutoTokenizer.from_pretrained``.

``<backtrack>`` and ``<bksp>`` are *added* tokens (never split, one id each) but not
*special* ones: ``decode(..., skip_special_tokens=True)`` keeps them, because the env
must read the ``<backtrack>`` line and a trainer must see the backspaces.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backtrack_gym.envs.core import ACTION_TOKENS, BACKTRACK, BKSP, Task

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast

EOS = "<eos>"
PAD = "<pad>"
BOS = "<bos>"
UNK = "<unk>"
GENERIC_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")
CHAR_TOKENIZER_MODULE = "tokenization_backtrack_gym"
CHAR_TOKENIZER_SOURCE = '''"""backtrack-gym's tokenizer class, for ``AutoTokenizer`` (see its ``save_tokenizer``)."""

from transformers import TokenizersBackend


class CharTokenizer(TokenizersBackend):
    """A ``tokenizer.json`` loaded as it is."""
'''


def build_tokenizer(alphabet: str | Task, *, bos: bool = False) -> PreTrainedTokenizerFast:
    """A character-level tokenizer over ``alphabet`` (a string or a task, whose ``charset`` is used).

    Ids: ``<pad>`` 0, ``<eos>`` 1, ``<unk>`` 2, ``<backtrack>`` 3, ``<bksp>`` 4,
    ``<bos>`` 5 when ``bos``, then the characters in first-seen order (newline always
    included). A ``<bos>`` tokenizer prepends it to every encoded text.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    charset = alphabet.charset if isinstance(alphabet, Task) else alphabet
    specials = [PAD, EOS, UNK, BACKTRACK, BKSP] + ([BOS] if bos else [])
    chars = list(dict.fromkeys(charset + "\n"))
    vocab = {token: i for i, token in enumerate(specials + chars)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    # Every character (newline included) is its own pre-token; added tokens are matched before this.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    if bos:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
        )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS if bos else None,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.add_tokens([AddedToken(token, special=False, normalized=False) for token in ACTION_TOKENS])
    return tokenizer


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, path: str | os.PathLike) -> None:
    """``tokenizer.save_pretrained(path)``, so that ``AutoTokenizer.from_pretrained(path)`` returns it as it is.

    Beside a Qwen2 model's config, ``AutoTokenizer`` overrides a declared generic
    tokenizer class (transformers 5 holds Qwen2 checkpoints' declared classes to be
    wrong) and rebuilds ``tokenizer.json`` as Qwen2's byte-level BPE tokenizer, which
    drops every character outside its byte alphabet, spaces included. A directory that
    declares its own tokenizer class (``auto_map``) keeps the declared one: here
    ``CharTokenizer``, shipped beside it as a subclass of the generic class that adds
    nothing, so the default load takes the generic class and ``trust_remote_code=True``
    takes the subclass; both read ``tokenizer.json`` unchanged. A tokenizer of a
    specific class (a pretrained model's) is saved as it is.
    """
    tokenizer.save_pretrained(path)
    config_file = Path(path) / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    if config.get("tokenizer_class") not in GENERIC_TOKENIZER_CLASSES:
        return
    (Path(path) / f"{CHAR_TOKENIZER_MODULE}.py").write_text(CHAR_TOKENIZER_SOURCE)
    config["auto_map"] = {"AutoTokenizer": [None, f"{CHAR_TOKENIZER_MODULE}.CharTokenizer"]}
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def load_tokenizer(path: str | os.PathLike) -> PreTrainedTokenizerBase:
    """Load a tokenizer saved with ``save_pretrained``, keeping our character tokenizer as it is.

    ``AutoTokenizer`` reads the tokenizer class of a Qwen2 *model* directory from the
    model's config (transformers 5 treats a Qwen2 checkpoint's declared tokenizer
    class as wrong) and would rebuild ours as a BPE tokenizer that drops spaces, unless
    the directory was written by :func:`save_tokenizer` (as ``final/`` is, but not the
    Trainer's checkpoints); a directory holding only the tokenizer loads fine either way.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    config_file = Path(path) / "tokenizer_config.json"
    declared = json.loads(config_file.read_text()).get("tokenizer_class") if config_file.is_file() else None
    if declared in GENERIC_TOKENIZER_CLASSES:
        return PreTrainedTokenizerFast.from_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


def add_special_tokens_to(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel | None = None) -> int:
    """Give an existing HF tokenizer (and model) the ``<backtrack>``, ``<bksp>``, eos and pad tokens.

    Adds whichever are missing (eos ``<eos>`` and pad ``<pad>`` only when the tokenizer
    has none), resizes ``model``'s embeddings to the new vocabulary and sets its
    config's pad and eos ids. Returns the number of tokens added.
    """
    from tokenizers import AddedToken

    vocab = tokenizer.get_vocab()
    missing = [token for token in ACTION_TOKENS if token not in vocab]
    added = tokenizer.add_tokens([AddedToken(token, special=False, normalized=False) for token in missing])
    special: dict[str, Any] = {}
    if tokenizer.eos_token is None:
        special["eos_token"] = EOS
    if tokenizer.pad_token is None:
        special["pad_token"] = PAD
    if special:
        added += tokenizer.add_special_tokens(special)
    if model is not None:
        if model.get_input_embeddings().num_embeddings < len(tokenizer):
            model.resize_token_embeddings(len(tokenizer))
        model.config.pad_token_id = tokenizer.pad_token_id
        model.config.eos_token_id = tokenizer.eos_token_id
    return added
