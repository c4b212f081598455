"""lab.attention on tiny random-weight models (shapes and invariants) and on the real offline models."""

from __future__ import annotations

import numpy as np
import pytest

from lab import attention, attention_view


def test_tiny_random_encoder_attention_rows_sum_to_one(tiny_bert):
    result = attention.attention("the cat sat on the mat", "tiny/bert", path=tiny_bert)
    layers, heads, t, t2 = result.weights.shape
    assert (layers, heads) == (2, 4) and t == t2 == len(result.tokens)
    assert np.allclose(result.weights.sum(-1), 1, atol=1e-5)
    assert not result.causal and result.special[0] and result.special[-1]  # [CLS] … [SEP]


def test_tiny_random_decoder_attention_is_causal(tiny_llama):
    result = attention.attention("the cat sat on the mat", "tiny/llama", path=tiny_llama)
    assert result.causal
    assert np.allclose(result.weights.sum(-1), 1, atol=1e-5)
    upper = np.triu(np.ones(result.weights.shape[-2:], dtype=bool), k=1)
    assert float(np.abs(result.weights[..., upper]).max()) == 0.0  # no weight on future tokens


def test_attention_refuses_text_over_the_token_cap_and_empty_text(tiny_bert):
    with pytest.raises(attention.TooManyTokens, match="at most 8"):
        attention.attention(
            "one two three four five six seven eight nine", "tiny/bert", tiny_bert, max_tokens=8
        )
    with pytest.raises(ValueError, match="Type some text"):
        attention.attention("   ", "tiny/bert", tiny_bert)


def test_reshape_temperature_and_top_p():
    logits = np.array([3.0, 2.0, 1.0, 0.0])
    greedy, mask = attention.reshape(logits, 0.0, 1.0)
    assert greedy.tolist() == [1.0, 0.0, 0.0, 0.0] and mask.tolist() == [True, False, False, False]
    top_only, mask = attention.reshape(logits, 1.0, 0.0)
    assert top_only.tolist() == [1.0, 0.0, 0.0, 0.0] and mask.tolist() == [True, False, False, False]
    plain, _ = attention.reshape(logits, 1.0, 1.0)
    assert np.allclose(plain, np.exp(logits) / np.exp(logits).sum())
    hot, _ = attention.reshape(logits, 2.0, 1.0)
    assert hot[0] < plain[0] and hot[-1] > plain[-1]  # higher temperature flattens
    nucleus, mask = attention.reshape(logits, 1.0, 0.9)
    assert mask.tolist() == [True, True, True, False] and np.isclose(nucleus.sum(), 1)
    with pytest.raises(ValueError):
        attention.reshape(logits, -1, 0.5)


def test_tiny_random_logit_lens_has_a_row_per_layer_and_its_last_row_is_the_prediction(tiny_llama):
    rows = attention.logit_lens("the cat sat", "tiny/llama", k=3, path=tiny_llama)
    tokens = attention.models.tokenizer("tiny/llama", tiny_llama)("the cat sat")["input_ids"]
    assert len(rows) == 2 and all(len(row) == len(tokens) for row in rows) and len(rows[0][0]) == 3
    predicted = attention.next_token("the cat sat", "tiny/llama", k=3, path=tiny_llama)
    assert [t for t, _ in rows[-1][-1]] == [t for t, _ in predicted]
    assert np.allclose([p for _, p in rows[-1][-1]], [p for _, p in predicted], atol=1e-4)


def test_next_token_needs_a_decoder_and_a_prompt(tiny_bert, tiny_llama):
    with pytest.raises(ValueError, match="is an encoder"):
        attention.next_token("hello", "tiny/bert", path=tiny_bert)
    with pytest.raises(ValueError, match="Type a prompt"):
        attention.next_token("", "tiny/llama", path=tiny_llama)


def test_tiny_random_structure_reports_gqa_and_parameter_counts(tiny_llama):
    s = attention.structure("tiny/llama", path=tiny_llama)
    assert (s.layers, s.heads, s.kv_heads, s.hidden_size) == (2, 4, 2, 32)
    assert "LlamaDecoderLayer" in s.tree and "2 × LlamaDecoderLayer in all" in s.tree
    assert f"[{s.parameters:,} parameters]" in s.tree.splitlines()[0]


def test_tiny_random_generation_streams_and_times_both_ways(tiny_llama):
    steps = list(attention.generate_stream("the cat", "tiny/llama", new_tokens=5, path=tiny_llama))
    texts = [text for text, final in steps if final is None]
    assert all(a == b[: len(a)] for a, b in zip(texts, texts[1:]))  # the text only grows
    assert steps[-1][1].tokens == 5
    timing = attention.kv_cache_timing("the cat", "tiny/llama", new_tokens=5, path=tiny_llama)
    assert timing["with_cache_s"] > 0 and timing["without_cache_s"] > 0
    assert timing["ratio"] == pytest.approx(timing["without_cache_s"] / timing["with_cache_s"])


def test_tiny_random_views_render(tiny_llama):
    result = attention.attention("the cat sat on the mat", "tiny/llama", path=tiny_llama)
    page = attention_view.head_view_page(result, 1)
    assert '"heads": 4' in page and "causal mask" in page and "head_view" not in page[:20]
    grid = attention_view.model_view(result)
    cell = attention_view._cell(result)
    assert grid.size == (28 + 4 * (cell + 4), 28 + 2 * (cell + 4))
    assert attention_view.cell_at(result, 28 + cell + 4 + 1, 28 + 1) == (0, 1)
    assert attention_view.cell_at(result, 5, 5) is None
    with pytest.raises(ValueError, match="layers 0 to 1"):
        attention_view.head_view_page(result, 2)


@pytest.mark.slow
def test_smollm2_predicts_paris_and_its_logit_lens_ends_there():
    assert attention.next_token("The capital of France is")[0][0] == " Paris"
    rows = attention.logit_lens("The capital of France is")
    assert len(rows) == 30 and rows[-1][-1][0][0] == " Paris"


@pytest.mark.slow
def test_smollm2_attention_is_30_layers_of_9_causal_heads():
    result = attention.attention("The capital of France is", attention.DECODER)
    assert result.weights.shape == (30, 9, 5, 5) and result.causal
    assert np.triu(result.weights[0, 0], 1).max() == 0


@pytest.mark.slow
def test_minilm_attention_is_6_layers_of_12_heads():
    result = attention.attention("Hello world", attention.ENCODER)
    assert result.weights.shape == (6, 12, 4, 4)
    assert result.tokens == ["[CLS]", "hello", "world", "[SEP]"]
