"""Embeddings (chapter 2): one vector per text, similarity, 2-D maps, static versus contextual vectors.

::

    from lab import embeddings
    embeddings.similarity(["I love bread", "Baking is fun", "Stocks fell"])   # (3, 3) cosine matrix
    embeddings.static_vs_contextual("bank", ["The river bank was muddy.", "The bank raised its rates."])
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lab import catalog, models, validate
from lab.batching import alone, isolated
from lab.errors import InputError
from lab.forward import forward
from lab.models import ModelLike

SENTENCE_MODEL = catalog.MINILM
SENTENCE_MODELS = [SENTENCE_MODEL, "sentence-transformers/all-mpnet-base-v2"]
TOKEN_MODELS = [
    SENTENCE_MODEL,
    "HuggingFaceTB/SmolLM2-135M-Instruct",
    "bert-base-uncased",
    "microsoft/deberta-v3-xsmall",
    "gpt2",
]
# The tab's first example and the batching bench's: two sentences on each of three subjects.
EXAMPLE_SENTENCES = [
    "I love eating fresh bread.",
    "Baking a loaf at home is fun.",
    "The stock market fell today.",
    "Shares dropped sharply this morning.",
    "My cat sleeps all day.",
    "Kittens like to nap in the sun.",
]
MAX_TEXTS = 200
MAX_TEXT_TOKENS = validate.TOKEN_CAPS["embeddings"]
"""Tokens one text may have: MiniLM reads 256 word pieces, and would cut the rest off unread."""
ENCODE_BATCH = 64
"""Texts per forward pass inside one encoding call (sorted by length first, so padding stays small)."""
MAP_SEED = 42  # UMAP's random_state for maps of embeddings: the same points give the same map


@dataclass(frozen=True)
class Texts:
    """Texts checked for one sentence model: the *prepare* step of :func:`embed`.

    Requests with the same :attr:`batch_key` (several students' texts for one model) can share one
    encoding call (:func:`embed_batch`).
    """

    model: models.ModelRef
    texts: tuple[str, ...]

    @property
    def batch_key(self) -> tuple[str, str, str | None]:
        return ("embed", self.model.id, self.model.path)


def prepare_texts(
    texts: list[str], model: ModelLike = SENTENCE_MODEL, path: str | Path | None = None, minimum: int = 1
) -> Texts:
    """Check ``texts`` (a list of strings; at least ``minimum`` non-empty, at most :data:`MAX_TEXTS`, each
    within :data:`MAX_TEXT_TOKENS`); no model runs, only its tokenizer.

    Raises:
        InputError: too few or too many texts, not strings, or a text over the token cap.
    """
    texts = _check_texts(texts, minimum)
    model = models.ref(model, path)
    _check_lengths(texts, models.tokenizer(model))
    return Texts(model, tuple(texts))


@isolated
@forward("embedding texts")
def embed_batch(requests: list[Texts]) -> list[np.ndarray]:
    """One ``(len(texts), dim)`` float32 array per request, all requests' texts encoded in one call.

    sentence-transformers sorts the texts by length and pads each of its mini-batches, masking the
    padding in attention and in mean pooling: a text's vector does not depend on its batch mates (to
    about 1e-6).
    """
    flat = [text for request in requests for text in request.texts]
    with models.sentence_encoder(requests[0].model) as encoder:
        vectors = encoder.encode(
            flat, batch_size=ENCODE_BATCH, convert_to_numpy=True, show_progress_bar=False
        )  # (sum of texts, dim)
    vectors = np.asarray(vectors, dtype=np.float32)
    ends = np.cumsum([len(request.texts) for request in requests])
    return np.split(vectors, ends[:-1])


def embed(texts: list[str], model: ModelLike = SENTENCE_MODEL, path: str | Path | None = None) -> np.ndarray:
    """One vector per text (``(len(texts), dim)``), as the sentence-transformers model returns it."""
    return alone(embed_batch, prepare_texts(texts, model, path))


def cosine(vectors: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarity of the rows of ``vectors``."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms == 0, 1, norms)
    return unit @ unit.T


def similarity(
    texts: list[str], model: ModelLike = SENTENCE_MODEL, path: str | Path | None = None
) -> np.ndarray:
    """Cosine similarity of every pair of texts (``(n, n)``); needs at least two texts."""
    texts = _check_texts(texts, minimum=2)
    return cosine(embed(texts, model, path))


def project(vectors: np.ndarray, method: Literal["pca", "umap"] = "pca") -> np.ndarray:
    """Project vectors to 2-D for a map: PCA (exact, any count ≥ 2) or UMAP (cosine, at least 4 points)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.shape[0] < 2:
        raise InputError("A map needs at least two points.")
    if method == "pca":
        centred = vectors - vectors.mean(axis=0)
        _, _, components = np.linalg.svd(centred, full_matrices=False)
        projected = centred @ components[:2].T
        if projected.shape[1] < 2:  # a single dimension of variation: pad so the map still draws
            projected = np.pad(projected, ((0, 0), (0, 2 - projected.shape[1])))
        return projected
    if method == "umap":
        if vectors.shape[0] < 4:
            raise InputError("UMAP needs at least four points; use PCA for fewer.")
        import umap

        reducer = umap.UMAP(
            n_components=2,
            n_neighbors=min(15, vectors.shape[0] - 1),
            metric="cosine",
            random_state=MAP_SEED,
            init="random",
        )
        return reducer.fit_transform(vectors)
    raise InputError(f"Unknown projection {method!r}: use 'pca' or 'umap'.")


