"""Share any view: each tab's state as query parameters of the page address, both ways.

A link is ``?tab=<tab id>`` followed by that tab's parameters, each named with the tab's prefix
(``att.text``, ``clip.q``); the tokenizer tab keeps the two names it had first (``text``, ``tok``), so old
links still open. A link is untrusted input: :func:`decode` checks every value against the bounds of
:mod:`lab.validate` and keeps what passes, listing what it dropped and why (the page shows the list), so a
crafted link can ask the lab for nothing the page's own widgets could not::

    from lab import links
    link = links.decode("tab=attention&att.text=Hello&att.layer=999", max_text_chars=20_000)
    link.tab                      # 'attention'
    link.values["attention"]      # {'att.text': 'Hello'}
    link.problems                 # ['att.layer: layer must be a whole number between 0 and 127, got 999.']
    links.encode("attention", {"att.text": "Hello", "att.layer": 2})   # 'tab=attention&att.text=Hello&…'

Pure Python (no Gradio): the page's wiring is ``tabs/links.py``, its client code ``assets/js/lab.js``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

from lab import validate
from lab.errors import InputError

# Hugging Face ids ("owner/name") and the lab's catalog names: letters, digits, . _ - and one slash.
MODEL_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[\w.-]{1,96})?$")
# Run shares are 128-bit tokens in hex (lab.finetune.share).
SHARE_TOKEN = re.compile(r"^[0-9a-f]{32}$")
BOOK_IMAGE = ("car.png", "puppy.png", "cat.png")  # the BLIP-2 tab's examples a link may name
MAX_MODELS = 20  # tokenizers one link may name (the tokenizer API's own cap)
MAX_TURNS = 5  # questions a BLIP-2 link replays (each costs one model call)
MAX_LINE_CHARS = 2_000  # a query, a label list, one question


@dataclass(frozen=True)
class Param:
    """One query parameter of a tab: how to read it from text, and its checks.

    ``kind`` is one of ``text`` (at most ``max_chars``, or the page's text cap when 0), ``model`` (a model
    id), ``models`` (comma-separated ids), ``bound`` (a number in ``validate.BOUNDS[bound]``), ``choice``
    (one of ``options``), ``flag`` (``1`` or ``0``), ``texts`` (the parameter repeated, at most
    ``max_items``) or ``token`` (a share token).
    """

    kind: str
    bound: str = ""
    options: tuple[str, ...] = ()
    max_chars: int = 0
    max_items: int = 1


def _text(max_chars: int = 0) -> Param:
    return Param("text", max_chars=max_chars)


# Tab id (as in app.TABS) -> its parameters. The first tab's names predate the prefixes.
SCHEME: dict[str, dict[str, Param]] = {
    "tokenizers": {"text": _text(), "tok": Param("models", max_items=MAX_MODELS)},
    "attention": {
        "att.model": Param("model"),
        "att.text": _text(),
        "att.layer": Param("bound", bound="att_layer"),
        "att.head": Param("bound", bound="att_head"),
        # from a token of the attention view: its neighbours and its logit-lens row
        "emb.token": _text(100),
        "emb.model": Param("model"),
        "lens.text": _text(),
        "lens.model": Param("model"),
    },
    "topics": {
        "top.corpus": Param("choice", options=("wikipedia", "arxiv_nlp")),
        "top.model": Param("model"),
        "top.n_neighbors": Param("bound", bound="n_neighbors"),
        "top.clustering": Param("choice", options=("hdbscan", "kmeans")),
        "top.min_cluster_size": Param("bound", bound="min_cluster_size"),
        "top.min_samples": Param("bound", bound="min_samples"),
        "top.selection": Param("choice", options=("eom", "leaf")),
        "top.n_clusters": Param("bound", bound="n_clusters"),
        "top.nr_topics": Param("bound", bound="nr_topics"),
        "top.outliers": Param("choice", options=("keep", "c-tf-idf", "embeddings")),
        "top.stop_words": Param("flag"),
        "top.topic": Param("bound", bound="topic"),
    },
    "clip": {
        "clip.model": Param("model"),
        "clip.q": _text(MAX_LINE_CHARS),
        "clip.k": Param("bound", bound="clip_k"),
        "clip.labels": _text(MAX_LINE_CHARS),
        "clip.image": Param("choice", options=BOOK_IMAGE),
    },
    "vision-chat": {
        "vc.image": Param("choice", options=BOOK_IMAGE),
        "vc.q": Param("texts", max_chars=MAX_LINE_CHARS, max_items=MAX_TURNS),
    },
    "finetune": {"ft.share": Param("token")},
}
TABS = tuple(SCHEME)


@dataclass
class Link:
    """What a link asks for: the tab to show, each tab's checked values, and what was dropped and why."""

    tab: str | None = None
    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def of(self, tab: str) -> dict[str, Any]:
        """The checked values of one tab (empty when the link says nothing about it)."""
        return self.values.get(tab, {})


