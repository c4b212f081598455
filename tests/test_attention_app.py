"""The attention tab's API names, called with gradio_client against the launched app (real offline models)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(lab_server):
    from gradio_client import Client

    return Client(lab_server, verbose=False)


def test_attention_endpoint_returns_layers_heads_and_tokens(client):
    result = client.predict("Hello world", "sentence-transformers/all-MiniLM-L6-v2", api_name="/attention")
    assert result["tokens"] == ["[CLS]", "hello", "world", "[SEP]"]
    weights = np.array(result["weights"])
    assert weights.shape == (6, 12, 4, 4) and np.allclose(weights.sum(-1), 1, atol=1e-3)


def test_next_token_endpoint_answers_paris_and_greedy_at_temperature_zero(client):
    top = client.predict("The capital of France is", api_name="/next_token")
    assert top[0][0] == " Paris" and 0.5 < top[0][1] < 1
    greedy = client.predict(
        "The capital of France is", "HuggingFaceTB/SmolLM2-135M-Instruct", 5, 0.0, 1.0, api_name="/next_token"
    )
    assert greedy[0] == [" Paris", 1.0] and all(p == 0 for _, p in greedy[1:])


def test_logit_lens_endpoint_has_30_layers(client):
    rows = client.predict("The capital of France is", api_name="/logit_lens")
    assert len(rows) == 30 and len(rows[-1]) == 5 and rows[-1][-1][0][0] == " Paris"


def test_similarity_endpoint_and_its_errors(client):
    matrix = np.array(
        client.predict(["I love bread.", "Baking is fun.", "Stocks fell."], api_name="/similarity")
    )
    assert matrix.shape == (3, 3) and matrix[0, 1] > matrix[0, 2]
    with pytest.raises(Exception, match="at least 2 non-empty texts"):
        client.predict(["alone"], api_name="/similarity")
    with pytest.raises(Exception, match="is an encoder"):
        client.predict("Hello", "sentence-transformers/all-MiniLM-L6-v2", api_name="/next_token")
    with pytest.raises(Exception, match=r"hf download gpt2"):
        client.predict("Hello", "gpt2", api_name="/next_token")  # no GPT-2 weights offline: a clear message
