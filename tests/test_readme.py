"""The README documents every option, with its ini name."""

from __future__ import annotations

import re
from pathlib import Path

from pytest_steer.plan.options import OPTIONS

REPO = Path(__file__).resolve().parents[1]


def test_every_option_is_in_the_readme_table() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    missing = [option.cli for option in OPTIONS if f"| `{option.cli}` | `{option.ini}` |" not in readme]
    assert not missing, f"README options table lacks {missing}"


def test_the_steering_method_example_runs(pytester, tiny_checkpoint: Path) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"```python\n# conftest.py\n(.*?)```", readme, re.S)
    assert match, "README lost its conftest.py example"
    pytester.makeconftest(match.group(1))
    pytester.makepyfile(test_answers="def test_answers(steer_case):\n    pass\n")
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--steer-model",
        str(tiny_checkpoint),
        "--steer-limit",
        "2",
        "--steer-max-new-tokens",
        "4",
        "--steer-no-cache",
        "--steer-method",
        "remind:times=2",
        "-v",
    )
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        ["*test_answers[[]s001-remind_times2-t0[]]*", "configs: baseline (unsteered); remind_times2 (remind: times 2)"]
    )


def test_the_pasta_example_runs_and_says_substrings_hold_one_list_per_row() -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from pytest_steer.model.loading import load_tokenizer

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"and so is PASTA,(.*?)```python\n(from pytest_steer.steering import PASTA\n.*?)```", readme, re.S)
    assert match, "README lost its PASTA example"
    assert "`substrings` takes one list per row of the batch" in " ".join(match.group(1).split())
    tokenizer = load_tokenizer("embedded")
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=24, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Write a haiku. Do not use any commas."}], tokenize=False)
    batch = tokenizer([text], return_tensors="pt")
    namespace = {"model": model, "tokenizer": tokenizer, "input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    exec(match.group(2), namespace)
    assert namespace["output"].shape[0] == 1
