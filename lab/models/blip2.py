"""BLIP-2 visual chat models (chapter 9): plan the precision, then load model and processor as one."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from lab import catalog, device
from lab.cache import CACHE
from lab.catalog import ModelUnavailable
from lab.errors import InputError, LabError
from lab.models.lease import Held, ModelLike, ModelRef, lease_model, ref

VISION_CHAT_DEFAULT = catalog.BLIP2_OPT
# "auto": 16-bit on a GPU, 8-bit or 4-bit when the GPU's free memory is short, float32 on a CPU.
QUANTIZATIONS = ("auto", "none", "8-bit", "4-bit")


class MissingDependency(LabError, ValueError):
    """An optional package is needed for what was asked; the message says what to install."""


class VisionChatPlan:
    """How a BLIP-2 model will be loaded (device, precision) and what the reader should know first."""

    def __init__(self, placement: device.Placement, quantization: str | None, notes: tuple[str, ...] = ()):
        self.placement = placement
        self.quantization = quantization  # None, "8-bit" or "4-bit"
        self.notes = notes

    @property
    def precision(self) -> str:
        """``8-bit``, ``4-bit``, or the dtype of the weights (``float32``, ``bfloat16``, ``float16``)."""
        return self.quantization or str(self.placement.dtype).removeprefix("torch.")


class VisionChatModel(Held):
    """A ``Blip2ForConditionalGeneration`` and its ``Blip2Processor``, held as one cache entry.

    ``eval``, ``parameters`` and ``buffers`` pass through to the model, so the cache can size it.
    ``dtype`` is what the image's pixel values must be cast to before the forward pass.
    """

    def __init__(
        self, model: Any, processor: Any, model_id: str, where: str, dtype: Any, plan: VisionChatPlan
    ) -> None:
        self.model = model
        self.processor = processor
        self.model_id = model_id
        self.device = where
        self.dtype = dtype
        self.precision = plan.precision
        self.notes = plan.notes

    @property
    def module(self) -> Any:
        return self.model

    @property
    def query_tokens(self) -> int:
        """How many Q-Former outputs stand in for the image in the language model's input (32 for BLIP-2)."""
        return int(self.model.config.num_query_tokens)

    @property
    def decoder_only(self) -> bool:
        """True for OPT (the output repeats the prompt), False for Flan-T5 (encoder-decoder)."""
        return bool(self.model.config.use_decoder_only_language_model)

    @property
    def context(self) -> int:
        """Tokens the language model reads at most: OPT's positions (2,048), else the tokenizer's limit."""
        limit = getattr(self.model.config.text_config, "max_position_embeddings", None)
        if not limit:  # T5 has relative positions; its tokenizer states the length it was trained on
            limit = getattr(self.processor.tokenizer, "model_max_length", 512)
            limit = limit if limit < 100_000 else 512
        return int(limit)


def _bitsandbytes_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


def _safetensors_parameters(folder: Path) -> int:
    """Parameters stored in a folder's safetensors files, read from their headers (no weights loaded)."""
    import math

    from safetensors import safe_open

    total = 0
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as weights:
            names = weights.keys()  # a safe_open handle is not iterable itself
            total += sum(math.prod(weights.get_slice(name).get_shape()) for name in names)
    return total


def _bytes_16bit(model: ModelRef) -> int:
    """Bytes of the weights in 16-bit: counted in a local folder, else the catalog's figure."""
    try:
        source = model.source("model")
    except ModelUnavailable:
        source = None
    if source is not None and source.origin in ("path", "model-dir"):
        count = _safetensors_parameters(Path(source.location))
        if count:
            return count * 2
    return int(model.entry.memory_mb * 1e6)


def _free_cuda_bytes(device_name: str) -> int:
    """Free GPU memory, counting what the cache would evict to make room (unleased entries)."""
    import torch

    free, _ = torch.cuda.mem_get_info(torch.device(device_name))
    kind = device_name.split(":")[0]
    return free + sum(s.nbytes for s in CACHE.stats() if s.device.split(":")[0] == kind and s.leases == 0)


def _not_on_gpu_notes(title: str, bytes_16bit: int, placement: device.Placement) -> tuple[str, ...]:
    fp32 = 2 * bytes_16bit
    if fp32 < 1e9:  # small models need no warning
        return ()
    where = "the CPU" if placement.kind == "cpu" else placement.device
    note = f"{title} runs on {where} in float32 here: it needs about {fp32 / 1e9:.1f} GB of memory"
    if placement.kind != "cpu":
        return (note + ".",)
    # Generating on a CPU is bound by memory bandwidth: each new token reads every weight once, and
    # laptops and desktops read roughly 10-40 GB/s.
    slow, fast = 10e9 / fp32, 40e9 / fp32
    return (
        f"{note}, and it generates roughly {slow:.1f}–{fast:.1f} tokens per second (a 20-token caption "
        f"takes {20 / fast:.0f}–{20 / slow:.0f} s). A CUDA GPU runs it in 16-bit, in half the memory and "
        "tens of times faster.",
    )


