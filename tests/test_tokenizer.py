import pytest

pytest.importorskip("transformers")

from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import AutoTokenizer, PreTrainedTokenizerFast  # noqa: E402

from backtrack_gym.envs import BACKTRACK  # noqa: E402
from backtrack_gym.envs.core import BKSP, action_token_ids  # noqa: E402
from backtrack_gym.envs.countdown import CountDownTask  # noqa: E402
from backtrack_gym.train import add_special_tokens_to, build_model, build_tokenizer  # noqa: E402

TEXT = "Target: 24 | Numbers: 3 5 7 8\n3 + 5 = 8\n<backtrack>\n3 * 9<bksp>8 = 24"


def test_one_token_per_character_and_one_per_action_token():
    task = CountDownTask()
    tokenizer = build_tokenizer(task)
    assert len(tokenizer) == 5 + len(set(task.charset + "\n"))
    assert tokenizer.pad_token_id == 0 and tokenizer.eos_token_id == 1
    for char in task.charset:
        assert len(tokenizer(char)["input_ids"]) == 1
    ids = tokenizer(TEXT)["input_ids"]
    assert len(ids) == len(TEXT) - (len(BACKTRACK) - 1) - (len(BKSP) - 1)  # one id per character or action token
    assert ids.count(tokenizer.convert_tokens_to_ids(BACKTRACK)) == 1
    assert ids.count(tokenizer.convert_tokens_to_ids(BKSP)) == 1
    assert tokenizer.decode(ids) == TEXT
    # The action tokens survive skip_special_tokens (the env reads them); eos does not.
    assert tokenizer.decode(ids + [tokenizer.eos_token_id], skip_special_tokens=True) == TEXT
    assert tokenizer("é")["input_ids"] == [tokenizer.unk_token_id]


def test_save_pretrained_round_trips_through_auto_tokenizer(tmp_path):
    tokenizer = build_tokenizer(CountDownTask(), bos=True)
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    ids = tokenizer(TEXT)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert loaded(TEXT)["input_ids"] == ids
    assert loaded.decode(ids, skip_special_tokens=True) == TEXT
    assert len(loaded) == len(tokenizer) and loaded.get_vocab() == tokenizer.get_vocab()
    for name in ("pad_token_id", "eos_token_id", "bos_token_id", "unk_token_id"):
        assert getattr(loaded, name) == getattr(tokenizer, name)
    assert len(loaded(BACKTRACK, add_special_tokens=False)["input_ids"]) == 1
    assert action_token_ids(loaded) == action_token_ids(tokenizer)


def test_add_special_tokens_to_an_existing_tokenizer_and_model():
    # Stands in for a hub tokenizer: a word-level one with no action, eos or pad tokens.
    backend = Tokenizer(models.WordLevel({"<unk>": 0, "hello": 1, "world": 2}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    with pytest.raises(ValueError, match="add_special_tokens_to"):
        action_token_ids(tokenizer)
    model = build_model("tiny", tokenizer)
    assert model.get_input_embeddings().num_embeddings == 3
    assert add_special_tokens_to(tokenizer, model) == 4
    assert len(tokenizer) == 7 and model.get_input_embeddings().num_embeddings == 7
    assert model.config.pad_token_id == tokenizer.pad_token_id is not None
    assert model.config.eos_token_id == tokenizer.eos_token_id is not None
    ids = tokenizer("hello <backtrack> world <bksp>")["input_ids"]
    assert ids == [1, action_token_ids(tokenizer)[BACKTRACK], 2, action_token_ids(tokenizer)[BKSP]]
    assert add_special_tokens_to(tokenizer, model) == 0  # idempotent
    assert model.get_input_embeddings().num_embeddings == 7


def test_load_tokenizer_from_a_model_directory(tmp_path):
    # AutoTokenizer would swap in Qwen2's BPE tokenizer beside a Qwen2 config and lose the spaces.
    from backtrack_gym.envs import make_task
    from backtrack_gym.train.models import build_model
    from backtrack_gym.train.tokenizer import build_tokenizer, load_tokenizer

    tokenizer = build_tokenizer(make_task("countdown"))
    build_model("tiny", tokenizer, seed=0).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    text = "Target: 24 | Numbers: 3 5 7 8\n3 * 8 = 24\n<backtrack>\n"
    assert load_tokenizer(tmp_path)(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert load_tokenizer(tmp_path).decode(tokenizer(text)["input_ids"]) == text
