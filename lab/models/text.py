"""Text models: causal LMs, encoders, sentence encoders, encoder-decoders, and a model's config."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from lab import device
from lab.cache import CACHE, Loaded
from lab.models.lease import Build, ModelLike, _unavailable_on_failure, lease_model, ref, transformers_class


def _transformers_build(auto_class: str, eager: bool) -> Build:
    """A builder for ``transformers.<auto_class>.from_pretrained``: safetensors only, no remote code."""

    def build(location: str, where: device.Placement) -> Any:
        kwargs = {"attn_implementation": "eager"} if eager else {}
        model_class = transformers_class(auto_class)
        return model_class.from_pretrained(
            location, dtype=where.dtype, use_safetensors=True, trust_remote_code=False, **kwargs
        ).to(where.device)

    return build


def causal_lm(
    model: ModelLike, path: str | Path | None = None, *, eager: bool = False, device_name: str | None = None
) -> AbstractContextManager[Any]:
    """Lease a causal language model (``AutoModelForCausalLM``) on the lab's device.

    Args:
        model: an id, a folder, or a :class:`~lab.models.ModelRef`.
        eager: load with eager attention, which returns attention weights (SDPA returns none); kept
            in the cache as a separate entry.
        device_name: override the lab's device choice (``"cpu"``, ``"cuda"``).
    """
    build = _transformers_build("AutoModelForCausalLM", eager)
    variant = ":eager" if eager else ""
    return lease_model(model, "causal-lm", build, path=path, device_name=device_name, variant=variant)


def encoder(
    model: ModelLike, path: str | Path | None = None, *, eager: bool = False, device_name: str | None = None
) -> AbstractContextManager[Any]:
    """Lease a transformer encoder (``AutoModel``), e.g. BERT or MiniLM's encoder."""
    build = _transformers_build("AutoModel", eager)
    variant = ":eager" if eager else ""
    return lease_model(model, "encoder", build, path=path, device_name=device_name, variant=variant)


def sentence_encoder(
    model: ModelLike, path: str | Path | None = None, *, device_name: str | None = None
) -> AbstractContextManager[Any]:
    """Lease a sentence-transformers model (one vector per text)."""

    def build(location: str, where: device.Placement) -> Any:
        from sentence_transformers import SentenceTransformer

        network = SentenceTransformer(location, device=where.device, trust_remote_code=False)
        return network.to(where.dtype) if where.device.startswith("cuda") else network

    return lease_model(model, "sentence-encoder", build, path=path, device_name=device_name)


def seq2seq_lm(
    model: ModelLike, path: str | Path | None = None, *, device_name: str | None = None
) -> AbstractContextManager[Any]:
    """Lease an encoder-decoder language model (``AutoModelForSeq2SeqLM``), e.g. Flan-T5."""
    build = _transformers_build("AutoModelForSeq2SeqLM", False)
    return lease_model(model, "seq2seq-lm", build, path=path, device_name=device_name)


def model_config(model: ModelLike, path: str | Path | None = None) -> Any:
    """A model's transformers config (its ``config.json`` only, no weights), through the cache."""
    model = ref(model, path)

    def load() -> Loaded:
        with _unavailable_on_failure(model.id, "model"):
            config = transformers_class("AutoConfig").from_pretrained(
                model.location("model"), trust_remote_code=False
            )
        return Loaded(config, nbytes=8192)

    return CACHE.get(model.key("config"), load)
