"""Models the caller owns and changes (fine-tuning, chapter 12): fresh, never cached or shared."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from lab import device
from lab.models.lease import ModelLike, _unavailable_on_failure, lease_model, ref


def causal_lm_for_training(
    model: ModelLike,
    path: str | Path | None = None,
    *,
    quantize_4bit: bool = False,
    dtype: Any = None,
    device_name: str | None = None,
) -> Any:
    """A fresh causal LM that the caller owns and changes (fine-tuning): not cached, never shared.

    Args:
        quantize_4bit: the book's QLoRA loading, ``BitsAndBytesConfig(load_in_4bit=True,
            bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True)``, computing in the device's dtype.
        dtype: the weights' dtype (default: the lab's dtype for the device).
    """
    import transformers

    model = ref(model, path)
    placement = device.select(device_name)
    kwargs: dict[str, Any] = {"use_safetensors": True, "trust_remote_code": False}
    with _unavailable_on_failure(model.id, "model"):
        location = model.location("model")
        if not quantize_4bit:
            return transformers.AutoModelForCausalLM.from_pretrained(
                location, dtype=dtype or placement.dtype, **kwargs
            ).to(placement.device)
        compute = dtype or placement.dtype
        quantize = transformers.BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=compute,
            bnb_4bit_use_double_quant=True,
        )
        return transformers.AutoModelForCausalLM.from_pretrained(
            location, dtype=compute, quantization_config=quantize, device_map={"": placement.device}, **kwargs
        )


def causal_lm_merged(
    model: ModelLike,
    adapter_dir: str | Path,
    path: str | Path | None = None,
    *,
    dtype: Any = None,
    device_name: str | None = None,
) -> Any:
    """A fresh base model with a LoRA adapter merged into its weights (peft ``merge_and_unload``).

    The book reloads the base in 16-bit for this; ``dtype`` defaults to float16.
    """
    import torch
    from peft import PeftModel

    base = causal_lm_for_training(model, path, dtype=dtype or torch.float16, device_name=device_name)
    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()


def causal_lm_with_adapter(
    model: ModelLike,
    adapter_dir: str | Path,
    path: str | Path | None = None,
    *,
    device_name: str | None = None,
) -> AbstractContextManager[Any]:
    """Lease a causal LM with a LoRA adapter merged in, in the lab's dtype; one cache entry per adapter."""

    model = ref(model, path)

    def build(location: str, where: device.Placement) -> Any:
        del location  # causal_lm_merged reads the same (already resolved) reference
        return causal_lm_merged(model, adapter_dir, dtype=where.dtype, device_name=where.device)

    variant = f":adapter={Path(adapter_dir).resolve()}"
    return lease_model(model, "causal-lm", build, device_name=device_name, variant=variant)
