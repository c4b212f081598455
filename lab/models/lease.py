"""Resolve a model once, load it once through the cache, lease it: the core every loader shares.

The only package that calls ``from_pretrained`` is :mod:`lab.models`; every loader resolves its source
through :mod:`lab.catalog` (once, in a :class:`ModelRef`), places the model with :mod:`lab.device` and goes
through :data:`lab.cache.CACHE`, so a model is loaded once per process and shared by every tab and every
user. ``trust_remote_code`` is never enabled, and weights load from safetensors only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lab import catalog, device, hub, sources
from lab.cache import CACHE, Loaded, module_nbytes
from lab.catalog import ModelUnavailable, Source

# transformers builds its classes on first access; two threads building them at once (the tokenizer tab's
# first view and another tab's first model call, on a freshly started server) can each see the other's
# half-imported module: "ImportError: cannot import name 'AutoTokenizer' from 'transformers'".
_TRANSFORMERS_IMPORT = threading.Lock()


def transformers_class(name: str) -> Any:
    """``transformers.<name>``, imported one thread at a time (free once imported: a module attribute)."""
    with _TRANSFORMERS_IMPORT:
        import transformers

        return getattr(transformers, name)


def _unavailable_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "not here" rather than "broken": missing files, no network, gated repos."""
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    return (OSError, ValueError, HfHubHTTPError, LocalEntryNotFoundError)


@contextmanager
def _unavailable_on_failure(model_id: str, part: catalog.Part, *, from_hub: bool = False) -> Iterator[None]:
    """Turn the Hub's and transformers' "cannot find it" errors into :class:`ModelUnavailable`.

    With ``from_hub``, the failure is remembered (:mod:`lab.hub`), so the next request for the same model
    is answered at once instead of waiting for the Hub again.
    """
    try:
        yield
    except ModelUnavailable:
        raise
    except _unavailable_errors() as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "trust_remote_code" in str(error):
            reason = "it needs custom code from its repository (trust_remote_code), which the lab never runs"
        if from_hub:
            hub.remember_failure(model_id, part, reason[:300])
        raise catalog.unavailable(model_id, part, reason[:300]) from error


class Held:
    """A model and what comes with it (tokenizer, processor), held as one cache entry.

    ``eval``, ``parameters`` and ``buffers`` pass through to :attr:`module`, so the cache can size it.
    """

    @property
    def module(self) -> Any:
        raise NotImplementedError

    def eval(self) -> Held:
        self.module.eval()
        return self

    def parameters(self) -> Iterator[Any]:
        return self.module.parameters()

    def buffers(self) -> Iterator[Any]:
        return self.module.buffers()


class ModelRef:
    """A model named once and resolved once: its id, an optional folder, and where each part loads from.

    Every loader takes a ``ModelRef`` or a plain id (``"gpt2"``) or a folder (``"/models/my-bert"``, as
    ``from_pretrained`` does). A feature makes the reference at its entry with :func:`ref` and passes it
    down, so one call looks at the disk and the Hub cache once per part, not once per layer.
    """

    __slots__ = ("id", "path", "_sources")

    def __init__(self, model_id: str, path: str | None = None) -> None:
        self.id = model_id
        self.path = path
        self._sources: dict[str, Source] = {}

    def source(self, part: catalog.Part = "model") -> Source:
        """Where ``part`` loads from, resolved on first use (raises :class:`ModelUnavailable`)."""
        if part not in self._sources:
            self._sources[part] = catalog.resolve(self.id, part, self.path)
        return self._sources[part]

    def location(self, part: catalog.Part = "model") -> str:
        """What ``from_pretrained`` is given: a folder, a Hub id, or ``tiktoken:<encoding>``."""
        return _location(self.source(part))

    def key(self, part: str, variant: str = "") -> str:
        """This model's cache key for ``part`` (a folder makes its own entry)."""
        where = f"@{self.path}" if self.path else ""
        return f"{self.id}#{part}{variant}{where}"

    @property
    def entry(self) -> catalog.ModelEntry:
        return catalog.entry(self.id)

    def __repr__(self) -> str:
        return f"ModelRef({self.id!r}{f', path={self.path!r}' if self.path else ''})"


