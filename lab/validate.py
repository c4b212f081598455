"""One source of bounds for every number and text a user hands the lab, and the checks that apply them.

The page's sliders and the web API read the same table, :data:`BOUNDS`: a slider's minimum and maximum
come from it (``tabs.common.slider``), and an API endpoint checks its arguments against it, so a client can
never ask for what the page could not (``n_neighbors=1000000`` where the slider stops at 100). Every check
raises :class:`lab.errors.InputError` in the lab's words, naming what was wrong and what was got::

    from lab import validate
    validate.bound("k", "ten")
    # InputError: k must be a whole number between 1 and 50, got 'ten'.

Texts a model reads are capped in tokens per feature (:func:`check_tokens`): the characters are checked
first, so a megabyte of text is refused before a tokenizer spends seconds on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lab.errors import InputError

# No tokenizer the lab uses makes tokens longer than this many characters on ordinary text (runs of spaces
# in code tokenizers come closest). A text over ``cap × CHARS_PER_TOKEN`` characters is surely over the cap.
CHARS_PER_TOKEN = 32


@dataclass(frozen=True)
class Bound:
    """The range of one parameter, shared by its slider and its API argument.

    Attributes:
        label: what a message calls the parameter ("k", "temperature").
        low, high: the smallest and largest value accepted (both included).
        default: the slider's starting value and the API's default.
        step: the slider's step.
        whole: only whole numbers (a float such as 10.0 from a slider is accepted as 10).
        optional: None means "not set" and is accepted as None.
    """

    label: str
    low: float
    high: float
    default: float | None
    step: float = 1
    whole: bool = True
    optional: bool = False

    def describe(self) -> str:
        kind = "a whole number" if self.whole else "a number"
        return f"{kind} between {_show(self.low)} and {_show(self.high)}"

    def check(self, value: Any) -> Any:
        """``value`` as an int (``whole``) or a float, or None where ``optional``; else InputError."""
        if value is None and self.optional:
            return None
        number = _as_number(value)
        if number is None or not self.low <= number <= self.high or (self.whole and not number.is_integer()):
            raise InputError(f"{self.label} must be {self.describe()}, got {_got(value)}.")
        return int(number) if self.whole else number


# Parameter name -> its bound. Names are those of the API arguments (prefixed by the feature where two
# features share a name with different ranges).
BOUNDS: dict[str, Bound] = {
    # next token and logit lens (attention tab)
    "k": Bound("k", 1, 50, 10),
    "temperature": Bound("temperature", 0, 2, 1.0, step=0.05, whole=False),
    "top_p": Bound("top_p", 0, 1, 1.0, step=0.01, whole=False),
    "lens_k": Bound("k", 1, 10, 1),
    "kv_new_tokens": Bound("new tokens", 10, 200, 40, step=10),
    "att_layer": Bound("layer", 0, 127, 0),  # a shared link's layer and head: each model has fewer
    "att_head": Bound("head", 0, 127, 0),
    "new_tokens": Bound("new tokens", 1, 200, 30),
    # topic modelling
    "n_neighbors": Bound("n_neighbors", 2, 100, 15),
    "min_cluster_size": Bound("min_cluster_size", 2, 500, 50),
    "min_samples": Bound("min_samples", 0, 100, 0, optional=True),
    "n_clusters": Bound("n_clusters", 2, 100, 20),
    "nr_topics": Bound("nr_topics", 0, 100, 0, optional=True),
    "top_n": Bound("top_n", 1, 50, 5),
    "diversity": Bound("diversity", 0, 1, 0.2, step=0.05, whole=False),
    "max_topics": Bound("max_topics", 1, 30, 10),
    "topic": Bound("topic", -1, 10_000, None),  # a shared link's selected topic (-1: the outliers)
    "generation_topics": Bound("topics to label", 1, 30, 8),
    # CLIP search
    "clip_k": Bound("k", 1, 24, 8),
    # BLIP-2 chat decoding
    "vc_max_new_tokens": Bound("max_new_tokens", 1, 200, 50),
    "vc_num_beams": Bound("num_beams", 1, 8, 3),
    "vc_temperature": Bound("temperature", 0.05, 2, 1.0, step=0.05, whole=False),
    "vc_top_p": Bound("top_p", 0.05, 1, 0.9, step=0.05, whole=False),
    "vc_repetition_penalty": Bound("repetition_penalty", 1, 2, 1.0, step=0.05, whole=False),
    "vc_seed": Bound("seed", 0, 2**31 - 1, None, optional=True),  # a sampled answer's (None: draw one)
    # fine-tuning
    "ft_new_tokens": Bound("max_new_tokens", 1, 256, 64),
    "log_lines": Bound("log_lines", 0, 200, 20),
}

# Tokens each feature reads at most from one text (a prompt, a sentence, a query); the message names it.
TOKEN_CAPS: dict[str, int] = {
    "attention": 128,  # a 128 × 128 map per head stays readable and fast
    "next_token": 512,
    "logit_lens": 32,  # one row per layer, one column per token
    "generate": 512,  # the KV-cache demo's prompt
    "embeddings": 256,  # MiniLM reads 256 word pieces; more would be cut off unread
    "topic_query": 256,
    "topic_prompt": 256,  # the labelling prompt before BERTopic fills in 4 documents of 50 words
    "ft_compare": 512,
}


def bound(name: str, value: Any) -> Any:
    """``value`` checked against ``BOUNDS[name]``: an int or float, or None where the bound allows it."""
    return BOUNDS[name].check(value)


def bounds(**values: Any) -> dict[str, Any]:
    """Several values at once, by bound name: ``bounds(k=k, temperature=t)`` -> the checked values."""
    return {name: bound(name, value) for name, value in values.items()}


def choice(value: Any, label: str, options: Sequence[str]) -> str:
    """``value`` if it is one of ``options``; else InputError listing them."""
    if not isinstance(value, str) or value not in options:
        raise InputError(f"{label} must be one of {', '.join(map(repr, options))}, got {_got(value)}.")
    return value


def flag(value: Any, label: str) -> bool:
    """A true/false value (None is false)."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InputError(f"{label} must be true or false, got {_got(value)}.")
    return value


