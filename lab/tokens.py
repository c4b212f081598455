"""Tokenizer comparison (chapter 2): the same text through many tokenizers, side by side.

The book encodes a sample text with each tokenizer and prints every token decoded on its own. This module
does the same for any text and returns plain data (:class:`Tokenization`) that :mod:`lab.render` draws and
a notebook can print::

    from lab import tokens
    for t in tokens.compare("English and CAPITALIZATION", ["gpt2", "Xenova/gpt-4"]):
        print(t.name, t.tokens)

``compare`` never raises for one bad tokenizer: that tokenizer's ``error`` says why, the others work.
"""

from __future__ import annotations

import re
import threading
import time
import unicodedata
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import catalog, models, paths
from lab.cache import CACHE
from lab.catalog import ModelUnavailable
from lab.errors import InputError

SAMPLE_TEXT_PATH = paths.TOKENIZER_SAMPLE

BOOK_TOKENIZERS = [
    "bert-base-uncased",
    "bert-base-cased",
    "gpt2",
    "google/flan-t5-small",
    "Xenova/gpt-4",
    "bigcode/starcoder2-15b",
    "facebook/galactica-1.3b",
    "microsoft/Phi-3-mini-4k-instruct",
]
MODERN_TOKENIZERS = [
    "Xenova/gpt-4o",
    "meta-llama/Meta-Llama-3-8B",
    "Qwen/Qwen2-7B-Instruct",
    "HuggingFaceTB/SmolLM2-135M-Instruct",
    "meta-llama/Llama-2-7b-hf",
    "EleutherAI/gpt-neox-20b",
]
PRESET = BOOK_TOKENIZERS + MODERN_TOKENIZERS

# What the book points out for each tokenizer on its sample text (chapter 2), and what to look for in
# the modern ones.
NOTES: dict[str, str] = {
    "bert-base-uncased": "WordPiece, 30,522 tokens. Lower-cases everything and drops the newlines; "
    "'capitalization' becomes 'capital ##ization' (## continues a word). The emoji and 鸟 are not in the "
    "vocabulary: [UNK]. [CLS] and [SEP] wrap the text.",
    "bert-base-cased": "WordPiece, 28,996 tokens. Keeps case, so CAPITALIZATION shatters into "
    "'CA ##PI ##TA ##L ##I ##Z ##AT ##ION'.",
    "gpt2": "Byte-level BPE, 50,257 tokens. Keeps newlines and case: 'CAP ITAL IZ ATION'. The emoji and 鸟 "
    "become several byte tokens that only decode back to the character together. Each space of a run "
    "is its own token.",
    "google/flan-t5-small": "SentencePiece (Unigram), 32,100 tokens. No newline or whitespace tokens, and "
    "the emoji and 鸟 map to <unk>.",
    "Xenova/gpt-4": "Byte-level BPE (tiktoken cl100k), about 100k tokens. One token for a whole run of "
    "spaces, 'elif' is one token, 'CAPITAL IZATION'; numbers split in groups of up to three digits.",
    "bigcode/starcoder2-15b": "Byte-level BPE for code, 49,152 tokens. Every digit is its own token "
    "('6 0 0'), runs of spaces are single tokens, and special tokens mark repositories, files and "
    "fill-in-the-middle (<fim_prefix> …).",
    "facebook/galactica-1.3b": "BPE for science, 50,000 tokens. [START_REF] / [END_REF] for citations, "
    "<work> for step-by-step reasoning, and one token for two tabs.",
    "microsoft/Phi-3-mini-4k-instruct": "Llama 2's SentencePiece BPE (32,000) plus chat tokens <|user|>, "
    "<|assistant|>, <|system|>, <|end|>. Digits one by one; characters outside the vocabulary fall back "
    "to bytes (<0xF0> …).",
    "Xenova/gpt-4o": "Byte-level BPE (tiktoken o200k), about 200k tokens: twice GPT-4's vocabulary, with "
    "more room for languages other than English.",
    "meta-llama/Meta-Llama-3-8B": "Byte-level BPE, 128,256 tokens (tiktoken style, cl100k plus 28k more). "
    "Numbers in groups of up to three digits; <|begin_of_text|> starts every text.",
    "Qwen/Qwen2-7B-Instruct": "Byte-level BPE, 151,646 tokens with wide Chinese coverage; digits one by one.",
    "HuggingFaceTB/SmolLM2-135M-Instruct": "Byte-level BPE, 49,152 tokens, trained for SmolLM; digits one "
    "by one; chat tokens <|im_start|> and <|im_end|>.",
    "meta-llama/Llama-2-7b-hf": "SentencePiece BPE with byte fallback, 32,000 tokens: the vocabulary Phi-3 "
    "builds on. <s> starts every text.",
    "EleutherAI/gpt-neox-20b": "Byte-level BPE trained on the Pile, 50,277 tokens: like GPT-2 plus tokens "
    "for runs of spaces.",
}

