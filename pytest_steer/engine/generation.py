"""Batched, seeded generation.

Each response samples with random numbers derived from its own case seed
(:mod:`pytest_steer.engine.sampling`) and is decoded by :func:`pytest_steer.engine.decoding.decode`, which
prefills each distinct prompt of a batch once and drops rows as they end. A response
therefore depends only on its prompt, its seed and the model, never on the other rows of
its batch or on the order in which batches run.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Collection, Sequence
from dataclasses import replace
from typing import Any

import torch

from pytest_steer.engine.decoding import cache_argument, decode
from pytest_steer.engine.prefix import MIN_SHARED_TOKENS, SharedPrefix, prefill_prefix, shared_tokens
from pytest_steer.engine.requests import Generation, GenerationRequest, GenerationSettings, PromptPrefill, ScoredTokens
from pytest_steer.engine.sampling import RowSampler, greedy
from pytest_steer.engine.stream import decode_stream, supports_streams
from pytest_steer.model.loading import LoadedModel
from pytest_steer.model.prompts import prompt_lengths, render_prompt, template_prefix
from pytest_steer.plan.batches import MAX_BATCH_SIZE
from pytest_steer.steering.errors import SteeringError, SteeringWarning
from pytest_steer.steering.method import PreparedPrompt, PromptBatch, SteeringMethod, steers_the_model
from pytest_steer.steering.pasta.attention import shared_kernels

COMPILED_STEPS = 64  # under --steer-compile: compiled variants of the decode step kept before the rest run uncompiled


def memory_batch_limit(loaded: LoadedModel, prompt_tokens: int, max_new_tokens: int) -> int:
    """On a GPU: how many rows a third of its free memory holds as KV cache."""
    config = loaded.model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    bytes_per_row = 2 * config.num_hidden_layers * kv_heads * head_dim * (prompt_tokens + max_new_tokens)
    bytes_per_row *= loaded.model.dtype.itemsize
    free, _ = torch.cuda.mem_get_info(loaded.device)
    return max(1, min(MAX_BATCH_SIZE, int(free / 3 // bytes_per_row)))


class Engine:
    """Generates responses for batches of requests with one loaded model.

    With ``compile_mode`` (a ``torch.compile`` mode) the decode steps run the model's forward
    compiled in that mode, on a fixed-shape KV cache (see :mod:`pytest_steer.engine.decoding`); it is
    compiled once per batch shape, and per steering configuration that changes what attention
    computes (a steered head set), the first time that shape or configuration runs.
    """

    def __init__(
        self, loaded: LoadedModel, settings: GenerationSettings, *, compile_mode: str | None = None, share_prefix: bool = True
    ) -> None:
        self.loaded = loaded
        self.settings = settings
        self.step_forward = None if compile_mode is None else compiled_forward(loaded.model, compile_mode)
        eos = loaded.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos if eos is not None else loaded.tokenizer.eos_token_id])
        self.choose = greedy if settings.greedy else RowSampler(settings.temperature, settings.top_p)
        self._stream_support: bool | None = None
        # the chat template's leading tokens, prefilled once per batch (pytest_steer.engine.prefix); () shares none
        self.template = template_prefix(loaded.tokenizer) if share_prefix else ()

    def prompt_lengths(self, prompts: Sequence[str]) -> list[int]:
        return prompt_lengths(self.loaded.tokenizer, prompts)

    def generate(
        self, requests: Sequence[GenerationRequest], steering: SteeringMethod | None = None, *, slots: int | None = None
    ) -> list[Generation]:
        """One batch; ``steering`` (when given) steers every request, else each request's own method steers it.

        With ``slots``, at most that many responses decode at once: when there are more, they run as a stream
        (:mod:`pytest_steer.engine.stream`), queued rows entering as others end, where the model's cache allows
        (plain full-attention layers, no ``--steer-compile``); elsewhere in batches of ``slots``.

        A batch may hold the requests of several configs (:func:`pytest_steer.steering.method.shares_batches`): the
        unsteered baseline, prompt methods (their prompts differ, the model does not) and the methods that steer
        rows of other configs' batches (PASTA, actadd), each on its own rows. Requests with the same prompt,
        highlights and method share one prefill; under greedy decoding they also share one response, since their
        seeds are not used.
        """
        if steering is not None:
            requests = [replace(request, steering=steering) for request in requests]
        if slots is not None and len(requests) > slots and not self._streams():
            return [g for start in range(0, len(requests), slots) for g in self.generate(requests[start : start + slots])]
        tokenizer, model = self.loaded.tokenizer, self.loaded.model
        prepared = [r.steering.prepare(r.prompt, r.highlights) if r.steering else PreparedPrompt(r.prompt) for r in requests]
        # a prompt row per (text, highlights, method that steers the model): rows of two PASTA configs are two prompt rows
        prompts = [
            (render_prompt(tokenizer, p.text), r.highlights, r.steering if steers_the_model(r.steering) else None)
            for p, r in zip(prepared, requests)
        ]
        distinct = list(dict.fromkeys(prompts))
        prompt_index = {prompt: i for i, prompt in enumerate(distinct)}
        responses = [(prompt, None if self.settings.greedy else r.seed) for prompt, r in zip(prompts, requests)]
        rows = list(dict.fromkeys(responses))
        row_index = {response: i for i, response in enumerate(rows)}
        prompt_of_row = torch.tensor([prompt_index[prompt] for prompt, _ in rows])
        seeds = torch.tensor([seed or 0 for _, seed in rows], dtype=torch.int64)
        texts = [text for text, _, _ in distinct]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.loaded.device)
        # the unsteered baseline's log-probabilities and prompt prefills serve the fluency score
        baseline = {prompt_index[prompt] for prompt, r in zip(prompts, requests) if r.steering is None}
        prefills: list[PromptPrefill | None] = [None] * len(distinct)

        def keep_prefills(cache: Any, prompts: Any = None, input_ids: Any = None, attention_mask: Any = None) -> None:
            if prompts is None:  # one prefill of every prompt
                prefills[:] = prompt_prefills(cache, batch["input_ids"], batch["attention_mask"], baseline)
                return
            indices = prompts.tolist()  # a stream's prefill of some prompts
            wanted = [i for i, prompt in enumerate(indices) if prompt in baseline]
            for prompt, prefill in zip(indices, prompt_prefills(cache, input_ids, attention_mask, wanted)):
                if prefill is not None:
                    prefills[prompt] = prefill

        prompt_batch = PromptBatch(model, tokenizer, batch["input_ids"], batch["attention_mask"], texts, [list(h) for _, h, _ in distinct])
        with torch.inference_mode(), shared_kernels(model), contextlib.ExitStack() as stack:  # the same kernels, steered or not
            streams = slots is not None and len(rows) > slots
            with warnings.catch_warnings():  # the runner reports missing highlights per case, by prompt key
                warnings.simplefilter("ignore", SteeringWarning)
                blocks = steering_blocks(distinct, prompt_batch)
                # the shared prefix runs unsteered, so before the blocks are entered
                prefix = None if streams or self.step_forward is not None else self._prefix(batch, blocks)
                steered = [stack.enter_context(block) for block in blocks]
            missing = [[span for block in steered for span in block.missing[i]] for i in range(len(distinct))]

            def select_rows(prompt_rows: torch.Tensor) -> None:
                for block in steered:
                    block.select_rows(prompt_rows)

            if streams:
                tokens, log_probs = decode_stream(
                    model, batch["input_ids"], batch["attention_mask"], prompt_of_row, seeds, slots=slots,
                    max_new_tokens=self.settings.max_new_tokens, eos_ids=self.eos_ids, choose=self.choose,
                    rows_changed=select_rows if steered else None, prefilled=keep_prefills if baseline else None,
                    logprobs=bool(baseline),
                )  # fmt: skip
            else:
                decoded = self._decode(
                    batch, prompt_of_row, seeds, select_rows if steered else None, logprobs=bool(baseline),
                    prefilled=keep_prefills if baseline else None, prefix=prefix,
                )  # fmt: skip
                tokens, log_probs = decoded if baseline else (decoded, None)
        generations = []
        for response, ready, request in zip(responses, prepared, requests):
            row = row_index[response]
            row_tokens = tokens[row]
            prompt = prompt_index[response[0]]
            text = self.loaded.tokenizer.decode(row_tokens, skip_special_tokens=True)
            missing_spans = (*ready.missing, *missing[prompt])
            unsteered = None
            if log_probs is not None and request.steering is None:
                unsteered = ScoredTokens(tuple(row_tokens), tuple(log_probs[row]), prefills[prompt])
            generations.append(
                Generation(text=text, n_new_tokens=len(row_tokens), missing_spans=missing_spans, prompt=ready.text, unsteered=unsteered)
            )
        return generations

    def _prefix(self, batch: Any, blocks: Sequence[Any]) -> SharedPrefix | None:
        """The unsteered keys and values of the template tokens every prompt of ``batch`` starts with and no steering
        block steers, if enough are."""
        rows = batch["input_ids"].shape[0]
        tokens = min(
            [shared_tokens(batch["input_ids"], batch["attention_mask"], self.template)] + [min(unsteered_tokens(b, rows)) for b in blocks]
        )
        if tokens < MIN_SHARED_TOKENS:
            return None
        return prefill_prefix(self.loaded.model, self.template[:tokens], cache_argument(self.loaded.model))

    def _streams(self) -> bool:
        """Whether this engine runs more rows than slots as a stream (else in batches of slots)."""
        if self._stream_support is None:
            self._stream_support = self.step_forward is None and supports_streams(self.loaded.model)
        return self._stream_support

    def _decode(
        self,
        batch: Any,
        prompt_of_row: torch.Tensor,
        seeds: torch.Tensor,
        rows_changed: Any = None,
        *,
        logprobs: bool = False,
        prefilled: Any = None,
        prefix: SharedPrefix | None = None,
    ) -> Any:
        # every (batch shape, steered head set) is one compiled step; past torch's default of 8 it would run uncompiled
        limit = contextlib.nullcontext() if self.step_forward is None else torch._dynamo.config.patch(recompile_limit=COMPILED_STEPS)
        with limit:
            return decode(
                self.loaded.model,
                batch["input_ids"],
                batch["attention_mask"],
                prompt_of_row,
                seeds,
                max_new_tokens=self.settings.max_new_tokens,
                eos_ids=self.eos_ids,
                choose=self.choose,
                rows_changed=rows_changed,
                logprobs=logprobs,
                prefilled=prefilled,
                step_forward=self.step_forward,
                prefix=prefix,
            )


def compiled_forward(model: Any, mode: str) -> Any:
    """The model's forward under ``torch.compile`` in ``mode``, for fixed shapes; it compiles on its first call."""
    with warnings.catch_warnings():  # torch's compiler imports a deprecated API of torch's own
        warnings.filterwarnings("ignore", "`torch.jit.script_method` is deprecated", DeprecationWarning)
        return torch.compile(model.forward, mode=mode, dynamic=False)