def decode(
    query: str | Mapping[str, Any],
    *,
    max_text_chars: int,
    allowed: Callable[[str], bool] = lambda model_id: True,
) -> Link:
    """Read a query string (``"a=1&b=2"``, a leading ``?`` allowed) or a mapping of name to value(s).

    Every value is checked; one that fails is dropped and named in ``problems`` (the rest still apply).
    ``allowed`` filters model ids (a classroom server: its catalog only).
    """
    raw = _multi(query)
    link = Link()
    tab = _first(raw.get("tab"))
    if tab is not None:
        if tab in SCHEME:
            link.tab = tab
        else:
            link.problems.append(f"tab: no tab is called {_shown(tab)}.")
    for tab_id, params in SCHEME.items():
        for name, param in params.items():
            if name not in raw:
                continue
            try:
                value = _check(name, param, raw[name], max_text_chars, allowed)
            except InputError as error:
                link.problems.append(f"{name}: {error}")
                continue
            link.values.setdefault(tab_id, {})[name] = value
    return link


def encode(tab: str, values: Mapping[str, Any]) -> str:
    """The query string of one tab's view (``tab=`` first, then its parameters in the scheme's order).

    Values of None or "" are left out; lists repeat the parameter; flags are ``1``/``0``.
    """
    params = SCHEME[tab]
    pairs: list[tuple[str, str]] = [("tab", tab)]
    for name, param in params.items():
        value = values.get(name)
        if value is None or value == "" or value == []:
            continue
        if param.kind == "models":
            pairs.append((name, ",".join(value)))
        elif param.kind == "texts":
            pairs.extend((name, str(item)) for item in value)
        elif param.kind == "flag":
            pairs.append((name, "1" if value else "0"))
        else:
            pairs.append((name, str(value)))
    return urlencode(pairs)


# -- follow one sentence through the lab ----------------------------------------------------------

# Tokenizer -> an attention model that reads the same tokens (MiniLM uses bert-base-uncased's vocabulary;
# TinyLlama uses Llama 2's). Tokenizers of models without weights the lab can show are left out.
ATTENTION_FAMILY = {
    "bert-base-uncased": "sentence-transformers/all-MiniLM-L6-v2",
    "bert-base-cased": "sentence-transformers/all-MiniLM-L6-v2",
    "gpt2": "gpt2",
    "microsoft/Phi-3-mini-4k-instruct": "microsoft/Phi-3-mini-4k-instruct",
    "meta-llama/Llama-2-7b-hf": "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
    "HuggingFaceTB/SmolLM2-135M-Instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
}


def attention_link(tokenizer: str, text: str) -> str | None:
    """The link that opens ``text`` in the attention tab with a model of ``tokenizer``'s family (None:
    the lab has no attention model of that family)."""
    model = ATTENTION_FAMILY.get(tokenizer)
    if model is None:
        return None
    return "?" + encode("attention", {"att.model": model, "att.text": text})


def tokenizer_link(text: str) -> str:
    """The link that opens ``text`` in the tokenizer tab (with its default tokenizers)."""
    return "?" + encode("tokenizers", {"text": text})


