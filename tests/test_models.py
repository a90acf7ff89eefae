import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformers import AutoModelForCausalLM  # noqa: E402

from backtrack_gym.envs.countdown import CountDownTask  # noqa: E402
from backtrack_gym.train import PRESETS, build_model, build_tokenizer, count_parameters, model_config  # noqa: E402

NOMINAL = {"1M": 1e6, "3M": 3e6, "17M": 17e6, "38M": 38e6, "144M": 144e6}


@pytest.mark.parametrize("size", list(NOMINAL))
def test_preset_parameter_counts_are_near_their_names(size):
    count = count_parameters(size, vocab_size=96)
    assert abs(count - NOMINAL[size]) / NOMINAL[size] < 0.15, count


def test_the_3m_preset_is_the_research_model():
    config = model_config("3M", vocab_size=96, pad_token_id=0, eos_token_id=1)
    assert config.model_type == "qwen2"
    assert (config.hidden_size, config.num_hidden_layers) == (256, 6)
    assert (config.num_attention_heads, config.num_key_value_heads, config.intermediate_size) == (4, 1, 512)
    assert config.tie_word_embeddings and (config.pad_token_id, config.eos_token_id) == (0, 1)
    assert model_config("3M", 96, num_hidden_layers=2).num_hidden_layers == 2
    assert set(NOMINAL) < set(PRESETS)
    with pytest.raises(ValueError, match="unknown model size"):
        model_config("5M", 96)


def test_save_load_round_trip_gives_identical_logits(tmp_path):
    tokenizer = build_tokenizer(CountDownTask())
    model = build_model("tiny", tokenizer, seed=0).eval()
    assert model.config.vocab_size == len(tokenizer)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.tensor([tokenizer("Target: 24 | Numbers: 3 5 7 8\n3 * 8 = 24")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)
    # A path goes to from_pretrained; the same seed builds the same weights.
    again = build_model(str(tmp_path), tokenizer).eval()
    with torch.no_grad():
        assert torch.equal(again(ids).logits, model(ids).logits)
        assert torch.equal(build_model("tiny", tokenizer, seed=0).eval()(ids).logits, model(ids).logits)