def _check_lengths(texts: list[str], tokenizer: Any) -> None:
    """Refuse a text longer than :data:`MAX_TEXT_TOKENS` (by its characters first, then its tokens)."""
    count = validate.token_counter(tokenizer)
    for number, text in enumerate(texts, start=1):
        validate.check_tokens(text, count, MAX_TEXT_TOKENS, what=f"Text {number}", where="an embedding")


def _check_texts(texts: list[str], minimum: int) -> list[str]:
    if texts is None or isinstance(texts, str) or not all(isinstance(t, str | None) for t in texts):
        raise InputError("Give the texts as a list of strings.")
    cleaned = [t.strip() for t in texts if t and t.strip()]
    if len(cleaned) < minimum:
        raise InputError(
            f"Give at least {minimum} non-empty text{'s' if minimum > 1 else ''} (one per line)."
        )
    if len(cleaned) > MAX_TEXTS:
        raise InputError(f"{len(cleaned)} texts given; the lab embeds at most {MAX_TEXTS} at a time.")
    return cleaned


# -- token-level embeddings -----------------------------------------------------------------------


def _token_positions(tokenizer, sentence: str, word: str) -> tuple[list[int], list[int]]:
    """Ids of a sentence and the positions of the tokens that make up ``word`` in it (first occurrence)."""
    encoding = tokenizer(sentence, return_offsets_mapping=True, verbose=False)
    start = sentence.lower().find(word.lower())
    if start < 0:
        return encoding["input_ids"], []
    end = start + len(word)
    positions = [i for i, (s, e) in enumerate(encoding["offset_mapping"]) if e > s and s < end and e > start]
    return encoding["input_ids"], positions


@dataclass
class StaticVsContextual:
    """Cosine similarities of one word's vectors across sentences: static (input) and contextual (output)."""

    word: str
    sentences: list[str]
    static: np.ndarray  # (n, n): identical vectors, so all ones
    contextual: np.ndarray  # (n, n)
    pieces: list[list[str]]  # the tokens the word became in each sentence


