"""Linear layers on packed weights: the same outputs up to float rounding, a weight edited after packing is followed,
and the decision is measured once per machine and dtype, kept, and given to every worker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from pytest_steer.model import kernels
from pytest_steer.model.kernels import KERNEL_FILE, LinearKernel, PackedForward, choose_kernel, pack_linears, unpack_linears

needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN to pack with")


def tiny_model(dtype: torch.dtype = torch.float32) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=64, attention_bias=True,
    )  # fmt: skip
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(dtype).eval().requires_grad_(False)


def linears(model: torch.nn.Module) -> list[torch.nn.Linear]:
    return [module for module in model.modules() if type(module) is torch.nn.Linear]


@needs_onednn
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_packed_model_gives_the_plain_logits_up_to_rounding(dtype: torch.dtype) -> None:
    model = tiny_model(dtype)
    ids = torch.randint(0, 97, (3, 9), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        plain = model(ids).logits.float()
        assert pack_linears(model) == len(linears(model)) == 2 * 7 + 1  # seven per layer (biased q, k, v) and the output
        packed = model(ids).logits.float()
    tolerance = 1e-4 if dtype == torch.float32 else 5e-2
    assert torch.allclose(packed, plain, atol=tolerance * plain.abs().max().item(), rtol=0)
    assert all(isinstance(vars(layer)["forward"], PackedForward) for layer in linears(model))


@needs_onednn
def test_hooks_still_run_and_unpacking_restores_the_plain_forward() -> None:
    model = tiny_model()
    pack_linears(model)
    seen = []
    model.lm_head.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape))
    with torch.inference_mode():
        model(torch.tensor([[1, 2, 3]]))
    assert seen == [torch.Size([1, 3, 64])]
    unpack_linears(model)
    assert not any("forward" in vars(layer) for layer in linears(model))
    assert pack_linears(model) == len(linears(model))  # and it can be packed again


@needs_onednn
def test_a_weight_changed_after_packing_is_packed_again() -> None:
    model = tiny_model()
    ids = torch.tensor([[5, 6, 7, 8]])
    pack_linears(model)
    with torch.inference_mode():
        before = model(ids).logits
        model.model.layers[0].mlp.down_proj.weight.mul_(0.0)  # in place, as a method that ablates a layer would
        zeroed = model(ids).logits
        model.model.layers[1].self_attn.o_proj.weight = torch.nn.Parameter(torch.zeros(64, 64), requires_grad=False)  # replaced
        replaced = model(ids).logits
        unpack_linears(model)
        plain = model(ids).logits
    assert not torch.allclose(before, zeroed)
    assert torch.allclose(replaced, plain, atol=1e-4 * plain.abs().max().item(), rtol=0)


@needs_onednn
def test_a_call_that_needs_gradients_or_another_dtype_runs_plainly() -> None:
    layer = torch.nn.Linear(8, 4)
    pack_linears(layer)
    x = torch.randn(2, 8, requires_grad=True)
    layer(x).sum().backward()  # oneDNN's packed matmul has no gradient: the plain one runs
    assert x.grad is not None and layer.weight.grad is not None
    layer.double()  # a dtype oneDNN does not pack: multiplied plainly
    with torch.inference_mode():
        assert torch.allclose(layer(x.detach().double()), torch.nn.functional.linear(x.detach().double(), layer.weight, layer.bias))


@needs_onednn
def test_a_compiled_forward_of_a_packed_model_traces_the_plain_matmul() -> None:
    model = tiny_model()
    pack_linears(model)
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    torch._dynamo.reset()
    try:
        compiled = torch.compile(model.forward, backend="eager", fullgraph=True)  # no graph break on the packed layers
        with torch.no_grad():
            traced, packed = compiled(ids).logits, model(ids).logits
    finally:
        torch._dynamo.reset()
    assert torch.allclose(traced, packed, atol=1e-4 * packed.abs().max().item(), rtol=0)


@needs_onednn
def test_subclasses_and_layers_with_a_forward_of_their_own_keep_it() -> None:
    class Adapter(torch.nn.Linear):
        pass

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), Adapter(4, 4), torch.nn.Linear(4, 4))
    own = model[2].forward
    model[2].forward = own  # a wrapper someone installed on the instance
    assert pack_linears(model) == 1
    assert isinstance(vars(model[0])["forward"], PackedForward)
    assert "forward" not in vars(model[1]) and vars(model[2])["forward"] is own


@needs_onednn
def test_nothing_is_packed_where_the_copies_would_take_over_half_the_available_memory() -> None:
    model = tiny_model()
    weights = sum(layer.weight.nbytes for layer in linears(model))
    assert pack_linears(model, available=2 * weights - 1) == 0
    assert not any("forward" in vars(layer) for layer in linears(model))
    assert pack_linears(model, available=2 * weights) == len(linears(model))
    kept = LinearKernel("float32", True, 1.5, 1.0)
    assert kept.described(0).startswith("plain (packed copies") and kept.described(3) == kept.reason


def test_the_available_memory_is_read_on_linux() -> None:
    available = kernels.available_memory()
    assert available is None or available > 0
    if Path("/proc/meminfo").is_file():
        assert available is not None


def test_the_decision_is_kept_per_dtype_and_read_back_without_measuring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    measures = {"float32": LinearKernel("float32", True, 1.5, 1.0), "bfloat16": LinearKernel("bfloat16", False, 1.0, 0.98)}
    monkeypatch.setattr(kernels, "measured_kernel", lambda dtype: measures[dtype])
    assert choose_kernel("cpu", "float32", tmp_path).packed
    assert not choose_kernel("cpu", "bfloat16", tmp_path).packed
    kept = json.loads((tmp_path / KERNEL_FILE).read_text())
    assert sorted(entry["dtype"] for entry in kept.values()) == ["bfloat16", "float32"]
    monkeypatch.setattr(kernels, "measured_kernel", lambda dtype: pytest.fail("a kept decision is not measured again"))
    assert choose_kernel("cpu", "float32", tmp_path) == measures["float32"]
    assert choose_kernel("cuda", "float32", tmp_path).packed is False  # a GPU is not measured


def test_the_reason_says_what_was_measured() -> None:
    assert "packed weights (oneDNN)" in LinearKernel("float32", True, 1.5, 1.0).reason
    assert "1.50x" in LinearKernel("float32", True, 1.5, 1.0).reason
    assert "under 1.1x" in LinearKernel("float32", False, 1.0, 0.98).reason
    assert LinearKernel("float32", False, note="this torch build has no oneDNN").reason == "plain (this torch build has no oneDNN)"
    kernel = LinearKernel("bfloat16", True, 2.0, 1.2)
    assert LinearKernel.from_json(kernel.to_json()) == kernel


def test_packed_results_that_disagree_are_not_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels, "packed_linear", lambda x, weight, bias: torch.zeros(x.shape[0], 2048, dtype=x.dtype))
    kernel = kernels.measured_kernel.__wrapped__("float32", repeats=1)
    assert not kernel.packed and kernel.note is not None and "differ" in kernel.note


def test_a_torch_without_the_packed_ops_runs_plainly(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        raise AttributeError("'_OpNamespace' 'mkldnn' object has no attribute '_linear_pointwise'")

    monkeypatch.setattr(kernels, "packed_linear", missing)
    kernel = kernels.measured_kernel.__wrapped__("float32", repeats=1)
    assert not kernel.packed and kernel.note is not None and kernel.note.startswith("packing failed: AttributeError")


def test_this_machine_measures_both_ways() -> None:
    kernel = kernels.measured_kernel("float32")
    if kernel.note is None:
        assert kernel.plain_ms and kernel.packed_ms and kernel.packed == (kernel.plain_ms >= kernels.PACKED_GAIN * kernel.packed_ms)
    else:
        assert not kernel.packed


def kept_decision(cache: Path, kernel: LinearKernel) -> None:
    from pytest_steer.model.numerics import machine_key

    cache.mkdir(parents=True, exist_ok=True)
    (cache / KERNEL_FILE).write_text(json.dumps({f"{machine_key()} | {kernel.dtype}": json.loads(kernel.to_json())}))


WORKER_REPORT = """
import os
from pytest_steer.plugin import steer_session

