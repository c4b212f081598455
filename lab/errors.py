"""The base of every error the lab raises on purpose.

A :class:`LabError`'s message is written for the person using the lab: the app shows it as it is, while
any other exception is an internal error (the page says so, the server log keeps the trace). Subclasses
that report bad input also derive from ``ValueError`` so ``except ValueError`` in a notebook still works.
"""

from __future__ import annotations


class LabError(Exception):
    """An expected failure whose message tells the user what happened and what to do."""


class InputError(LabError, ValueError):
    """The input cannot be used as given (out of range, too long, empty, wrong type)."""
