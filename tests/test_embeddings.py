"""lab.embeddings on a tiny random sentence encoder (plumbing) and on real MiniLM and SmolLM2 (meaning)."""

from __future__ import annotations

import numpy as np
import pytest

from lab import embeddings

BANK = [
    "We sat on the bank of the river.",
    "The river bank was muddy after the rain.",
    "I deposited my salary at the bank.",
    "The bank raised its interest rates.",
]


def test_tiny_random_similarity_is_a_symmetric_cosine_matrix(tiny_sentence):
    matrix = embeddings.similarity(["a cat", "a dog", "the sun"], "tiny/st", tiny_sentence)
    assert matrix.shape == (3, 3)
    assert np.allclose(np.diag(matrix), 1, atol=1e-5) and np.allclose(matrix, matrix.T, atol=1e-6)


def test_similarity_needs_two_texts_and_caps_the_count(tiny_sentence):
    with pytest.raises(ValueError, match="at least 2 non-empty texts"):
        embeddings.similarity(["only one", "  "], "tiny/st", tiny_sentence)
    with pytest.raises(ValueError, match="at most 200"):
        embeddings.similarity(["x"] * 201, "tiny/st", tiny_sentence)


def test_projections():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(10, 16))
    assert embeddings.project(vectors, "pca").shape == (10, 2)
    assert embeddings.project(vectors, "umap").shape == (10, 2)
    with pytest.raises(ValueError, match="UMAP needs at least four"):
        embeddings.project(vectors[:3], "umap")
    with pytest.raises(ValueError, match="at least two points"):
        embeddings.project(vectors[:1], "pca")
    with pytest.raises(ValueError, match="Unknown projection"):
        embeddings.project(vectors, "tsne")
    # PCA keeps the main direction: points on a line stay in order along the first axis
    line = np.outer(np.arange(5), np.ones(8))
    first = embeddings.project(line, "pca")[:, 0]
    assert np.all(np.diff(first) > 0) or np.all(np.diff(first) < 0)


def test_a_word_missing_from_a_sentence_is_named():
    with pytest.raises(ValueError, match="'bank' does not occur in sentence 2"):
        embeddings.compare_word("bank", ["The bank is open.", "The shop is closed."])


@pytest.mark.slow
def test_minilm_static_bank_is_identical_contextual_bank_differs_by_sense():
    static, contextual = embeddings.static_vs_contextual("bank", BANK)
    assert np.allclose(static, 1, atol=1e-5)  # one static vector, whatever the sentence
    off = ~np.eye(4, dtype=bool)
    assert contextual[off].max() < static[off].min()  # the contextual vectors are not identical
    assert contextual[0, 1] > contextual[0, 2] and contextual[2, 3] > contextual[1, 3]  # river vs money


@pytest.mark.slow
def test_minilm_similarity_pairs_the_related_sentences():
    matrix = embeddings.similarity(
        [
            "I love eating fresh bread.",
            "Baking a loaf at home is fun.",
            "The stock market fell today.",
            "Shares dropped sharply this morning.",
        ]
    )
    assert matrix[0, 1] > matrix[0, 2] + 0.3 and matrix[2, 3] > matrix[1, 3] + 0.3
    vector = embeddings.describe("Best movie ever!")
    assert vector.shape == (384,) and vector.norm == pytest.approx(1.0, abs=1e-4)


@pytest.mark.slow
def test_nearest_neighbours_of_king_in_real_input_embeddings():
    minilm = [t for t, _ in embeddings.neighbours("king")]
    assert "queen" in minilm[:5]
    smol = [
        t.strip().lower() for t, _ in embeddings.neighbours("king", "HuggingFaceTB/SmolLM2-135M-Instruct")
    ]
    assert "queen" in smol[:6]
