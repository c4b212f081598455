"""Real packaged weights loaded through the lab's model supply: the offline path readers rely on."""

from __future__ import annotations

import pytest
import torch

from lab import config, models

pytestmark = pytest.mark.slow

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def test_smollm2_real_weights_answer_paris_from_the_converted_gguf():
    tokenizer = models.tokenizer(SMOLLM2)
    with models.causal_lm(SMOLLM2) as model:
        ids = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = model(ids).logits[0, -1]  # (vocab,)
        probs = logits.softmax(-1)
        top = int(probs.argmax())
    assert tokenizer.decode([top]) == " Paris"
    assert float(probs[top]) > 0.5
    folder = config.cache_dir() / "models" / "HuggingFaceTB--SmolLM2-135M-Instruct"
    assert (folder / "model.safetensors").is_file()  # converted once, loaded from safetensors afterwards
    assert model.config.num_hidden_layers == 30 and model.config.num_key_value_heads == 3


def test_smollm2_chat_template_and_greedy_answer():
    tokenizer = models.tokenizer(SMOLLM2)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    with models.causal_lm(SMOLLM2) as model:
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        out = model.generate(ids, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


def test_minilm_sentence_embeddings_rank_related_sentences_higher():
    with models.sentence_encoder(MINILM) as encoder:
        vectors = encoder.encode(
            ["I love eating fresh bread.", "Baking a loaf at home is fun.", "The stock market fell today."],
            normalize_embeddings=True,
        )
    assert vectors.shape == (3, 384)
    related, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert related > unrelated + 0.3


def test_minilm_encoder_with_eager_attention_returns_6_layers_of_12_heads():
    tokenizer = models.tokenizer("bert-base-uncased")  # MiniLM's vocabulary is BERT's
    with models.encoder(MINILM, eager=True) as encoder:
        inputs = tokenizer("Hello world", return_tensors="pt")
        with torch.no_grad():
            out = encoder(**inputs, output_attentions=True)
    assert len(out.attentions) == 6
    assert tuple(out.attentions[0].shape) == (1, 12, 4, 4)  # (batch, heads, T, T) for [CLS] hello world [SEP]
    assert torch.allclose(out.attentions[0].sum(-1), torch.ones(1, 12, 4), atol=1e-5)