DEFAULT_CONVERSATION = [
    {"role": "user", "content": "What is a token?"},
    {
        "role": "assistant",
        "content": "A piece of text, often part of a word, that the model reads as one unit.",
    },
    {"role": "user", "content": "How many tokens is 'Hello world'?"},
    {"role": "assistant", "content": "Two for most tokenizers: 'Hello' and ' world'."},
]


class TextTooLong(InputError):
    """The text is over the lab's cap; nothing was tokenized."""


@dataclass
class Tokenization:
    """One tokenizer's view of a text.

    ``tokens[i]`` is ``ids[i]`` decoded on its own (special tokens kept), as the book prints them.
    ``spans[i]`` is the ``(start, end)`` character range of the text it covers (``(0, 0)`` for a token
    the tokenizer added). ``pieces[i]`` is set for byte pieces that are not text on their own: the hex
    bytes and the character(s) they are part of.
    """

    name: str
    tokens: list[str] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    vocab_size: int | None = None
    method: str = ""
    special_tokens: list[str] = field(default_factory=list)
    error: str | None = None
    title: str = ""
    source: str = ""
    note: str = ""
    spans: list[tuple[int, int]] = field(default_factory=list)
    added: list[bool] = field(default_factory=list)  # token inserted by the tokenizer ([CLS], <s>)
    unknown: int = 0
    pieces: list[BytePiece | None] = field(default_factory=list)
    pending: bool = False  # still downloading: shown as "loading" while the others are already shown
    seconds: float = 0.0

    @property
    def added_special(self) -> list[str]:
        return [t for t, a in zip(self.tokens, self.added) if a]

    def chars_per_token(self, text: str) -> float | None:
        counted = len(self.ids) - sum(self.added)
        return round(len(text) / counted, 2) if counted else None


@dataclass(frozen=True)
class BytePiece:
    """A token that holds part of a character's UTF-8 bytes (byte-level BPE or byte fallback)."""

    hex: str  # "F0 9F"
    part_of: str  # the character(s) those bytes belong to, e.g. "🎵"


# -- adapters: one small interface over transformers tokenizers and tiktoken encodings -------------


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (used by every byte-level BPE)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


_BYTE_DECODER = {char: byte for byte, char in _bytes_to_unicode().items()}
_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


