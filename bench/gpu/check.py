"""Check the foundation's GPU paths on a CUDA machine: ``python -m bench.gpu.check``.

CI has no GPU, so this script is run by hand (or on a lent GPU machine) and its output goes into the
issue notes. It checks, through the lab's own code:

1. the device policy picks CUDA and bf16 (fp16 before Ampere);
2. a model leased from the cache lands on the GPU in that dtype;
3. eight threads asking for one model cause one load;
4. evicting a model returns its GPU memory;
5. a real CUDA out-of-memory error becomes ``OutOfMemory`` and the next request works;
6. generation throughput of a SmolLM2-135M-shaped model (random weights: the Hub is out of reach there)
   on the GPU against the CPU, with and without the KV cache, as ratios measured in this one run.
"""

from __future__ import annotations

import json
import tempfile
import threading
from pathlib import Path

import torch

from bench import shapes
from bench.timing import timed
from lab import cache, device, models

SMOLLM2_SHAPE = shapes.SMOLLM2


def write_random_smollm2_shape(folder: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**SMOLLM2_SHAPE)).save_pretrained(folder, safe_serialization=True)
    return folder


def tokens_per_second(model, device_name: str, new_tokens: int, use_cache: bool) -> float:
    ids = torch.randint(0, SMOLLM2_SHAPE["vocab_size"], (1, 16), device=device_name)
    kwargs = dict(
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        use_cache=use_cache,
        pad_token_id=0,
        eos_token_id=None,
    )
    on_gpu = device_name.startswith("cuda")
    timed(
        lambda: model.generate(ids, **{**kwargs, "max_new_tokens": 4, "min_new_tokens": 4}), cuda_sync=on_gpu
    )
    seconds, _ = timed(lambda: model.generate(ids, **kwargs), cuda_sync=on_gpu)
    return new_tokens / seconds


def main() -> None:
    report: dict[str, object] = {}
    assert torch.cuda.is_available(), "no CUDA GPU"
    report["gpu"] = torch.cuda.get_device_name(0)
    placement = device.select()
    report["placement"] = f"{placement.device} {placement.dtype}"
    major, _ = torch.cuda.get_device_capability(0)
    assert placement.kind == "cuda" and placement.dtype == (torch.bfloat16 if major >= 8 else torch.float16)

    work = Path(tempfile.mkdtemp(prefix="lab-gpu-"))
    folder = write_random_smollm2_shape(work / "smollm2-shape")
    cache.CACHE.clear()
    before = torch.cuda.memory_allocated()

    # 8 threads, one load
    barrier, seen = threading.Barrier(8), []

    def ask() -> None:
        barrier.wait()
        with models.causal_lm("random/smollm2-shape", path=folder) as m:
            seen.append(id(m))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = {s.key: s for s in cache.stats()}
    (key,) = stats
    report["one_load_for_8_threads"] = len(set(seen)) == 1 and stats[key].misses == 1 and stats[key].hits == 7
    report["cache_row"] = {
        "device": stats[key].device,
        "dtype": stats[key].dtype,
        "MB": round(stats[key].nbytes / 1e6, 1),
        "load_s": round(stats[key].load_seconds, 2),
    }

    with models.causal_lm("random/smollm2-shape", path=folder) as model:
        param = next(model.parameters())
        report["param_device_dtype"] = f"{param.device} {param.dtype}"
        assert param.device.type == "cuda" and param.dtype == placement.dtype
        loaded_mb = (torch.cuda.memory_allocated() - before) / 1e6
        gpu_cached = tokens_per_second(model, placement.device, 100, True)
        gpu_uncached = tokens_per_second(model, placement.device, 100, False)
    report["gpu_memory_while_loaded_MB"] = round(loaded_mb, 1)
    del model, param

    assert cache.CACHE.evict(key)
    report["gpu_memory_after_evict_MB"] = round((torch.cuda.memory_allocated() - before) / 1e6, 1)
    # What remains is cuBLAS's workspace (32 MiB on Hopper), which PyTorch allocates through its own
    # allocator on the first matmul; it is not the model. Clearing it shows the model's memory is gone.
    torch._C._cuda_clearCublasWorkspaces()
    report["gpu_memory_after_evict_without_cublas_workspace_MB"] = round(
        (torch.cuda.memory_allocated() - before) / 1e6, 1
    )

    # a real out-of-memory error
    with models.causal_lm("random/smollm2-shape", path=folder):
        pass  # loaded, not leased any more: the OOM guard may evict it
    try:
        with cache.oom_guard("allocating a tensor larger than the GPU"):
            torch.empty(
                int(torch.cuda.get_device_properties(0).total_memory * 2), dtype=torch.uint8, device="cuda"
            )
        report["oom"] = "no error?!"
    except cache.OutOfMemory as error:
        report["oom"] = str(error)
    report["loaded_after_oom"] = cache.loaded()
    with models.causal_lm("random/smollm2-shape", path=folder) as model:  # the next request works
        out = model(torch.ones(1, 4, dtype=torch.long, device=placement.device)).logits
        report["next_request_after_oom"] = list(out.shape)
    cache.CACHE.clear()

    with models.causal_lm("random/smollm2-shape", path=folder, device_name="cpu") as cpu_model:
        cpu_cached = tokens_per_second(cpu_model, "cpu", 20, True)
    report["throughput_tokens_per_s"] = {
        "gpu_kv_cache": round(gpu_cached, 1),
        "gpu_no_kv_cache": round(gpu_uncached, 1),
        "cpu_fp32_kv_cache": round(cpu_cached, 1),
        "kv_cache_speedup_gpu": round(gpu_cached / gpu_uncached, 2),
        "gpu_over_cpu": round(gpu_cached / cpu_cached, 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
