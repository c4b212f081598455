"""GPU checks, run by hand on a CUDA machine (CI has none); each prints a JSON report for the issue notes.

- ``python -m bench.gpu.check``: the foundation (device policy, one load for eight threads, eviction frees
  GPU memory, a real out-of-memory error, generation throughput GPU against CPU);
- ``python -m bench.gpu.check_attention``: the attention tab on real SmolLM2 weights, CPU against GPU;
- ``python -m bench.gpu.check_vision [--scale small]``: CLIP and a BLIP-2-shaped model on the GPU;
- ``python -m bench.gpu.check_engine [--adapter FOLDER]``: generation on vLLM, the lab's engine path against
  plain vLLM calls and against in-process generation (needs ``pip install vllm``).
"""
