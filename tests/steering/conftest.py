"""Offline fixtures for the steering tests: a word-level fast tokenizer with a chat template
and tiny randomly initialized decoders of each supported family."""

from __future__ import annotations

import copy

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>"]
WORDS = (
    "system user assistant you are a helpful write short poem about the sea and sky answer in all caps "
    "do not use any commas your response should contain at least three sentences end with is there anything "
    "else i can help with wrap entire double quotation marks tell me story cat dog sat on mat hello world"
).split()
PUNCTUATION = [",", ".", "?", "!", '"']
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

FAMILIES: dict[str, tuple[type, type]] = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM),
}


def build_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + sorted(set(WORDS)) + PUNCTUATION)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    backend.decoder = decoders.WordPiece()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "left"
    return tok


class Tiny:
    """A tokenizer, seeded tiny models of each family, and the input plumbing the tests share."""

    def __init__(self) -> None:
        self.tokenizer = build_tokenizer()
        self._built: dict[str, PreTrainedModel] = {}

    def model(self, family: str = "llama", attn: str = "eager") -> PreTrainedModel:
        """The same seeded weights for a family under either attention implementation."""
        if family not in self._built:
            config_class, model_class = FAMILIES[family]
            config = config_class(
                hidden_size=64,
                head_dim=16,
                num_hidden_layers=4,
                num_attention_heads=4,
                num_key_value_heads=2,
                intermediate_size=128,
                vocab_size=len(self.tokenizer),
                max_position_embeddings=256,
                pad_token_id=self.tokenizer.pad_token_id,
                bos_token_id=self.tokenizer.bos_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
                tie_word_embeddings=False,
            )
            torch.manual_seed(0)
            model = model_class(config).eval()
            # Larger query/key weights than the default init give peaked attention, so steering shows.
            with torch.no_grad():
                for name, parameter in model.named_parameters():
                    if name.endswith(("q_proj.weight", "k_proj.weight")):
                        parameter.mul_(8.0)
            model.generation_config.pad_token_id = self.tokenizer.pad_token_id
            self._built[family] = model
        model = copy.deepcopy(self._built[family])
        model.set_attn_implementation(attn)
        return model

    def chat(self, contents: list[str]) -> list[str]:
        return [
            self.tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)
            for content in contents
        ]

    def batch(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        encoding = self.tokenizer(texts, padding=True, return_tensors="pt")
        return encoding["input_ids"], encoding["attention_mask"]

    @staticmethod
    def positions(attention_mask: torch.Tensor) -> torch.Tensor:
        """Position ids as generate() builds them for left-padded rows."""
        return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@pytest.fixture(scope="session")
def tiny() -> Tiny:
    return Tiny()
