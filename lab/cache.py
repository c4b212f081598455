"""One process-wide model cache: every model and tokenizer of the lab is loaded through it.

- Each key loads once, however many threads ask at the same moment (the others wait for that load).
- Entries count against a memory budget per device kind (``LAB_GPU_BUDGET_GB``, ``LAB_CPU_BUDGET_GB``);
  when a new load would not fit, the least recently used entries that nobody holds are evicted.
- :meth:`ModelCache.lease` holds an entry for the length of a ``with`` block; held entries are never
  evicted.
- Eviction drops the cache's reference, runs ``gc.collect()`` and empties the CUDA allocator's cache, so
  the memory really returns.
- :func:`oom_guard` turns a CUDA out-of-memory error into :class:`OutOfMemory` with a clear message,
  after freeing what it can, so the next request starts from a usable cache.

Usage::

    from lab.cache import CACHE, Loaded
    with CACHE.lease("gpt2#tokenizer", lambda: Loaded(load_it(), nbytes=2_000_000)) as tokenizer:
        ...
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from lab import deadline
from lab.errors import LabError

log = logging.getLogger(__name__)


@dataclass
class Loaded:
    """What a loader returns: the object, its size in bytes, and where it lives."""

    value: Any
    nbytes: int
    device: str = "cpu"
    dtype: str = "-"


@dataclass
class _Entry:
    loaded: Loaded
    load_seconds: float
    hits: int = 0
    misses: int = 1
    leases: int = 0
    last_used: float = field(default_factory=time.time)

    @property
    def kind(self) -> str:
        return self.loaded.device.split(":")[0]


@dataclass(frozen=True)
class EntryStats:
    """One row of the System panel."""

    key: str
    device: str
    dtype: str
    nbytes: int
    hits: int
    misses: int
    load_seconds: float
    last_used: float
    leases: int


class OutOfMemory(LabError, RuntimeError):
    """A model call ran out of device memory; the cache was trimmed and the next call can proceed."""


def module_nbytes(module: Any) -> int:
    """Bytes held by a torch module's parameters and buffers."""
    total = 0
    for tensor in [*module.parameters(), *module.buffers()]:
        total += tensor.numel() * tensor.element_size()
    return total


def _budget_from_env(kind: str) -> int:
    from lab.device import total_memory

    name = "LAB_GPU_BUDGET_GB" if kind == "cuda" else "LAB_CPU_BUDGET_GB"
    raw = os.environ.get(name)
    if raw:
        return int(float(raw) * 1024**3)
    share = 0.85 if kind == "cuda" else 0.5
    return int(total_memory(kind) * share)


