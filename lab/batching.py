"""Batched forward steps whose one bad item never fails the others.

The model queue (:mod:`lab.scheduler`) joins requests of several students into one batch, and runs one
forward pass for all of them: on two CPU cores as on a GPU, one pass over 16 prompts costs far less than
16 passes over one. Each feature checks its input alone first (the *prepare* step, in the student's own
request), so a text over the token cap or an empty prompt is refused before it waits and never reaches a
batch. What can still go wrong inside a batch (an input that breaks the model, a defect) must not cost
the other students their answer: :func:`isolated` runs a failed batch again one item at a time, so each
item gets its own result or its own error.

::

    @isolated
    def forward_many(items: list[Prepared]) -> list[np.ndarray]:
        ...  # one forward pass for all items

    forward_many([good, bad, good])  # [array, IndexError(...), array]
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from lab.deadline import RequestTooLong

T = TypeVar("T")


def isolated(forward_many: Callable[[list[T]], list[Any]]) -> Callable[[list[T]], list[Any]]:
    """Wrap a batched forward step so that a failing batch is retried item by item.

    The wrapped function returns one result per item, in order; an item that fails on its own gets its
    exception as its result (the scheduler raises it to that item's student only). A batch stopped by the
    request time limit is not retried: one at a time would take longer still.
    """

    @functools.wraps(forward_many)
    def run(items: list[T]) -> list[Any]:
        try:
            return forward_many(items)
        except RequestTooLong:
            raise
        except Exception as error:
            if len(items) == 1:
                return [error]
        results: list[Any] = []
        for item in items:
            try:
                results.extend(forward_many([item]))
            except Exception as error:
                results.append(error)
        return results

    return run


def alone(forward_many: Callable[[list[T]], list[Any]], item: T) -> Any:
    """Run one item through a batched forward step (a batch of one), raising its error if it failed.

    The one-at-a-time entry points (``attention.next_token_logits``, ``embeddings.embed`` …) go through
    the same code as a batch, so a batch's results equal theirs by construction.
    """
    (result,) = forward_many([item])
    if isinstance(result, BaseException):
        raise result
    return result