# Marks tokenizers put on word pieces: WordPiece's "##" (continues a word), byte-level BPE's "Ġ" (a space
# before), SentencePiece's "▁" (a space before).
_PIECE_MARKS = ("##", "Ġ", "▁")


def token_word(token: str) -> str:
    """A token as a reader would type it to look it up (its word-piece marks and spaces removed)."""
    for mark in _PIECE_MARKS:
        token = token.replace(mark, "")
    return token.strip()


def token_ends(text: str, tokens: list[str], special: list[bool]) -> list[int | None]:
    """Where each token ends in ``text`` (a character offset), found by walking the text left to right;
    None for special tokens and for any token not found where expected (a byte piece, an [UNK])."""
    ends: list[int | None] = []
    cursor, lowered = 0, text.lower()
    for token, is_special in zip(tokens, special):
        word = token_word(token).lower()
        found = lowered.find(word, cursor) if word and not is_special else -1
        # A token further than a few characters on is not this one (the text has a gap the model skipped).
        if found < 0 or found - cursor > 8:
            ends.append(None)
            continue
        cursor = found + len(word)
        ends.append(cursor)
    return ends


def attention_follow(
    text: str, tokens: list[str], special: list[bool], *, emb_model: str, lens_model: str
) -> dict[str, Any]:
    """What the head view needs to link each token to its embedding neighbours (``emb.*``) and to its
    logit-lens column (``lens.*``: the text up to and including the token, read by a decoder, so that the
    token is the last column; a causal model's column at a position depends on nothing after it)."""
    return {
        "text": text,
        "ends": token_ends(text, tokens, special),
        "words": [token_word(t) for t in tokens],
        "emb_model": emb_model,
        "lens_model": lens_model,
    }


# -- the checks --------------------------------------------------------------------------------------


def _check(
    name: str, param: Param, values: list[str], max_text_chars: int, allowed: Callable[[str], bool]
) -> Any:
    if param.kind == "texts":
        return validate.texts(values, name, max_items=param.max_items, max_chars=param.max_chars)
    value = values[-1]
    if param.kind == "text":
        return validate.text(value, name, max_chars=param.max_chars or max_text_chars)
    if param.kind == "model":
        return _model(value, allowed)
    if param.kind == "models":
        ids = [part for part in value.split(",") if part]
        if len(ids) > param.max_items:
            raise InputError(f"{len(ids)} models named; a link may name at most {param.max_items}.")
        return [_model(part, allowed) for part in ids]
    if param.kind == "bound":
        return validate.bound(param.bound, _number(value))
    if param.kind == "choice":
        return validate.choice(value, name, param.options)
    if param.kind == "flag":
        return validate.choice(value, name, ("1", "0")) == "1"
    if param.kind == "token":
        if not SHARE_TOKEN.match(value):
            raise InputError(f"{_shown(value)} is not a share code (32 hexadecimal digits).")
        return value
    raise ValueError(f"unknown parameter kind {param.kind!r}")  # a defect of SCHEME, not of the link


def _model(value: str, allowed: Callable[[str], bool]) -> str:
    model_id = validate.model_id(value)
    if not MODEL_ID.match(model_id):
        raise InputError(f"{_shown(model_id)} is not a model id (owner/name: letters, digits, . _ -).")
    if not allowed(model_id):
        raise InputError(f"this server does not load {_shown(model_id)}.")
    return model_id


def _number(value: str) -> float | str:
    """A number from its text (the bound's check then says what is wrong with anything else)."""
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _multi(query: str | Mapping[str, Any]) -> dict[str, list[str]]:
    if isinstance(query, str):
        return parse_qs(query.lstrip("?"), keep_blank_values=False, max_num_fields=200)
    raw: dict[str, list[str]] = {}
    for name, value in query.items():
        items = value if isinstance(value, Sequence) and not isinstance(value, str) else [value]
        raw[name] = [str(item) for item in items]
    return raw


def _first(values: list[str] | None) -> str | None:
    return values[-1] if values else None


def _shown(value: str) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "…"
