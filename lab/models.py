"""Load models and tokenizers: the only module that calls ``from_pretrained``.

Every loader resolves its source through :mod:`lab.catalog`, places the model with :mod:`lab.device`
and goes through :data:`lab.cache.CACHE`, so a model is loaded once per process and shared by every tab
and every user. ``trust_remote_code`` is never enabled, and weights load from safetensors only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
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


Build = Callable[[str, device.Placement], Any]


@contextmanager
def _lease_model(
    model_id: str,
    part: str,
    path: str | Path | None,
    device_name: str | None,
    build: Build,
    variant: str = "",
) -> Iterator[Any]:
    """Resolve, load once through the cache on the lab's device, and hold the model for a ``with`` block."""
    placement = device.select(device_name)
    source = catalog.resolve(model_id, "model", path)

    def load() -> Loaded:
        with _unavailable_on_failure(model_id, "model"):
            model = build(_location(source), placement)
        model.eval()
        dtype = str(placement.dtype).removeprefix("torch.")
        return Loaded(model, module_nbytes(model), placement.device, dtype)

    key = _key(model_id, part, path, f"{variant}@{placement.device}")
    expected = int(catalog.entry(model_id).memory_mb * 1e6)
    with CACHE.lease(key, load, expected_bytes=expected, device=placement.device) as model:
        yield model


def _transformers_build(auto_class: str, eager: bool) -> Build:
    """A builder for ``transformers.<auto_class>.from_pretrained``: safetensors only, no remote code."""

    def build(location: str, where: device.Placement) -> Any:
        import transformers

        kwargs = {"attn_implementation": "eager"} if eager else {}
        model_class = getattr(transformers, auto_class)
        return model_class.from_pretrained(
            location, dtype=where.dtype, use_safetensors=True, trust_remote_code=False, **kwargs
        ).to(where.device)

    return build


def causal_lm(
    model_id: str, path: str | Path | None = None, *, eager: bool = False, device_name: str | None = None
) -> AbstractContextManager[Any]:
    """Lease a causal language model (``AutoModelForCausalLM``) on the lab's device.

    Args:
        eager: load with eager attention, which returns attention weights (SDPA returns none); kept
            in the cache as a separate entry.
        device_name: override the lab's device choice (``"cpu"``, ``"cuda"``).
    """
    build = _transformers_build("AutoModelForCausalLM", eager)
    return _lease_model(model_id, "causal-lm", path, device_name, build, ":eager" if eager else "")


def encoder(
    model_id: str, path: str | Path | None = None, *, eager: bool = False, device_name: str | None = None
) -> AbstractContextManager[Any]:
    """Lease a transformer encoder (``AutoModel``), e.g. BERT or MiniLM's encoder."""
    build = _transformers_build("AutoModel", eager)
    return _lease_model(model_id, "encoder", path, device_name, build, ":eager" if eager else "")


def sentence_encoder(
    model_id: str, path: str | Path | None = None, *, device_name: str | None = None
) -> AbstractContextManager[Any]:
    """Lease a sentence-transformers model (one vector per text)."""

    def build(location: str, where: device.Placement) -> Any:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(location, device=where.device, trust_remote_code=False)
        return model.to(where.dtype) if where.device.startswith("cuda") else model

    return _lease_model(model_id, "sentence-encoder", path, device_name, build)


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
