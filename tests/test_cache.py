"""The model cache: one load per key under concurrency, LRU eviction under a budget, leases, OOM recovery.

Most tests use their own small ``ModelCache`` with byte budgets and plain Python objects, so sizes and
eviction are exact. A few go through ``lab.models`` and the process-wide ``CACHE`` with a tiny
random-weight Llama written by :mod:`lab.testing`.
"""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch

import lab.cache
from lab import models
from lab.cache import Loaded, ModelCache, OutOfMemory, module_nbytes, oom_guard


class CountingLoader:
    """A loader that counts its calls, can be slow, and can fail."""

    def __init__(
        self,
        nbytes: int = 40,
        *,
        seconds: float = 0.0,
        device: str = "cpu",
        dtype: str = "-",
        error: Exception | None = None,
    ) -> None:
        self.nbytes, self.seconds, self.device, self.dtype, self.error = nbytes, seconds, device, dtype, error
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> Loaded:
        with self._lock:
            self.calls += 1
        time.sleep(self.seconds)
        if self.error is not None:
            raise self.error
        return Loaded(object(), self.nbytes, self.device, self.dtype)


def _in_threads(count: int, work: Callable[[], Any]) -> list[Any]:
    """Run ``work`` in ``count`` threads released together by a barrier; return each result or error."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = work()
        except Exception as error:  # collected, so the test can check every thread's outcome
            results[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads), "a thread is still waiting on the cache"
    return results


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Only the cache's own gc.collect() may free reference cycles while this is on."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


# -- loading once ----------------------------------------------------------------------------------


def test_eight_threads_asking_for_one_key_share_one_load() -> None:
    cache = ModelCache(budgets={"cpu": 10_000})
    loader = CountingLoader(seconds=0.2)

    results = _in_threads(8, lambda: cache.get("gpt2#tokenizer", loader))

    assert loader.calls == 1
    assert not any(isinstance(result, Exception) for result in results)
    assert all(result is results[0] for result in results)
    (row,) = cache.stats()
    assert (row.key, row.misses, row.hits) == ("gpt2#tokenizer", 1, 7)


def test_a_failing_load_reaches_every_waiting_thread_and_the_next_call_retries() -> None:
    cache = ModelCache(budgets={"cpu": 10_000})
    loader = CountingLoader(seconds=0.2, error=OSError("disk unplugged"))

    results = _in_threads(8, lambda: cache.get("m", loader))

    assert loader.calls == 1
    assert all(isinstance(result, OSError) and "disk unplugged" in str(result) for result in results)
    assert cache.loaded() == []

    loader.error = None
    value = cache.get("m", loader)
    assert loader.calls == 2
    assert cache.get("m", loader) is value
    assert loader.calls == 2


# -- eviction ---------------------------------------------------------------------------------------


def test_a_third_entry_over_budget_evicts_the_least_recently_used() -> None:
    cache = ModelCache(budgets={"cpu": 100})
    first = cache.get("first", CountingLoader(40))
    cache.get("second", CountingLoader(40))
    assert cache.loaded() == ["first", "second"]

    assert cache.get("first", CountingLoader(40)) is first  # touched: "second" is now the LRU
    assert cache.loaded() == ["second", "first"]

    cache.get("third", CountingLoader(40))
    assert cache.loaded() == ["first", "third"]
    assert cache.used("cpu") == 80


def test_a_leased_entry_is_kept_over_budget_and_evictable_after_the_lease() -> None:
    cache = ModelCache(budgets={"cpu": 100})
    with cache.lease("big", CountingLoader(150)) as big:
        cache.get("small-1", CountingLoader(40))
        cache.get("small-2", CountingLoader(40))
        assert "big" in cache.loaded()
        assert cache.used("cpu") > cache.budget("cpu")
        assert big is not None

    cache.get("small-3", CountingLoader(40))
    assert "big" not in cache.loaded()
    assert cache.used("cpu") <= 100


def test_eviction_frees_a_torch_module_held_in_a_reference_cycle() -> None:
    """Like a model with hooks: only gc.collect() frees it, and the cache must run it after letting go."""
    cache = ModelCache(budgets={"cpu": 5_000_000})
    module = torch.nn.Linear(1000, 1000)
    module.__dict__["self_ref"] = module  # a cycle that reference counting alone cannot free
    nbytes = module_nbytes(module)
    assert nbytes == 1000 * 1000 * 4 + 1000 * 4
    alive = weakref.ref(module)
    handed_over = [module]
    del module
    cache.get("linear", lambda: Loaded(handed_over.pop(), nbytes))

    with _gc_paused():
        cache.get("next", CountingLoader(nbytes))  # pushes "linear" out of the budget

    assert cache.loaded() == ["next"]
    assert alive() is None


def test_evict_frees_a_tiny_random_llama_loaded_through_lab_models(
    tiny_llama: Path, fresh_cache: None
) -> None:
    with models.causal_lm("tiny/llama", path=tiny_llama, device_name="cpu") as model:
        alive = weakref.ref(model)
    del model
    (key,) = lab.cache.loaded()

    with _gc_paused():
        assert lab.cache.CACHE.evict(key)

    assert lab.cache.loaded() == []
    assert alive() is None


def test_evict_refuses_a_leased_key_and_evict_unleased_returns_what_it_dropped() -> None:
    cache = ModelCache(budgets={"cpu": 10_000, "cuda": 10_000})
    cache.get("cpu-model", CountingLoader())
    cache.get("gpu-model", CountingLoader(device="cuda:0"))
    with cache.lease("held", CountingLoader(device="cuda")):
        assert cache.evict("held") is False
        assert cache.evict("never-loaded") is False
        assert cache.evict_unleased("cuda") == ["gpu-model"]
        assert cache.loaded() == ["cpu-model", "held"]
        assert cache.evict_unleased() == ["cpu-model"]
        assert cache.loaded() == ["held"]
    assert cache.evict("held") is True
    assert cache.loaded() == []


# -- out of memory ------------------------------------------------------------------------------------


def test_oom_guard_frees_unleased_gpu_models_and_explains_the_error() -> None:
    cache = ModelCache(budgets={"cpu": 10_000, "cuda": 10_000})
    cache.get("idle-gpu", CountingLoader(device="cuda"))
    cache.get("idle-cpu", CountingLoader())
    with (
        cache.lease("in-use", CountingLoader(device="cuda")),
        pytest.raises(OutOfMemory) as caught,
        oom_guard("generating", cache=cache),
    ):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    message = str(caught.value)
    assert "The GPU ran out of memory while generating" in message
    assert "Freed 1 unused model(s)" in message
    assert cache.loaded() == ["idle-cpu", "in-use"]

    loader = CountingLoader(device="cuda")
    assert cache.get("idle-gpu", loader) is not None
    assert loader.calls == 1
    assert cache.loaded() == ["idle-cpu", "in-use", "idle-gpu"]


def test_oom_guard_releases_the_failed_calls_tensors() -> None:
    """The OutOfMemory a user sees must not keep the activations of the call that ran out alive."""
    cache = ModelCache(budgets={"cuda": 10_000})
    alive: list[weakref.ref] = []

    def forward() -> None:
        activations = torch.zeros(1000, 1000)
        alive.append(weakref.ref(activations))
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(OutOfMemory) as caught, oom_guard("embedding", cache=cache):
        forward()

    assert "while embedding" in str(caught.value)
    assert alive[0]() is None


def test_oom_guard_lets_other_errors_through_and_keeps_the_cache() -> None:
    cache = ModelCache(budgets={"cuda": 10_000})
    cache.get("idle-gpu", CountingLoader(device="cuda"))
    with pytest.raises(ValueError, match="bad prompt"), oom_guard("generating", cache=cache):
        raise ValueError("bad prompt")
    assert cache.loaded() == ["idle-gpu"]


# -- inspection -----------------------------------------------------------------------------------------


def test_stats_rows_report_device_dtype_size_hits_time_and_leases() -> None:
    cache = ModelCache(budgets={"cpu": 10_000, "cuda": 10_000})
    slow = CountingLoader(1234, seconds=0.05, device="cuda:0", dtype="bfloat16")
    cache.get("slow", slow)
    cache.get("slow", slow)

    (row,) = cache.stats()
    assert (row.key, row.device, row.dtype, row.nbytes) == ("slow", "cuda:0", "bfloat16", 1234)
    assert (row.hits, row.misses, row.leases) == (1, 1, 0)
    assert row.load_seconds >= 0.05
    assert row.last_used <= time.time()

    with cache.lease("slow", slow):
        assert cache.stats()[0].leases == 1
    assert cache.stats()[0].leases == 0
    assert cache.stats()[0].hits == 2


def test_causal_lm_on_a_tiny_random_llama_loads_once_and_eager_is_a_separate_entry(
    tiny_llama: Path, fresh_cache: None
) -> None:
    with models.causal_lm("tiny/llama", path=tiny_llama, device_name="cpu") as first:
        pass
    with models.causal_lm("tiny/llama", path=tiny_llama, device_name="cpu") as second:
        assert second is first
    assert len(lab.cache.loaded()) == 1
    (row,) = lab.cache.stats()
    assert (row.misses, row.hits, row.device, row.dtype) == (1, 1, "cpu", "float32")
    parameter_bytes = sum(p.numel() * p.element_size() for p in first.parameters())
    buffer_bytes = sum(b.numel() * b.element_size() for b in first.buffers())
    assert row.nbytes == module_nbytes(first) == parameter_bytes + buffer_bytes
    assert parameter_bytes > 100_000  # the tiny llama's 32-wide layers and ~1k-token embeddings

    with models.causal_lm("tiny/llama", path=tiny_llama, eager=True, device_name="cpu") as eager:
        assert eager is not first
        assert eager.config._attn_implementation == "eager"
    assert len(lab.cache.loaded()) == 2


# -- budgets --------------------------------------------------------------------------------------------


def test_budgets_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_CPU_BUDGET_GB", "0.5")
    monkeypatch.setenv("LAB_GPU_BUDGET_GB", "2")
    cache = ModelCache()
    assert cache.budget("cpu") == int(0.5 * 1024**3)
    assert cache.budget("cuda") == 2 * 1024**3


def test_the_default_cpu_budget_is_half_the_ram(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAB_CPU_BUDGET_GB", raising=False)
    assert ModelCache().budget("cpu") == int(psutil.virtual_memory().total * 0.5)
