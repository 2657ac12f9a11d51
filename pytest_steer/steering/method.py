"""The interface every steering method implements, and the batch it receives.

A method changes what the model is given, at one or both of two points:

- ``prepare(prompt, highlights)``: the prompt text, before the chat template (a prompt
  method such as ``emphasis``);
- ``steer(batch)``: a context manager that generation runs under, given the tokenized,
  left-padded batch of distinct prompts and each one's highlights (a model method such as
  PASTA). The forwards inside it are the prefill of that batch, then decode steps whose
  rows are responses: before the rows change (a prompt fanned out to its trials, a
  finished response dropped), generation calls ``select_rows`` on the object the block
  yields with the prompt row of every response row.

A batch holds the rows of every config that can share it: the baseline's, prompt methods',
and those of methods whose class implements ``steer_together(parts, batch)``, one block that
steers each config's own prompt rows and leaves the others as the unsteered model computes
them (PASTA and actadd do). The configs of any other method keep batches of their own.

``params()`` names everything a response depends on besides the prompt; it goes into the
response cache key (with what names the method's code, :func:`pytest_steer.steering.identity.method_identity`),
the run's fingerprint, results.json and the report. The parameters ``--steer-method
name:key=value`` may give are those of ``__init__``, typed by its annotations, or the
class's ``parameters`` (:mod:`pytest_steer.steering.parameters`); they are checked and
converted at collection. Methods are made by ``create(params, model_config)`` on each
worker, once the model's config is known, then given the run's prompts and a way to load
the model (``bind_run``). A method that leaves some prompts unsteered whatever the model
names them and why (``unsteered``: their case records and the reports say so), and refuses
at collection prompts it cannot steer at all (``check_prompts``). Third-party methods
register through the ``pytest_steer_methods`` hook (:mod:`pytest_steer.hooks`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pytest_steer.steering.parameters import Parameter


@dataclass(frozen=True)
class PreparedPrompt:
    """A prompt as a method rewrote it, and the highlights it could not find."""

    text: str
    missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class PromptBatch:
    """One tokenized batch, as generation will run it."""

    model: Any
    tokenizer: Any
    input_ids: Any  # (rows, length), left-padded
    attention_mask: Any
    texts: Sequence[str]  # per row: the exact text tokenized into input_ids (chat template applied)
    highlights: Sequence[Sequence[str]]  # per row: the spans to emphasize


@dataclass
class SteeredBatch:
    """What a ``steer`` block yields: per prompt row, the highlights it could not place."""

    missing: list[list[str]] = field(default_factory=list)

    def select_rows(self, prompt_rows: Any) -> None:
        """The forwards that follow run one row per entry of ``prompt_rows`` (a 1-D tensor of
        prompt row indices, repeats allowed). A method that keeps per-row state indexes it
        here; this one keeps none."""

    def unsteered_tokens(self) -> list[int] | None:
        """Per prompt row, how many of its first real tokens keep, under this block, the keys and values the
        unsteered model gives them, so that the engine may compute the prefix the batch's prompts share once,
        unsteered (:mod:`pytest_steer.engine.prefix`). The engine asks the object ``steer`` or ``steer_together``
        returns, before entering it. None (the default, also for a block without this method): any token may be
        steered, and every prompt is prefilled whole."""
        return None


class SteeringMethod:
    """Base class of steering methods: by default, it changes nothing.

    Subclasses set ``name`` (letters, digits and ``_``; it starts each config name) and
    override ``prepare``, ``steer`` or both, and ``params``. A subclass whose ``create``
    takes other parameters than its ``__init__`` lists them in ``parameters``.

    ``version`` names the code of a built-in method (one defined in ``pytest_steer``) in the
    response cache key, in place of its source (:mod:`pytest_steer.steering.identity`): a
    built-in method's version is bumped whenever its responses change. A method defined
    elsewhere is keyed by its source files, and its ``version`` is not read.
    """

    name: ClassVar[str] = ""
    version: ClassVar[int] = 1
    parameters: ClassVar[tuple[Parameter, ...] | None] = None  # None: the keyword parameters of __init__

    @classmethod
    def create(cls, params: Mapping[str, Any], model_config: Any) -> SteeringMethod:
        """The method for a run's parameters (from ``--steer-method name:key=value``) and the model's config."""
        return cls(**params)

    def params(self) -> dict[str, Any]:
        """JSON-serializable values that, with the prompt, determine a response."""
        return {}

    @property
    def is_identity(self) -> bool:
        """True when these parameters change nothing (PASTA at alpha 1): responses are the baseline's."""
        return False

    def prepare(self, prompt: str, highlights: Sequence[str]) -> PreparedPrompt:
        return PreparedPrompt(prompt)

    @contextlib.contextmanager
    def steer(self, batch: PromptBatch) -> Iterator[SteeredBatch]:
        yield SteeredBatch([[] for _ in batch.texts])

    @classmethod
    def steer_together(
        cls, parts: Sequence[tuple[SteeringMethod, Sequence[int]]], batch: PromptBatch
    ) -> contextlib.AbstractContextManager[SteeredBatch] | None:
        """Steer one batch shared with other configs: each ``(method, prompt rows)`` of ``parts`` (methods of this
        class) steers its own prompt rows of ``batch`` as its ``steer`` would; every other row is left exactly as the
        unsteered model computes it. The block's ``select_rows`` then receives the prompt row of every response row of
        the whole batch.

        None (the default): this class steers whole batches only, and its configs' batches are planned apart. A
        method that overrides it lets its rows share the engine's batches with the baseline's and other configs'
        rows (:func:`shares_batches`), which keeps the batches full.
        """
        return None

    def check_model_config(self, model_config: Mapping[str, Any]) -> None:
        """Refuse a model this method cannot steer, from its config.json alone (no weights); raise SteeringError."""

    def unsteered(self, prompts: Sequence[Any]) -> dict[str, str]:
        """Of the run's prompt rows (:class:`pytest_steer.plan.data.PromptRow`), those this method leaves unsteered whatever
        the model, known from the prompts alone: prompt key -> why. Their case records say so (``unsteered``)."""
        return {}

    def check_prompts(self, prompts: Sequence[Any]) -> None:
        """Refuse, at collection, prompts this method cannot steer at all (raise SteeringError naming the fix)."""

    def bind_run(self, run: RunContext) -> None:
        """Called once per worker, right after ``create``: a method that learns from the run's prompts
        (``actadd``'s instruction vectors) keeps ``run`` here; it is used before ``params()`` or ``steer``."""