def vision_chat_plan(
    model: ModelLike = VISION_CHAT_DEFAULT,
    path: str | Path | None = None,
    *,
    quantization: str = "auto",
    device_name: str | None = None,
    free_bytes: int | None = None,
) -> VisionChatPlan:
    """Decide how :func:`vision_chat_model` will load a BLIP-2 model, without loading it.

    Args:
        quantization: ``auto`` (16-bit on a GPU; 8-bit, then 4-bit, when its free memory is short;
            float32 on a CPU), ``none`` (never quantise), ``8-bit`` or ``4-bit`` (bitsandbytes, CUDA only).
        free_bytes: the GPU's free memory, measured when not given (for tests).

    Raises:
        MissingDependency: 8-bit or 4-bit was asked for and bitsandbytes is not installed.
        ValueError: an unknown option, or 8-bit/4-bit without a CUDA GPU.
    """
    if quantization not in QUANTIZATIONS:
        raise InputError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, not {quantization!r}")
    placement = device.select(device_name)
    if quantization in ("8-bit", "4-bit"):
        if not _bitsandbytes_installed():
            raise MissingDependency(
                f"{quantization} loading needs the bitsandbytes package, which is not installed: "
                "run `pip install bitsandbytes` (it needs a CUDA GPU), or choose auto."
            )
        if placement.kind != "cuda":
            raise InputError(
                f"{quantization} loading (bitsandbytes) needs a CUDA GPU; the lab runs on "
                f"{placement.device}. Choose auto."
            )
        return VisionChatPlan(placement, quantization)
    model = ref(model, path)
    title = model.entry.title
    size = _bytes_16bit(model)
    if placement.kind != "cuda":
        return VisionChatPlan(placement, None, _not_on_gpu_notes(title, size, placement))
    if quantization == "none" or not size:
        return VisionChatPlan(placement, None)
    free = _free_cuda_bytes(placement.device) if free_bytes is None else free_bytes
    need = size * 1.2  # the weights, plus room for activations and the KV cache
    if need <= free:
        return VisionChatPlan(placement, None)
    # 8-bit weights take half the memory of 16-bit ones, 4-bit a quarter; 4-bit is the last resort.
    bits = "8-bit" if need / 2 <= free else "4-bit"
    short = (
        f"{title} needs about {need / 1e9:.1f} GB of GPU memory in 16-bit and {free / 1e9:.1f} GB are free"
    )
    if not _bitsandbytes_installed():
        return VisionChatPlan(
            placement,
            None,
            (
                f"{short}; {bits} would fit, but bitsandbytes is not installed (pip install bitsandbytes). "
                "Loading in 16-bit anyway.",
            ),
        )
    return VisionChatPlan(placement, bits, (f"{short}: loading it in {bits} with bitsandbytes.",))


def vision_chat_model(
    model: ModelLike = VISION_CHAT_DEFAULT,
    path: str | Path | None = None,
    *,
    quantization: str = "auto",
    device_name: str | None = None,
) -> AbstractContextManager[VisionChatModel]:
    """Lease a BLIP-2 model and its processor (:class:`VisionChatModel`), e.g. ``Salesforce/blip2-opt-2.7b``.

    ``Salesforce/blip2-flan-t5-xl`` and local folders (``path=``) load through the same code. The precision
    follows :func:`vision_chat_plan`; each precision is its own cache entry.

    Raises:
        ModelUnavailable: the weights are not here (the message says how to get them), or the folder
            does not hold a BLIP-2 model.
        MissingDependency: 8-bit or 4-bit without bitsandbytes.
    """
    model = ref(model, path)
    plan = vision_chat_plan(model, quantization=quantization, device_name=device_name)

    def build(location: str, where: device.Placement) -> VisionChatModel:
        import torch
        import transformers

        config = transformers.AutoConfig.from_pretrained(location, trust_remote_code=False)
        if config.model_type != "blip-2":
            raise ValueError(f"it holds a {config.model_type} model, not BLIP-2")
        kwargs: dict[str, Any] = {"use_safetensors": True, "trust_remote_code": False}
        blip2 = transformers.Blip2ForConditionalGeneration
        if plan.quantization is None:
            dtype = where.dtype
            network = blip2.from_pretrained(location, dtype=dtype, **kwargs).to(where.device)
        else:
            dtype = torch.float16  # bitsandbytes computes in 16-bit
            quantize = (
                transformers.BitsAndBytesConfig(load_in_8bit=True)
                if plan.quantization == "8-bit"
                else transformers.BitsAndBytesConfig(
                    load_in_4bit=True,
                    bnb_4bit_quant_type="nf4",
                    bnb_4bit_compute_dtype=dtype,
                    bnb_4bit_use_double_quant=True,
                )
            )
            network = blip2.from_pretrained(
                location, dtype=dtype, quantization_config=quantize, device_map={"": where.device}, **kwargs
            )
        processor = transformers.Blip2Processor.from_pretrained(location, trust_remote_code=False)
        return VisionChatModel(network, processor, model.id, where.device, dtype, plan)

    variant = f":{plan.quantization}" if plan.quantization else ""
    return lease_model(model, "vision-chat", build, device_name=device_name, variant=variant)