def pytest_sessionfinish(session):
    kernel = steer_session(session.config).linear_kernel
    name = getattr(session.config, "workerinput", {}).get("workerid", "controller")
    with open(os.path.join(REPORTS, f"kernel-{name}.json"), "w") as file:
        file.write(kernel.to_json())
"""


@pytest.mark.parametrize("workers", [0, 2])
def test_the_kept_decision_is_what_every_worker_loads_with(pytester: pytest.Pytester, tiny_checkpoint: Path, workers: int) -> None:
    kept = LinearKernel("float32", True, 9.0, 3.0)  # no machine measures this: the run read it, it did not measure
    kept_decision(pytester.path / "cache", kept)
    pytester.makepyfile(test_steer="def test_case(steer_case):\n    pass\n")
    pytester.makeconftest(f"REPORTS = {str(pytester.path)!r}\n" + WORKER_REPORT)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--steer-model", str(tiny_checkpoint), "--steer-limit", "2", "--steer-max-new-tokens", "1",
        "--steer-quality", "none", "--steer-cache-dir", str(pytester.path / "cache"), "--steer-dtype", "float32", "-n", str(workers),
    )  # fmt: skip
    assert result.ret == 0, result.stdout.str()
    reports = sorted(pytester.path.glob("kernel-*.json"))
    assert len(reports) == 1 + workers
    assert {LinearKernel.from_json(path.read_text()) for path in reports} == {kept}
    if workers == 0:
        result.stdout.fnmatch_lines(["*linear: packed weights (oneDNN): a float32 matmul ran 3.00x the plain one here*"])


@pytest.mark.parametrize("linear", ["plain", "packed"])
def test_the_option_decides_without_measuring_or_keeping(pytester: pytest.Pytester, tiny_checkpoint: Path, linear: str) -> None:
    pytester.makepyfile(test_steer="def test_case(steer_case):\n    pass\n")
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--steer-model", str(tiny_checkpoint), "--steer-limit", "1", "--steer-max-new-tokens", "1",
        "--steer-quality", "none", "--steer-cache-dir", str(pytester.path / "cache"), "--steer-dtype", "float32",
        "--steer-linear", linear,
    )  # fmt: skip
    assert result.ret == 0, result.stdout.str()
    described = "plain" if linear == "plain" else "packed weights (oneDNN)"
    result.stdout.fnmatch_lines([f"*(float32, eager; linear: {described} (--steer-linear {linear})) on cpu*"])
    assert not (pytester.path / "cache" / KERNEL_FILE).exists()


def test_a_bad_value_names_the_choices(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_steer="def test_case(steer_case):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--steer-linear", "fast")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*--steer-linear*'fast' is not one of auto, packed, plain*"])