@dataclass(frozen=True)
class RunContext:
    """What a worker's run offers a method before it generates (``SteeringMethod.bind_run``).

    ``prompts`` are the run's prompt rows (:class:`pytest_steer.plan.data.PromptRow`), the same on
    every worker; ``model_key`` names the weights and numerics (fingerprint, device type,
    library versions), so that what a method computes from the model can be cached under it
    in ``cache_dir`` (None: no cache); ``load_model`` returns ``(model, tokenizer)``, loading
    them on first call only, so a method whose results are all cached loads nothing.
    """

    prompts: Sequence[Any]
    model_key: Mapping[str, Any]
    cache_dir: Any  # pathlib.Path | None
    load_model: Callable[[], tuple[Any, Any]]


def steers_the_model(method: SteeringMethod | type[SteeringMethod] | None) -> bool:
    """Whether a method changes what the model computes (``steer``), not only the prompt it is given."""
    if method is None:
        return False
    method_class = method if isinstance(method, type) else type(method)
    return method_class.steer is not SteeringMethod.steer


def shares_batches(method_class: type[SteeringMethod] | None) -> bool:
    """Whether a config of this method (None: the baseline) can run in a batch with other configs' rows: it steers
    only the prompt, or its class implements ``steer_together``."""
    if method_class is None or not steers_the_model(method_class):
        return True
    return method_class.steer_together.__func__ is not SteeringMethod.steer_together.__func__  # type: ignore[attr-defined]