def text(value: Any, label: str, *, max_chars: int | None = None, required: bool = True) -> str:
    """A text (None is empty) of at most ``max_chars`` characters; empty is refused when ``required``.

    Texts a model reads are capped in tokens by the feature (:func:`check_tokens`), not here."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InputError(f"{label} must be text, got {_got(value)}.")
    if max_chars is not None and len(value) > max_chars:
        raise InputError(
            f"{label} has {len(value):,} characters; the lab takes at most {max_chars:,}. "
            f"Shorten it by {len(value) - max_chars:,}."
        )
    if required and not value.strip():
        raise InputError(f"{label} is empty: type some text first.")
    return value


def texts(value: Any, label: str, *, max_items: int, max_chars: int | None = None) -> list[str]:
    """A list of texts (None is empty), each at most ``max_chars`` characters, at most ``max_items``."""
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise InputError(f"{label} must be a list of texts, got {_got(value)}.")
    if len(value) > max_items:
        raise InputError(f"{len(value):,} {label} given; the lab takes at most {max_items:,} at a time.")
    return [text(item, f"Each of the {label}", max_chars=max_chars, required=False) for item in value]


def model_id(value: Any, label: str = "model") -> str:
    """A model id or folder name: non-empty text of at most 300 characters."""
    return text(value, label, max_chars=300).strip()


def check_tokens(
    value: str,
    count: Callable[[str], int],
    cap: int,
    *,
    what: str = "The text",
    where: str = "this tab",
    error: type[InputError] = InputError,
) -> None:
    """Refuse ``value`` when it is longer than ``cap`` tokens (see :data:`TOKEN_CAPS`), saying how long it is.

    ``count`` tokenizes a text and returns its length in tokens. A text over ``cap × CHARS_PER_TOKEN``
    characters is refused without tokenizing all of it: its length is estimated from a slice, so a
    megabyte of text costs milliseconds, not the minutes a tokenizer and a model would spend on it.
    """
    limit = cap * CHARS_PER_TOKEN
    if len(value) > limit:
        measured = count(value[:limit]) * len(value) / limit
        estimate = max(cap + 1, int(round(measured, 2 - len(str(int(measured))))))  # two significant digits
        raise error(
            f"{what} is about {estimate:,} tokens ({len(value):,} characters); {where} reads at most "
            f"{cap:,} tokens. Shorten it."
        )
    tokens = count(value)
    if tokens > cap:
        raise error(
            f"{what} is {tokens:,} tokens; {where} reads at most {cap:,}. "
            f"Shorten it by {tokens - cap:,} tokens."
        )


def token_counter(tokenizer: Any) -> Callable[[str], int]:
    """``check_tokens``'s ``count`` for a Hugging Face tokenizer: a text's length in its tokens."""

    def count(piece: str) -> int:
        return len(tokenizer(piece, verbose=False)["input_ids"])

    return count


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _show(number: float) -> str:
    return f"{number:g}"


def _got(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "…"