def unsteered_tokens(block: Any, rows: int) -> list[int]:
    """Per prompt row, the first tokens a steering block leaves unsteered (none where the block does not say, or
    says it only once entered)."""
    says = getattr(block, "unsteered_tokens", None)
    counts = says() if callable(says) else None
    return [0] * rows if counts is None else list(counts)


def steering_blocks(distinct: Sequence[tuple[str, Any, SteeringMethod | None]], batch: PromptBatch) -> list[Any]:
    """The steering blocks a batch runs under: one per method class that steers the model, each on its own prompt rows.

    A method alone on the whole batch steers it as ``steer`` does; methods sharing a batch with rows
    of other configs steer through their class's ``steer_together``.
    """
    parts: dict[type, dict[SteeringMethod, list[int]]] = {}
    for row, (_, _, method) in enumerate(distinct):
        if method is not None:
            parts.setdefault(type(method), {}).setdefault(method, []).append(row)
    blocks = []
    for method_class, members in parts.items():
        (first, rows), *others = members.items()
        if not others and len(rows) == len(distinct):
            blocks.append(first.steer(batch))
            continue
        block = method_class.steer_together(list(members.items()), batch)
        if block is None:
            raise SteeringError(
                f"{method_class.__name__} cannot steer a batch holding rows of other configs (it does not implement "
                "steer_together); plan its configs' batches apart"
            )
        blocks.append(block)
    return blocks


def prompt_prefills(
    cache: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, wanted: Collection[int] | None = None
) -> list[PromptPrefill | None]:
    """Each left-padded prompt's KV cache after a prefill, cut to its own tokens but the last and copied.

    None for every prompt when a layer does not hold every position (a sliding window that
    dropped keys), for a prompt of one token (nothing before its last token), and for the
    prompts not ``wanted`` (None: every prompt).
    """
    width = input_ids.shape[1]
    if any(layer.keys is None or layer.keys.shape[-2] != width for layer in cache.layers):
        return [None] * input_ids.shape[0]
    prefills: list[PromptPrefill | None] = []
    for row, padding in enumerate((attention_mask == 0).sum(dim=1).tolist()):
        if width - padding < 2 or (wanted is not None and row not in wanted):
            prefills.append(None)
            continue
        layers = tuple((layer.keys[row, :, padding:-1].clone(), layer.values[row, :, padding:-1].clone()) for layer in cache.layers)
        prefills.append(PromptPrefill(tuple(input_ids[row, padding:].tolist()), layers))
    return prefills