ModelLike = str | ModelRef


def ref(model: ModelLike, path: str | Path | None = None) -> ModelRef:
    """The :class:`ModelRef` of ``model``: a reference as it is, an id, or a local folder.

    A folder given as the model (``ref("/models/my-bert")``) is the same as ``ref("/models/my-bert",
    path="/models/my-bert")``: the folder is the model, as in ``from_pretrained``.
    """
    if isinstance(model, ModelRef):
        if path is None or str(Path(path).expanduser()) == model.path:
            return model
        return ModelRef(model.id, str(Path(path).expanduser()))
    if path is None and catalog.is_folder_like(model):
        path = model
    return ModelRef(model, str(Path(path).expanduser()) if path is not None else None)


def _location(source: Source) -> str:
    return sources.materialise(source.location) if source.origin == "packaged" else source.location


def source_of(model: ModelLike, part: catalog.Part = "model", path: str | Path | None = None) -> Source:
    """Where ``model`` would load from (raises :class:`ModelUnavailable` if nowhere)."""
    return ref(model, path).source(part)


def locate(model: ModelLike, part: catalog.Part = "model", path: str | Path | None = None) -> str:
    """What ``from_pretrained`` is given for ``model``: a folder, a Hub id, or ``tiktoken:<encoding>``."""
    return ref(model, path).location(part)


# -- tokenizers ----------------------------------------------------------------------------------


def tokenizer(model: ModelLike, path: str | Path | None = None) -> Any:
    """The tokenizer of ``model``: a transformers fast tokenizer, or a ``tiktoken.Encoding``."""
    model = ref(model, path)
    location = model.location("tokenizer")

    from_hub = model.source("tokenizer").origin == "hub"

    def load() -> Loaded:
        with _unavailable_on_failure(model.id, "tokenizer", from_hub=from_hub):
            loaded = load_tokenizer_uncached(location)
        size = loaded.n_vocab if hasattr(loaded, "n_vocab") else len(loaded)
        return Loaded(loaded, nbytes=size * 64)  # rough: a vocabulary entry and its merges

    return CACHE.get(model.key("tokenizer"), load)


def load_tokenizer_uncached(location: str) -> Any:
    """Build a tokenizer from a folder, Hub id or ``tiktoken:<encoding>``, bypassing the cache.

    This is what the book does on every call (``AutoTokenizer.from_pretrained``); the lab only calls it
    on a cache miss, and ``bench.tokenizers`` calls it to measure what the cache saves.
    """
    if location.startswith("tiktoken:"):
        return sources.tiktoken_encoding(location.removeprefix("tiktoken:"))
    auto_tokenizer = transformers_class("AutoTokenizer")
    return auto_tokenizer.from_pretrained(location, trust_remote_code=False, use_fast=True)


# -- models --------------------------------------------------------------------------------------


Build = Callable[[str, device.Placement], Any]


@contextmanager
def lease_model(
    model: ModelLike,
    part: str,
    build: Build,
    *,
    path: str | Path | None = None,
    device_name: str | None = None,
    variant: str = "",
) -> Iterator[Any]:
    """Resolve, load once through the cache on the lab's device, and hold the model for a ``with`` block.

    ``build(location, placement)`` makes the model on a cache miss; ``part`` and ``variant`` name the
    cache entry (an eager-attention copy, a quantisation, an adapter), the device is part of the key too.
    """
    model = ref(model, path)
    placement = device.select(device_name)
    location = model.location("model")

    from_hub = model.source("model").origin == "hub"

    def load() -> Loaded:
        with _unavailable_on_failure(model.id, "model", from_hub=from_hub):
            network = build(location, placement)
        network.eval()
        dtype = str(placement.dtype).removeprefix("torch.")
        return Loaded(network, module_nbytes(network), placement.device, dtype)

    key = model.key(part, f"{variant}@{placement.device}")
    expected = int(model.entry.memory_mb * 1e6)
    with CACHE.lease(key, load, expected_bytes=expected, device=placement.device) as network:
        yield network
