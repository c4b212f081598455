"""Load models and tokenizers: the only module that calls ``from_pretrained``.

Every loader resolves its source through :mod:`lab.catalog`, places the model with :mod:`lab.device`
and goes through :data:`lab.cache.CACHE`, so a model is loaded once per process and shared by every tab
and every user. ``trust_remote_code`` is never enabled, and weights load from safetensors only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lab import catalog, device, sources
from lab.cache import CACHE, Loaded, module_nbytes
from lab.catalog import ModelUnavailable, Source


def _unavailable_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "not here" rather than "broken": missing files, no network, gated repos."""
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    return (OSError, ValueError, HfHubHTTPError, LocalEntryNotFoundError)


@contextmanager
def _unavailable_on_failure(model_id: str, part: catalog.Part) -> Iterator[None]:
    """Turn the Hub's and transformers' "cannot find it" errors into :class:`ModelUnavailable`."""
    try:
        yield
    except ModelUnavailable:
        raise
    except _unavailable_errors() as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "trust_remote_code" in str(error):
            reason = "it needs custom code from its repository (trust_remote_code), which the lab never runs"
        raise catalog.unavailable(model_id, part, reason[:300]) from error


def _key(model_id: str, part: str, path: str | Path | None, variant: str = "") -> str:
    where = f"@{path}" if path else ""
    return f"{model_id}#{part}{variant}{where}"


def _location(source: Source) -> str:
    return sources.materialise(source.location) if source.origin == "packaged" else source.location


def source_of(model_id: str, part: catalog.Part = "model", path: str | Path | None = None) -> Source:
    """Where ``model_id`` would load from (raises :class:`ModelUnavailable` if nowhere)."""
    return catalog.resolve(model_id, part, path)


def locate(model_id: str, part: catalog.Part = "model", path: str | Path | None = None) -> str:
    """What ``from_pretrained`` is given for ``model_id``: a folder, a Hub id, or ``tiktoken:<encoding>``."""
    return _location(catalog.resolve(model_id, part, path))


# -- tokenizers ----------------------------------------------------------------------------------


def tokenizer(model_id: str, path: str | Path | None = None) -> Any:
    """The tokenizer of ``model_id``: a transformers fast tokenizer, or a ``tiktoken.Encoding``."""
    source = catalog.resolve(model_id, "tokenizer", path)

    def load() -> Loaded:
        with _unavailable_on_failure(model_id, "tokenizer"):
            loaded = load_tokenizer_uncached(_location(source))
        size = loaded.n_vocab if hasattr(loaded, "n_vocab") else len(loaded)
        return Loaded(loaded, nbytes=size * 64)  # rough: a vocabulary entry and its merges

    return CACHE.get(_key(model_id, "tokenizer", path), load)


def load_tokenizer_uncached(location: str) -> Any:
    """Build a tokenizer from a folder, Hub id or ``tiktoken:<encoding>``, bypassing the cache.

    This is what the book does on every call (``AutoTokenizer.from_pretrained``); the lab only calls it
    on a cache miss, and ``lab.bench`` calls it to measure what the cache saves.
    """
    if location.startswith("tiktoken:"):
        return sources.tiktoken_encoding(location.removeprefix("tiktoken:"))
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(location, trust_remote_code=False, use_fast=True)


# -- models --------------------------------------------------------------------------------------


def _model_loader(
    model_id: str,
    part: str,
    path: str | Path | None,
    build: Callable[[str, Any], Any],
    placement: device.Placement,
) -> Callable[[], Loaded]:
    source = catalog.resolve(model_id, "model", path)

    def load() -> Loaded:
        with _unavailable_on_failure(model_id, "model"):
            model = build(_location(source), placement)
        model.eval()
        return Loaded(
            model, module_nbytes(model), placement.device, str(placement.dtype).removeprefix("torch.")
        )

    return load


def _expected(model_id: str) -> int:
    return int(catalog.entry(model_id).memory_mb * 1e6)


@contextmanager
def causal_lm(
    model_id: str, path: str | Path | None = None, *, eager: bool = False, device_name: str | None = None
) -> Iterator[Any]:
    """Lease a causal language model (``AutoModelForCausalLM``) on the lab's device.

    Args:
        eager: load with eager attention, which returns attention weights (SDPA returns none); kept
            in the cache as a separate entry.
    """
    placement = device.select(device_name)

    def build(location: str, where: device.Placement) -> Any:
        from transformers import AutoModelForCausalLM

        kwargs = {"attn_implementation": "eager"} if eager else {}
        return AutoModelForCausalLM.from_pretrained(
            location, dtype=where.dtype, use_safetensors=True, trust_remote_code=False, **kwargs
        ).to(where.device)

    key = _key(model_id, "causal-lm", path, ":eager" if eager else "")
    loader = _model_loader(model_id, "causal-lm", path, build, placement)
    with CACHE.lease(key, loader, expected_bytes=_expected(model_id), device=placement.device) as model:
        yield model


@contextmanager
def encoder(
    model_id: str, path: str | Path | None = None, *, eager: bool = False, device_name: str | None = None
) -> Iterator[Any]:
    """Lease a transformer encoder (``AutoModel``), e.g. BERT or MiniLM's encoder."""
    placement = device.select(device_name)

    def build(location: str, where: device.Placement) -> Any:
        from transformers import AutoModel

        kwargs = {"attn_implementation": "eager"} if eager else {}
        return AutoModel.from_pretrained(
            location, dtype=where.dtype, use_safetensors=True, trust_remote_code=False, **kwargs
        ).to(where.device)

    key = _key(model_id, "encoder", path, ":eager" if eager else "")
    loader = _model_loader(model_id, "encoder", path, build, placement)
    with CACHE.lease(key, loader, expected_bytes=_expected(model_id), device=placement.device) as model:
        yield model


@contextmanager
def sentence_encoder(
    model_id: str, path: str | Path | None = None, *, device_name: str | None = None
) -> Iterator[Any]:
    """Lease a sentence-transformers model (one vector per text)."""
    placement = device.select(device_name)

    def build(location: str, where: device.Placement) -> Any:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(location, device=where.device, trust_remote_code=False)
        return model.to(where.dtype) if where.device.startswith("cuda") else model

    key = _key(model_id, "sentence-encoder", path)
    loader = _model_loader(model_id, "sentence-encoder", path, build, placement)
    with CACHE.lease(key, loader, expected_bytes=_expected(model_id), device=placement.device) as model:
        yield model


def preload(model_ids: list[str]) -> dict[str, str]:
    """Load models at start (``LAB_PRELOAD``): each id's tokenizer and, where it has one, its model.

    Returns ``{id: what was loaded, or why not}`` and never raises: a bad id must not stop the app.
    """
    leasers = {"sentence-encoder": sentence_encoder, "encoder": encoder, "causal-lm": causal_lm}
    results = {}
    for model_id in model_ids:
        loaded, problems = [], []
        try:
            tokenizer(model_id)
            loaded.append("tokenizer")
        except ModelUnavailable as error:
            problems.append(str(error))
        lease = leasers.get(catalog.entry(model_id).kind)
        if lease is not None:
            try:
                with lease(model_id):
                    loaded.append("model")
            except ModelUnavailable as error:
                problems.append(str(error))
        results[model_id] = ("loaded " + " and ".join(loaded)) if loaded else "; ".join(problems)
    return results
