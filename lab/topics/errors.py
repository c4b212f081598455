"""The topic feature's errors. Both are :class:`lab.errors.LabError`, so the page shows their messages as
written; both are also ``ValueError``, so ``except ValueError`` in a notebook still catches them."""

from __future__ import annotations

from lab.errors import InputError, LabError


class TopicInputError(InputError):
    """The documents or parameters cannot be modelled as given; the message says what to change."""


class CorpusUnavailable(LabError, ValueError):
    """A corpus cannot be loaded here (e.g. the Hub is offline); the message says how to get it."""