def static_vs_contextual(
    word: str, sentences: list[str], model: ModelLike = SENTENCE_MODEL, path: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise cosine similarity of ``word``'s static input embedding and its contextual output embedding
    in each sentence (tokens of a split word are averaged). Returns ``(static_sim, contextual_sim)``."""
    result = compare_word(word, sentences, model, path)
    return result.static, result.contextual


@forward("embedding a word in context")
def compare_word(
    word: str, sentences: list[str], model: ModelLike = SENTENCE_MODEL, path: str | Path | None = None
) -> StaticVsContextual:
    """Like :func:`static_vs_contextual`, with the pieces the word became."""
    model = models.ref(model, path)
    import torch

    word = (word or "").strip()
    if not word:
        raise InputError("Type the word to follow across the sentences.")
    sentences = _check_texts(sentences, minimum=2)
    tokenizer = models.tokenizer(model)
    _check_lengths([word, *sentences], tokenizer)
    located = []
    for number, sentence in enumerate(sentences, 1):
        ids, positions = _token_positions(tokenizer, sentence, word)
        if not positions:
            raise InputError(f"'{word}' does not occur in sentence {number}: {sentence!r}.")
        located.append((ids, positions))
    from lab.attention import is_decoder

    lease = models.causal_lm if is_decoder(model) else models.encoder
    static, contextual = [], []
    with lease(model) as network:
        table = network.get_input_embeddings().weight  # (vocab, dim)
        for ids, positions in located:
            tensor = torch.tensor([ids], device=network.device)
            with torch.no_grad():
                out = network(input_ids=tensor, output_hidden_states=True)
            hidden = out.hidden_states[-1][0]  # (T, dim)
            static.append(table[[ids[p] for p in positions]].detach().float().mean(0).cpu().numpy())
            contextual.append(hidden[positions].float().mean(0).cpu().numpy())
    pieces = [[tokenizer.decode([ids[p]]) for p in positions] for ids, positions in located]
    return StaticVsContextual(word, sentences, cosine(np.stack(static)), cosine(np.stack(contextual)), pieces)


def _word_ids(tokenizer, text: str) -> list[int]:
    """Token ids of a word on its own. Byte-level BPE vocabularies store mid-sentence words with their
    leading space (" king"), so that form is used unless it makes more tokens."""
    plain = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    spaced = tokenizer(" " + text, add_special_tokens=False, verbose=False)["input_ids"]
    return spaced if spaced and len(spaced) <= len(plain) else plain


@forward("reading token embeddings")
def token_vectors(
    tokens: list[str], model: ModelLike = SENTENCE_MODEL, path: str | Path | None = None
) -> tuple[list[str], np.ndarray]:
    """Static input embeddings of vocabulary tokens (each given as text; a text that is several tokens
    is averaged). Returns the labels kept and ``(n, dim)``."""
    model = models.ref(model, path)
    tokenizer = models.tokenizer(model)
    wanted = _check_texts(tokens, minimum=0)
    if not wanted:
        raise InputError("Give some words or tokens, one per line.")
    _check_lengths(wanted, tokenizer)
    from lab.attention import is_decoder

    lease = models.causal_lm if is_decoder(model) else models.encoder
    rows = []
    with lease(model) as network:
        table = network.get_input_embeddings().weight
        for text in wanted:
            ids = _word_ids(tokenizer, text)
            rows.append(table[ids].float().mean(0).detach().cpu().numpy())
    return wanted, np.stack(rows)


@forward("finding neighbouring tokens")
def neighbours(
    token: str, model: ModelLike = SENTENCE_MODEL, k: int = 10, path: str | Path | None = None
) -> list[tuple[str, float]]:
    """The ``k`` vocabulary tokens whose input embeddings are closest (cosine) to ``token``'s."""
    model = models.ref(model, path)
    import torch

    tokenizer = models.tokenizer(model)
    _check_lengths([token or ""], tokenizer)
    ids = _word_ids(tokenizer, (token or "").strip()) if (token or "").strip() else []
    if not ids:
        raise InputError("Type a word or token to find its neighbours.")
    from lab.attention import is_decoder

    lease = models.causal_lm if is_decoder(model) else models.encoder
    with lease(model) as network:
        table = network.get_input_embeddings().weight.detach().float()
        query = table[ids].mean(0)
        scores = torch.nn.functional.cosine_similarity(table, query[None, :], dim=-1)
        scores[ids] = -2  # the token itself is not its own neighbour
        values, indices = scores.topk(k)
    return [(tokenizer.decode([int(i)]), float(v)) for i, v in zip(indices.cpu(), values.cpu())]


@dataclass
class TextVector:
    """The vector of one text, as the book prints it."""

    shape: tuple[int, ...]
    first: list[float]
    norm: float

    @classmethod
    def of(cls, vector: np.ndarray) -> TextVector:
        """The facts of a vector already computed (its shape, first values and length)."""
        return cls(
            tuple(vector.shape), [round(float(v), 4) for v in vector[:8]], float(np.linalg.norm(vector))
        )


def describe(text: str, model: ModelLike = SENTENCE_MODEL, path: str | Path | None = None) -> TextVector:
    """The vector of ``text`` as the book prints it: its shape, first values and length."""
    return TextVector.of(embed([text], model, path)[0])
