from __future__ import annotations

from types import SimpleNamespace

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from pytest_steer.steering import SpanLocationError, UnsupportedTokenizerError, locate_spans

PROMPTS = ["write a short poem about the sea . answer in all caps , do not use any commas", "tell me a story"]


def tokens_of(tiny, row: list[int], span: tuple[int, int]) -> list[str]:
    return tiny.tokenizer.convert_ids_to_tokens(row[span[0] : span[1]])


@pytest.mark.parametrize("give_texts", [True, False], ids=["texts", "decoded"])
def test_spans_land_on_the_templated_left_padded_rows(tiny, give_texts: bool) -> None:
    texts = tiny.chat(PROMPTS)
    input_ids, attention_mask = tiny.batch(texts)
    found = [
        locate_spans(
            tiny.tokenizer,
            input_ids[row],
            substrings,
            text=texts[row] if give_texts else None,
            attention_mask_row=attention_mask[row],
        )
        for row, substrings in enumerate([["answer in all caps", "commas"], ["a story"]])
    ]
    # Row 0: BOS, <|im_start|>, user, then the content; row 1 is left-padded by 14 tokens.
    assert found[0] == ([(11, 15), (20, 21)], [])
    assert found[1] == ([(19, 21)], [])
    assert tokens_of(tiny, input_ids[0].tolist(), (11, 15)) == ["answer", "in", "all", "caps"]
    assert tokens_of(tiny, input_ids[1].tolist(), (19, 21)) == ["a", "story"]


def test_a_partial_word_covers_every_overlapping_token(tiny) -> None:
    texts = tiny.chat(PROMPTS[:1])
    input_ids, _ = tiny.batch(texts)
    spans, missing = locate_spans(tiny.tokenizer, input_ids[0], ["nswer i"], text=texts[0])
    assert (spans, missing) == ([(11, 13)], [])


def test_missing_and_empty_substrings_are_reported_not_placed(tiny) -> None:
    texts = tiny.chat(PROMPTS[:1])
    input_ids, _ = tiny.batch(texts)
    spans, missing = locate_spans(tiny.tokenizer, input_ids[0], ["purple", "", "all caps"], text=texts[0])
    assert spans == [(13, 15)]
    assert missing == ["purple", ""]


def test_first_occurrence_is_used(tiny) -> None:
    texts = tiny.chat(["the cat sat on the mat"])
    input_ids, _ = tiny.batch(texts)
    spans, _ = locate_spans(tiny.tokenizer, input_ids[0], ["the"], text=texts[0])
    assert spans == [(3, 4)]


def test_rows_tokenized_without_bos_are_aligned_too(tiny) -> None:
    texts = tiny.chat(PROMPTS[:1])
    input_ids = tiny.tokenizer(texts, add_special_tokens=False, return_tensors="pt")["input_ids"]
    assert input_ids[0, 0] != tiny.tokenizer.bos_token_id
    spans, _ = locate_spans(tiny.tokenizer, input_ids[0], ["answer in all caps"], text=texts[0])
    assert spans == [(10, 14)]


def test_a_text_that_is_not_the_rows_source_is_refused(tiny) -> None:
    texts = tiny.chat(PROMPTS[:1])
    input_ids, _ = tiny.batch(texts)
    with pytest.raises(SpanLocationError, match="does not tokenize to the row"):
        locate_spans(tiny.tokenizer, input_ids[0], ["all caps"], text=PROMPTS[0])


def test_a_row_that_does_not_round_trip_needs_its_text(tiny) -> None:
    text = "answer , . all caps"
    input_ids = tiny.tokenizer(text, return_tensors="pt")["input_ids"]
    with pytest.raises(SpanLocationError, match="texts="):
        locate_spans(tiny.tokenizer, input_ids[0], ["all caps"])
    assert locate_spans(tiny.tokenizer, input_ids[0], ["all caps"], text=text) == ([(4, 6)], [])


def test_right_padding_is_refused(tiny) -> None:
    with pytest.raises(SpanLocationError, match="left"):
        locate_spans(tiny.tokenizer, [1, 30, 31, 0], ["x"], attention_mask_row=[1, 1, 1, 0])


def test_slow_tokenizers_are_refused() -> None:
    with pytest.raises(UnsupportedTokenizerError, match="fast tokenizer"):
        locate_spans(SimpleNamespace(is_fast=False), [1, 2], ["x"])


def byte_level_bpe() -> PreTrainedTokenizerFast:
    """A GPT-2-style byte-level BPE trained in-process: tokens carry their leading space."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = ["Write a poem about the sea. Your ENTIRE response should be in English, and in all capital letters."]
    backend.train_from_iterator(corpus * 20, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.chat_template = (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return tok


@pytest.mark.parametrize("give_text", [True, False], ids=["texts", "decoded"])
def test_byte_level_bpe_spans_include_the_leading_space_token(give_text: bool) -> None:
    tok = byte_level_bpe()
    instruction = "Your ENTIRE response should be in English, and in all capital letters."
    text = tok.apply_chat_template(
        [{"role": "user", "content": f"Write a poem about the sea. {instruction}"}], tokenize=False, add_generation_prompt=True
    )
    ids = tok(text)["input_ids"]
    spans, missing = locate_spans(tok, ids, [instruction], text=text if give_text else None)
    assert missing == []
    [(start, end)] = spans
    assert tok.decode(ids[start:end]) == " " + instruction
    assert tok.convert_ids_to_tokens(ids[end]) == "<|im_end|>"
