"""Data building, tokenizer and model factory, SFT, GRPO and evaluation."""
