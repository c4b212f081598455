"""Device and dtype policy, ZeroGPU wrapping and the memory report.

Tests marked ``gpu`` need a CUDA GPU; CPU CI deselects them (``-m 'not gpu'`` in pyproject.toml).
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from lab import device, models, testing
from lab.cache import OutOfMemory, oom_guard

no_gpu = pytest.mark.skipif(
    torch.cuda.is_available() or torch.backends.mps.is_available(), reason="this machine has a GPU"
)

# Stands in for Hugging Face's `spaces` package (the ZeroGPU service), not for lab code: it records the
# duration it was asked for and which functions ran through its wrapper.
SPACES_STAND_IN = textwrap.dedent(
    """
    durations = []
    calls = []

    def GPU(duration=60):
        durations.append(duration)

        def attach(fn):
            def on_gpu(*args, **kwargs):
                calls.append(fn.__name__)
                return fn(*args, **kwargs)

            return on_gpu

        return attach
    """
)


@pytest.fixture(autouse=True)
def no_device_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAB_DEVICE", raising=False)
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)


@pytest.fixture
def zero_gpu_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """A ZeroGPU Space: SPACES_ZERO_GPU=1 and an importable ``spaces`` module."""
    (tmp_path / "spaces.py").write_text(SPACES_STAND_IN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SPACES_ZERO_GPU", "1")
    sys.modules.pop("spaces", None)
    import spaces

    yield spaces
    sys.modules.pop("spaces", None)


def add(a: int, b: int) -> int:
    """Add two numbers (the docstring must survive wrapping)."""
    return a + b


# -- select ------------------------------------------------------------------------------------------


@no_gpu
def test_select_picks_cpu_float32_without_a_gpu() -> None:
    placement = device.select()
    assert (placement.device, placement.kind, placement.dtype) == ("cpu", "cpu", torch.float32)


def test_lab_device_cpu_and_an_explicit_cpu_are_respected(monkeypatch: pytest.MonkeyPatch) -> None:
    assert device.select("cpu") == device.Placement("cpu", torch.float32)
    monkeypatch.setenv("LAB_DEVICE", "cpu")
    assert device.select() == device.Placement("cpu", torch.float32)


@no_gpu
def test_lab_device_cuda_without_a_gpu_says_what_to_change(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_DEVICE", "cuda")
    with pytest.raises(RuntimeError, match="LAB_DEVICE=cuda") as caught:
        device.select()
    assert "no CUDA GPU" in str(caught.value)


def test_placement_kind_drops_the_device_index() -> None:
    assert device.Placement("cuda:1", torch.bfloat16).kind == "cuda"


# -- ZeroGPU -------------------------------------------------------------------------------------------


def test_gpu_function_returns_the_function_unchanged_off_zero_gpu() -> None:
    assert device.on_zero_gpu() is False
    assert device.gpu_function(duration=30)(add) is add


def test_gpu_function_needs_the_spaces_package_as_well_as_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SPACES_ZERO_GPU", "1")
    assert device.on_zero_gpu() is False  # `spaces` is not installed here
    assert device.gpu_function(duration=30)(add) is add


def test_gpu_function_wraps_with_spaces_gpu_on_zero_gpu(zero_gpu_space: object) -> None:
    assert device.on_zero_gpu() is True

    wrapped = device.gpu_function(duration=30)(add)

    assert wrapped is not add
    assert zero_gpu_space.durations == [30]
    assert wrapped(2, 3) == 5
    assert zero_gpu_space.calls == ["add"]  # the call really went through spaces.GPU's wrapper
    assert (wrapped.__name__, wrapped.__doc__) == ("add", add.__doc__)


# -- memory ----------------------------------------------------------------------------------------------


def test_memory_report_has_a_cpu_row_with_used_within_total() -> None:
    rows = device.memory_report()
    cpu = [row for row in rows if row["device"] == "cpu"]
    assert len(cpu) == 1
    assert 0 < cpu[0]["used"] <= cpu[0]["total"]
    assert device.total_memory("cpu") == cpu[0]["total"]
    if torch.cuda.is_available():
        assert any(row["device"] == "cuda:0" and 0 < row["used"] <= row["total"] for row in rows)


# -- on a CUDA GPU ---------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_select_gives_cuda_in_bfloat16_on_ampere_or_newer() -> None:
    placement = device.select()
    assert placement.kind == "cuda"
    major, _ = torch.cuda.get_device_capability(0)
    assert placement.dtype == (torch.bfloat16 if major >= 8 else torch.float16)


@pytest.mark.gpu
def test_a_tiny_random_llama_loads_on_cuda_in_the_selected_dtype(tmp_path: Path, fresh_cache: None) -> None:
    import lab.cache

    folder = testing.write_llama_causal_lm(tmp_path / "llama")
    placement = device.select()
    with models.causal_lm("tiny/llama", path=folder) as model:
        parameters = list(model.parameters())
        assert all(p.device.type == "cuda" for p in parameters)
        assert {p.dtype for p in parameters} == {placement.dtype}
        input_ids = torch.tensor([[1, 2, 3]], device="cuda")
        assert model(input_ids).logits.shape[:2] == (1, 3)
    (row,) = lab.cache.stats()
    assert (row.device, row.dtype) == (placement.device, str(placement.dtype).removeprefix("torch."))


@pytest.mark.gpu
def test_a_real_cuda_out_of_memory_becomes_out_of_memory_and_the_gpu_stays_usable(fresh_cache: None) -> None:
    total = torch.cuda.get_device_properties(0).total_memory
    with pytest.raises(OutOfMemory, match="GPU ran out of memory while testing"), oom_guard("testing"):
        torch.empty(2 * total, dtype=torch.uint8, device="cuda")
    assert torch.ones(4, device="cuda").sum().item() == 4


@pytest.mark.gpu
def test_evicting_a_cuda_model_returns_its_memory(tmp_path: Path, fresh_cache: None) -> None:
    import lab.cache

    torch.cuda.empty_cache()
    before = torch.cuda.memory_reserved()
    with models.causal_lm("tiny/llama", path=testing.write_llama_causal_lm(tmp_path / "llama")) as model:
        del model
    assert torch.cuda.memory_reserved() > before
    (key,) = lab.cache.loaded()

    assert lab.cache.CACHE.evict(key)

    assert torch.cuda.memory_reserved() == before


# -- forward: the one wrapper of every model call -----------------------------------------------------


def test_forward_runs_the_step_through_zero_gpu_in_inference_mode(zero_gpu_space: object) -> None:
    import torch

    from lab.forward import forward

    @forward("adding", duration=45)
    def step(a: int, b: int) -> tuple[int, bool]:
        """A forward step."""
        return a + b, torch.is_inference_mode_enabled()

    @forward(lambda n: f"counting to {n}", duration=15)
    def stream(n: int):
        yield from range(n)

    assert step(2, 3) == (5, True)
    assert list(stream(3)) == [0, 1, 2]
    assert zero_gpu_space.durations == [45, 15] and zero_gpu_space.calls == ["step", "stream"]
    assert step.__doc__ == "A forward step."


def test_forward_turns_cuda_out_of_memory_into_the_labs_message() -> None:
    import torch

    from lab.cache import OutOfMemory
    from lab.forward import forward

    @forward(lambda size: f"embedding {size} images")
    def step(size: int) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(OutOfMemory, match="while embedding 4096 images"):
        step(4096)


def test_every_features_forward_step_goes_through_the_one_wrapper() -> None:
    from lab import attention, embeddings, vision_chat

    steps = [
        attention.attention_batch,
        attention.next_token_logits_batch,
        attention.logit_lens,
        attention.generate_stream,
        embeddings.embed_batch,
        embeddings.compare_word,
        embeddings.token_vectors,
        embeddings.neighbours,
        vision_chat.generate_text,
        vision_chat.generate_stream,
    ]
    assert [s.__qualname__ for s in steps if not getattr(s, "lab_forward", None)] == []