class _HFAdapter:
    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        backend = tokenizer.backend_tokenizer
        model = type(backend.model).__name__
        decoder = str(backend.decoder)
        self.byte_level = "ByteLevel" in decoder
        if model == "WordPiece":
            self.method = "WordPiece"
        elif model == "Unigram":
            self.method = "SentencePiece (Unigram)"
        elif self.byte_level:
            self.method = "Byte-level BPE"
        else:
            self.method = "SentencePiece BPE" + (" + byte fallback" if "ByteFallback" in decoder else "")
        self.vocab_size = len(tokenizer)
        self.special_tokens = list(dict.fromkeys(tokenizer.all_special_tokens))
        self.special_ids = set(tokenizer.all_special_ids)
        self.unk_id = tokenizer.unk_token_id
        self._pieces: dict[int, str] = {}
        self._raw: dict[int, bytes | None] = {}

    def encode(self, text: str) -> tuple[list[int], list[tuple[int, int]], list[bool]]:
        encoding = self.tokenizer(
            text,
            add_special_tokens=True,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
            verbose=False,
        )
        spans = [tuple(span) for span in encoding["offset_mapping"]]
        added = [bool(m) and s == (0, 0) for m, s in zip(encoding["special_tokens_mask"], spans)]
        return list(encoding["input_ids"]), spans, added

    def piece(self, token_id: int) -> str:
        if token_id not in self._pieces:
            self._pieces[token_id] = self.tokenizer.decode(
                [token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False
            )
        return self._pieces[token_id]

    def raw_bytes(self, token_id: int) -> bytes | None:
        """The bytes of text a token stands for, where the vocabulary records them."""
        if token_id not in self._raw:
            token = self.tokenizer.convert_ids_to_tokens(token_id)
            if self.byte_level and all(ch in _BYTE_DECODER for ch in token):
                value: bytes | None = bytes(_BYTE_DECODER[ch] for ch in token)
            elif match := _FALLBACK.match(token):
                value = bytes([int(match.group(1), 16)])
            else:
                value = None
            self._raw[token_id] = value
        return self._raw[token_id]


class _TiktokenAdapter:
    def __init__(self, encoding: Any) -> None:
        self.encoding = encoding
        self.method = "Byte-level BPE (tiktoken)"
        self.vocab_size = encoding.n_vocab
        self.special_tokens = sorted(encoding.special_tokens_set)
        self.special_ids = {encoding.encode_single_token(t) for t in encoding.special_tokens_set}
        self.unk_id = None
        self._pieces: dict[int, str] = {}

    def encode(self, text: str) -> tuple[list[int], list[tuple[int, int]], list[bool]]:
        # Text that looks like a special token is encoded as text, as the user typed it.
        ids = self.encoding.encode(text, disallowed_special=())
        return ids, _byte_spans_to_chars(text, [self.raw_bytes(i) for i in ids]), [False] * len(ids)

    def piece(self, token_id: int) -> str:
        if token_id not in self._pieces:
            self._pieces[token_id] = self.raw_bytes(token_id).decode("utf-8", errors="replace")
        return self._pieces[token_id]

    def raw_bytes(self, token_id: int) -> bytes:
        return self.encoding.decode_single_token_bytes(token_id)


def _byte_spans_to_chars(text: str, token_bytes: list[bytes]) -> list[tuple[int, int]]:
    """Character spans of tokens whose bytes, concatenated, are the UTF-8 text."""
    char_at = []  # byte offset -> index of the character it belongs to
    for index, char in enumerate(text):
        char_at.extend([index] * len(char.encode("utf-8")))
    char_at.append(len(text))
    spans, offset = [], 0
    for chunk in token_bytes:
        start = char_at[offset]
        offset += len(chunk)
        end = char_at[offset] if offset < len(char_at) - 1 else len(text)
        if offset < len(char_at) - 1 and char_at[offset] == char_at[offset - 1]:
            end += 1  # the token ends inside a character: its span covers that character
        spans.append((start, max(end, start + (1 if chunk else 0))))
    return spans


def _adapter(name: str, path: str | Path | None = None) -> _HFAdapter | _TiktokenAdapter:
    return _adapter_for(models.tokenizer(name, path))


_ADAPTERS: weakref.WeakKeyDictionary[Any, _HFAdapter | _TiktokenAdapter] = weakref.WeakKeyDictionary()
_ADAPTERS_LOCK = threading.Lock()


def _adapter_for(tokenizer: Any) -> _HFAdapter | _TiktokenAdapter:
    """One adapter per tokenizer object; it (and its memo of decoded ids) goes when the cache drops it."""
    with _ADAPTERS_LOCK:
        adapter = _ADAPTERS.get(tokenizer)
        if adapter is None:
            if hasattr(tokenizer, "n_vocab") and hasattr(tokenizer, "decode_single_token_bytes"):
                adapter = _TiktokenAdapter(tokenizer)
            else:
                adapter = _HFAdapter(tokenizer)
            _ADAPTERS[tokenizer] = adapter
        return adapter


# -- text preparation -----------------------------------------------------------------------------


def prepare_text(text: str, max_chars: int) -> tuple[str, list[str]]:
    """Check the cap and make the text encodable; return it with notes for the reader.

    Lone surrogates (half of a UTF-16 pair) cannot be written in UTF-8, so no tokenizer can read them:
    each becomes U+FFFD, and a note says so.

    Raises:
        TextTooLong: the text is longer than ``max_chars``.
    """
    if len(text) > max_chars:
        raise TextTooLong(
            f"The text has {len(text):,} characters; the lab tokenizes at most {max_chars:,}. "
            f"Shorten it by {len(text) - max_chars:,} characters."
        )
    notes = []
    surrogates = sum(1 for ch in text if 0xD800 <= ord(ch) <= 0xDFFF)
    if surrogates:
        text = "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)
        notes.append(
            f"{surrogates} lone surrogate code point(s) cannot be encoded as UTF-8 and were replaced "
            "by U+FFFD (�) before tokenizing."
        )
    return text, notes


def _byte_pieces(
    adapter: Any, text: str, ids: list[int], spans: list[tuple[int, int]]
) -> list[BytePiece | None]:
    pieces: list[BytePiece | None] = []
    for token_id, (start, end) in zip(ids, spans):
        piece = adapter.piece(token_id)
        raw = adapter.raw_bytes(token_id) if "\ufffd" in piece else None
        if raw is None or _decodes(raw):
            pieces.append(None)
            continue
        part_of = text[start:end].strip() or text[start:end]
        pieces.append(BytePiece(" ".join(f"{b:02X}" for b in raw), part_of))
    return pieces


def _decodes(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# -- public API -----------------------------------------------------------------------------------


def tokenize(text: str, name: str, path: str | Path | None = None) -> Tokenization:
    """Tokenize ``text`` with one tokenizer; unavailable tokenizers come back with ``error`` set."""
    entry = catalog.entry(name)
    result = Tokenization(name=name, title=entry.title, note=NOTES.get(name, ""))
    started = time.perf_counter()
    try:
        result.source = models.source_of(name, "tokenizer", path).detail
        adapter = _adapter(name, path)
    except ModelUnavailable as error:
        result.error = str(error)
        return result
    ids, spans, added = adapter.encode(text)
    result.ids = ids
    result.spans = spans
    result.added = added
    result.tokens = [adapter.piece(i) for i in ids]
    result.vocab_size = adapter.vocab_size
    result.method = adapter.method
    result.special_tokens = adapter.special_tokens
    result.unknown = sum(1 for i in ids if adapter.unk_id is not None and i == adapter.unk_id)
    result.pieces = _byte_pieces(adapter, text, ids, spans)
    result.seconds = time.perf_counter() - started
    return result


def needs_download(name: str) -> bool:
    """True when ``name``'s tokenizer must first come from the Hub (the others answer in milliseconds,
    or say at once why they are not available): a view shows those first and fills this one in later."""
    if any(key.startswith(f"{name}#tokenizer") for key in CACHE.loaded()):
        return False
    try:
        return models.source_of(name, "tokenizer").origin == "hub"
    except ModelUnavailable:
        return False


def pending(name: str) -> Tokenization:
    """The placeholder of a tokenizer that is still downloading."""
    entry = catalog.entry(name)
    return Tokenization(name=name, title=entry.title, note=NOTES.get(name, ""), pending=True)


def compare(text: str, names: list[str] | None = None, max_chars: int = 20_000) -> list[Tokenization]:
    """Tokenize ``text`` with each tokenizer in ``names`` (default: :data:`PRESET`).

    Raises:
        TextTooLong: the text is over ``max_chars`` (nothing is tokenized, nothing is cut).
    """
    text, _ = prepare_text(text, max_chars)
    return [tokenize(text, name) for name in (PRESET if names is None else names)]


def available(names: list[str] | None = None) -> list[str]:
    """The tokenizer ids (of ``names``, default :data:`PRESET`) that load on this machine."""
    loadable = []
    for name in PRESET if names is None else names:
        try:
            models.tokenizer(name)
        except ModelUnavailable:
            continue
        loadable.append(name)
    return loadable


def sample_text() -> str:
    """The book's chapter 2 sample text, byte for byte."""
    return SAMPLE_TEXT_PATH.read_text(encoding="utf-8")


# -- boundaries between two tokenizers -------------------------------------------------------------


@dataclass(frozen=True)
class Boundaries:
    """Where two tokenizers cut the same text."""

    both: list[int]
    only_a: list[int]
    only_b: list[int]


def cuts(result: Tokenization) -> set[int]:
    """Character offsets where a token of ``result`` starts (tokens the tokenizer added do not count)."""
    return {start for (start, end), added in zip(result.spans, result.added) if not added and end > start}


def boundaries(a: Tokenization, b: Tokenization) -> Boundaries:
    cut_a, cut_b = cuts(a), cuts(b)
    return Boundaries(sorted(cut_a & cut_b), sorted(cut_a - cut_b), sorted(cut_b - cut_a))


# -- chat templates -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatRendering:
    """A conversation rendered through a tokenizer's chat template, and its tokens."""

    name: str
    text: str
    tokens: list[str]
    ids: list[int]
    special: list[bool]


def has_chat_template(name: str) -> bool:
    try:
        tokenizer = models.tokenizer(name)
    except ModelUnavailable:
        return False
    return bool(getattr(tokenizer, "chat_template", None))


def render_chat(name: str, messages: list[dict[str, str]] | None = None) -> ChatRendering:
    """Render ``messages`` with the chat template of ``name`` and tokenize the result.

    Raises:
        ModelUnavailable: the tokenizer cannot be loaded here.
        ValueError: the tokenizer has no chat template.
    """
    tokenizer = models.tokenizer(name)
    if not getattr(tokenizer, "chat_template", None):
        raise InputError(f"{name} has no chat template: it is a base model's tokenizer.")
    text = tokenizer.apply_chat_template(messages or DEFAULT_CONVERSATION, tokenize=False)
    adapter = _adapter_for(tokenizer)
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    added_vocab = set(tokenizer.get_added_vocab().values())
    special = [i in adapter.special_ids or i in added_vocab for i in ids]
    return ChatRendering(name, text, [adapter.piece(i) for i in ids], list(ids), special)


def describe_char(char: str) -> str:
    """A short visible name for an invisible or control character ("ZERO WIDTH SPACE" -> "ZWSP")."""
    return _INVISIBLE.get(char) or unicodedata.name(char, f"U+{ord(char):04X}")


_INVISIBLE = {
    "\u200b": "ZWSP",
    "\u200c": "ZWNJ",
    "\u200d": "ZWJ",
    "\u2060": "WJ",
    "\ufeff": "BOM",
    "\u200e": "LRM",
    "\u200f": "RLM",
    "\u202a": "LRE",
    "\u202b": "RLE",
    "\u202c": "PDF",
    "\u202d": "LRO",
    "\u202e": "RLO",
    "\u2066": "LRI",
    "\u2067": "RLI",
    "\u2068": "FSI",
    "\u2069": "PDI",
    "\u00ad": "SHY",
}
