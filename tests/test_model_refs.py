"""A model is named once and resolved once; a folder is a model wherever the lab takes a model id.

Tiny random-weight models (``lab.testing``) written to folders, loaded through the lab's own loaders with
``model="<folder>"`` as ``from_pretrained`` takes it: the names say so.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import attention, catalog, embeddings, models, testing, vision_chat
from lab.catalog import ModelUnavailable
from tests.helpers import ROOT

CAR = ROOT / "assets" / "book" / "images" / "car.png"


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("folders")
    return {
        "llama": testing.write_llama_causal_lm(base / "llama"),
        "bert": testing.write_bert_encoder(base / "bert"),
        "sentence": testing.write_sentence_encoder(base / "sentence"),
        "clip": testing.write_open_clip(base / "clip"),
        "blip2": testing.write_blip2(base / "blip2"),
    }


def test_tiny_random_llama_folder_as_model_predicts_and_streams(folders):
    folder = str(folders["llama"])
    top = attention.next_token("the cat sat", folder, k=3)
    assert len(top) == 3 and all(0 <= p <= 1 for _, p in top)
    *_, (text, final) = attention.generate_stream("the cat sat", folder, new_tokens=3)
    assert final is not None and final.tokens == 3
    with models.causal_lm(folder) as by_id, models.causal_lm("tiny/llama", folder) as by_path:
        assert by_id.config.num_hidden_layers == by_path.config.num_hidden_layers


def test_tiny_random_encoders_folder_as_model_give_attention_and_embeddings(folders):
    result = attention.attention("the cat sat on the mat", str(folders["bert"]))
    assert result.weights.shape[:2] == (2, 4) and not result.causal
    vectors = embeddings.embed(["one text", "another text"], str(folders["sentence"]))
    assert vectors.shape[0] == 2


def test_tiny_random_clip_and_blip2_folders_as_models_load(folders):
    with models.clip_model(str(folders["clip"])) as clip_model:
        assert clip_model.inputs.preprocess_cfg["size"] == 32
    assert isinstance(vision_chat.caption(str(CAR), str(folders["blip2"]), max_new_tokens=3), str)


def test_tiny_random_llama_folder_as_model_trains(folders):
    network = models.causal_lm_for_training(str(folders["llama"]))
    assert any(p.requires_grad for p in network.parameters())


@pytest.mark.parametrize("missing", ["/no/such/folder", "./no-such-folder", "~/no-such-folder-either"])
def test_a_missing_folder_says_so_in_the_labs_words_for_every_entry_point(missing):
    for call in (
        lambda: attention.next_token("hi", missing),
        lambda: attention.attention("hi", missing),
        lambda: next(attention.generate_stream("hi", missing)),
        lambda: vision_chat.caption(str(CAR), missing),
        lambda: models.clip_inputs(missing),
    ):
        with pytest.raises(ModelUnavailable, match="cannot be used") as caught:
            call()
        assert "hf download" not in str(caught.value)  # nothing to download: it is the reader's folder


def test_a_reference_resolves_each_part_once(folders, monkeypatch):
    calls: list[tuple[str, str]] = []
    resolve = catalog.resolve

    def counting(model_id, part="model", path=None):
        calls.append((model_id, part))
        return resolve(model_id, part, path)

    monkeypatch.setattr(catalog, "resolve", counting)
    attention.next_token("the cat sat", str(folders["llama"]), k=2)
    assert sorted(calls) == sorted({*calls})  # no part resolved twice in one call
    assert len(calls) <= 2  # the tokenizer and the model, nothing else


def test_folder_like_ids_are_told_apart_from_hub_ids(tmp_path):
    assert (
        catalog.is_folder_like("/models/x")
        and catalog.is_folder_like("./x")
        and catalog.is_folder_like("~/x")
    )
    assert catalog.is_folder_like(str(tmp_path))
    assert not catalog.is_folder_like("gpt2") and not catalog.is_folder_like(
        "HuggingFaceTB/SmolLM2-135M-Instruct"
    )