class ModelCache:
    """A thread-safe LRU cache of loaded models with per-device memory budgets.

    Args:
        budgets: bytes allowed per device kind (``cpu``, ``cuda``, ``mps``); missing kinds are read from
            the environment (see the module docstring) on first use.
    """

    def __init__(self, budgets: dict[str, int] | None = None) -> None:
        self._budgets = dict(budgets or {})
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._pending: dict[str, Future[_Entry]] = {}
        self._misses: dict[str, int] = {}
        self._lock = threading.RLock()

    # -- budgets ---------------------------------------------------------------------------------
    def budget(self, kind: str) -> int:
        with self._lock:
            if kind not in self._budgets:
                self._budgets[kind] = _budget_from_env(kind)
            return self._budgets[kind]

    def used(self, kind: str) -> int:
        with self._lock:
            return sum(e.loaded.nbytes for e in self._entries.values() if e.kind == kind)

    # -- loading ---------------------------------------------------------------------------------
    def get(
        self, key: str, loader: Callable[[], Loaded], *, expected_bytes: int = 0, device: str = "cpu"
    ) -> Any:
        """Return the cached object for ``key``, loading it with ``loader`` on a miss.

        Args:
            key: cache key, e.g. ``"gpt2#tokenizer"``.
            loader: builds the object; called at most once per key while it stays cached.
            expected_bytes: size estimate used to make room before loading.
            device: the device the loader will place it on (for the budget before loading).
        """
        return self._acquire(key, loader, expected_bytes, device, lease=False).loaded.value

    @contextmanager
    def lease(
        self, key: str, loader: Callable[[], Loaded], *, expected_bytes: int = 0, device: str = "cpu"
    ) -> Iterator[Any]:
        """Like :meth:`get`, and the entry cannot be evicted until the ``with`` block ends."""
        entry = self._acquire(key, loader, expected_bytes, device, lease=True)
        try:
            yield entry.loaded.value
        finally:
            with self._lock:
                entry.leases -= 1
                entry.last_used = time.time()

    def _acquire(
        self, key: str, loader: Callable[[], Loaded], expected_bytes: int, device: str, lease: bool
    ) -> _Entry:
        while True:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    entry.hits += 1
                    entry.last_used = time.time()
                    entry.leases += lease
                    self._entries.move_to_end(key)
                    return entry
                pending = self._pending.get(key)
                if pending is None:
                    future: Future[_Entry] = Future()
                    self._pending[key] = future
                    break
            with deadline.paused():  # loading is not the request's time
                pending.result()  # another thread is loading it: wait (or share its error), then look again
        try:
            entry = self._load(key, loader, expected_bytes, device, lease)
        except BaseException as error:
            with self._lock:
                del self._pending[key]
            future.set_exception(error)
            raise
        with self._lock:
            del self._pending[key]
        future.set_result(entry)
        return entry

    def _load(
        self, key: str, loader: Callable[[], Loaded], expected_bytes: int, device: str, lease: bool
    ) -> _Entry:
        kind = device.split(":")[0]
        if expected_bytes:
            self._make_room(kind, expected_bytes)
        started = time.perf_counter()
        with deadline.paused():  # a request's time limit does not count the load (done once for all)
            loaded = loader()
        seconds = time.perf_counter() - started
        with self._lock:
            self._misses[key] = self._misses.get(key, 0) + 1
            entry = _Entry(loaded, seconds, misses=self._misses[key], leases=int(lease))
            self._entries[key] = entry
        self._make_room(entry.kind, 0, keep=key)
        log.info("loaded %s on %s in %.2fs (%.1f MB)", key, loaded.device, seconds, loaded.nbytes / 1e6)
        return entry

    # -- eviction --------------------------------------------------------------------------------
    def _make_room(self, kind: str, incoming: int, keep: str | None = None) -> None:
        """Evict least recently used, unleased entries of ``kind`` until ``incoming`` more bytes fit."""
        budget = self.budget(kind)
        evicted = []
        with self._lock:
            for key in list(self._entries):
                if self.used(kind) + incoming <= budget:
                    break
                entry = self._entries[key]
                if key == keep or entry.kind != kind or entry.leases > 0:
                    continue
                evicted.append(self._entries.pop(key))
                log.info("evicted %s to stay under the %s budget", key, kind)
            # The loop variable would keep the last evicted entry alive through gc.collect() and
            # empty_cache() below, so a model held in a reference cycle would not be freed.
            entry = None
        if evicted:
            del evicted
            _release_memory(kind)

    def evict(self, key: str) -> bool:
        """Drop one entry unless it is leased; True if it was dropped."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.leases > 0:
                return False
            del self._entries[key]
            kind = entry.kind
            del entry
        _release_memory(kind)
        return True

    def evict_unleased(self, kind: str | None = None) -> list[str]:
        """Drop every entry (of one device kind, or all) that nobody holds; return their keys."""
        with self._lock:
            keys = [k for k, e in self._entries.items() if e.leases == 0 and kind in (None, e.kind)]
            for key in keys:
                del self._entries[key]
        _release_memory(kind or "cuda")
        return keys

    def clear(self) -> None:
        """Forget everything, leased or not (tests and shutdown)."""
        with self._lock:
            self._entries.clear()
            self._misses.clear()
        _release_memory("cuda")

    # -- inspection ------------------------------------------------------------------------------
    def loaded(self) -> list[str]:
        """Keys of the loaded entries, least recently used first."""
        with self._lock:
            return list(self._entries)

    def stats(self) -> list[EntryStats]:
        with self._lock:
            return [
                EntryStats(
                    key,
                    e.loaded.device,
                    e.loaded.dtype,
                    e.loaded.nbytes,
                    e.hits,
                    e.misses,
                    e.load_seconds,
                    e.last_used,
                    e.leases,
                )
                for key, e in self._entries.items()
            ]


def _release_memory(kind: str) -> None:
    gc.collect()
    if kind == "cuda":
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


CACHE = ModelCache()
"""The lab's one cache. Use :func:`loaded` and :func:`stats` to look inside."""


def loaded() -> list[str]:
    """Names (cache keys) of the models and tokenizers loaded now."""
    return CACHE.loaded()


def stats() -> list[EntryStats]:
    return CACHE.stats()


@contextmanager
def oom_guard(what: str, cache: ModelCache | None = None) -> Iterator[None]:
    """Run a model call; on CUDA out-of-memory free what the cache can and raise :class:`OutOfMemory`."""
    import torch

    try:
        yield
    except torch.cuda.OutOfMemoryError as error:
        # The failed call's frames hold its tensors, and the traceback keeps them alive (also through the
        # OutOfMemory below, whose __context__ is this error): clear them so their memory can return.
        traceback.clear_frames(error.__traceback__)
        freed = (cache or CACHE).evict_unleased("cuda")
        del error
        _release_memory("cuda")
        raise OutOfMemory(
            f"The GPU ran out of memory while {what}. Freed {len(freed)} unused model(s); "
            "try again, or with a shorter input."
        ) from None
