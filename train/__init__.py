"""Data building, tokenizer and model factory, SFT, GRPO and evaluation."""

from backtrack_gym.train.models import PRESETS, build_model, count_parameters, model_config
from backtrack_gym.train.tokenizer import add_special_tokens_to, build_tokenizer

__all__ = ["PRESETS", "add_special_tokens_to", "build_model", "build_tokenizer", "count_parameters", "model_config"]
