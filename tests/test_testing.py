"""Every writer in :mod:`lab.testing` produces a folder that the real loading code accepts.

The models have random weights, so these tests check formats, shapes and plumbing, never outputs. Models
load with ``device_name="cpu"`` (float32) so that inputs built on the CPU match on a GPU machine too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from lab import models, testing
from lab.cache import CACHE

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _clear_cache() -> Iterator[None]:
    """Each test loads its own folder; a model cached by one test must not serve another."""
    yield
    CACHE.clear()


def _image(size: int = 48):
    from PIL import Image

    return Image.new("RGB", (size, size), (200, 30, 30))


# -- tokenizers ----------------------------------------------------------------------------------


def test_wordpiece_tokenizer_loads_through_lab_models(tmp_path: Path) -> None:
    folder = testing.write_tokenizer(tmp_path / "wordpiece", kind="wordpiece")
    tokenizer = models.tokenizer("tiny/bert", path=folder)
    ids = tokenizer("Attention is all you need")["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert 100 <= len(tokenizer) <= 400
    assert tokenizer.decode(ids, skip_special_tokens=True) == "attention is all you need"


def test_bpe_tokenizer_loads_through_lab_models_with_chat_template(tmp_path: Path) -> None:
    folder = testing.write_tokenizer(tmp_path / "bpe", kind="bpe")
    tokenizer = models.tokenizer("tiny/llama", path=folder)
    text = "Hello, wörld! 🙂"  # byte-level: anything encodes, nothing becomes <unk>
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert len(tokenizer.tokenize("<|im_start|>")) == 1


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_tokenizer_writers_are_deterministic_across_processes(tmp_path: Path, kind: str) -> None:
    # Rust hash maps are seeded per process (and per map), so only a second process shows the difference.
    script = f"from lab import testing; testing.write_tokenizer({str(tmp_path / 'b')!r}, kind={kind!r})"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=ROOT, capture_output=True)
    first = testing.write_tokenizer(tmp_path / "a", kind=kind)  # type: ignore[arg-type]
    assert (first / "tokenizer.json").read_text() == (tmp_path / "b" / "tokenizer.json").read_text()


def test_unknown_tokenizer_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown tokenizer kind"):
        testing.write_tokenizer(tmp_path, kind="unigram")  # type: ignore[arg-type]


# -- encoders ------------------------------------------------------------------------------------


def test_tiny_random_bert_loads_through_lab_models(tmp_path: Path) -> None:
    folder = testing.write_bert_encoder(tmp_path / "bert")
    assert (folder / "model.safetensors").is_file()
    tokenizer = models.tokenizer("tiny/bert", path=folder)
    with models.encoder("tiny/bert", path=folder, eager=True, device_name="cpu") as model:
        inputs = tokenizer(["a cat", "the model reads tokens"], padding=True, return_tensors="pt")
        with torch.no_grad():
            out = model(**inputs, output_attentions=True)
    assert out.last_hidden_state.shape == (2, inputs["input_ids"].shape[1], 32)
    assert len(out.attentions) == 2 and out.attentions[0].shape[1] == 4


def test_tiny_random_sentence_encoder_loads_through_lab_models(tmp_path: Path) -> None:
    folder = testing.write_sentence_encoder(tmp_path / "minilm")
    assert (folder / "modules.json").is_file() and (folder / "1_Pooling" / "config.json").is_file()
    with models.sentence_encoder("tiny/minilm", path=folder, device_name="cpu") as model:
        vectors = model.encode(["a", "b"])
    assert vectors.shape == (2, 32)
    assert not (vectors[0] == vectors[1]).all()


def test_tiny_random_sentence_encoder_is_also_a_plain_encoder(tmp_path: Path) -> None:
    folder = testing.write_sentence_encoder(tmp_path / "minilm")
    with models.encoder("tiny/minilm", path=folder, device_name="cpu") as model:
        assert model.config.hidden_size == 32


# -- causal LM -----------------------------------------------------------------------------------


def test_tiny_random_llama_loads_through_lab_models(tmp_path: Path) -> None:
    folder = testing.write_llama_causal_lm(tmp_path / "llama")
    tokenizer = models.tokenizer("tiny/llama", path=folder)
    with models.causal_lm("tiny/llama", path=folder, device_name="cpu") as model:
        assert model.config.num_key_value_heads == 2 and model.config.num_attention_heads == 4
        assert model.config.vocab_size == len(tokenizer)
        inputs = tokenizer("The model predicts the next token", return_tensors="pt")
        with torch.no_grad():
            logits = model(**inputs).logits
        assert logits.shape == (1, inputs["input_ids"].shape[1], len(tokenizer))

        chat = tokenizer.apply_chat_template(
            [{"role": "user", "content": "Hi"}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        generated = model.generate(**chat, max_new_tokens=3, min_new_tokens=3)
    assert generated.shape == (1, chat["input_ids"].shape[1] + 3)


def test_tiny_random_llama_eager_attention_returns_weights(tmp_path: Path) -> None:
    folder = testing.write_llama_causal_lm(tmp_path / "llama")
    tokenizer = models.tokenizer("tiny/llama", path=folder)
    with models.causal_lm("tiny/llama", path=folder, eager=True, device_name="cpu") as model:
        inputs = tokenizer("a cat", return_tensors="pt")
        with torch.no_grad():
            out = model(**inputs, output_attentions=True)
    assert len(out.attentions) == 2
    assert out.attentions[0].shape == (1, 4, inputs["input_ids"].shape[1], inputs["input_ids"].shape[1])


def test_tiny_random_llama_weights_are_deterministic(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    first = load_file(testing.write_llama_causal_lm(tmp_path / "a") / "model.safetensors")
    state = torch.random.get_rng_state()
    second = load_file(testing.write_llama_causal_lm(tmp_path / "b") / "model.safetensors")
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's random state is untouched
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)


# -- multimodal ----------------------------------------------------------------------------------


def test_tiny_random_open_clip_loads_with_local_dir_schema(tmp_path: Path) -> None:
    import open_clip

    folder = testing.write_open_clip(tmp_path / "clip")
    config = json.loads((folder / "open_clip_config.json").read_text())
    assert set(config) == {"model_cfg", "preprocess_cfg"}

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    model.eval()
    image = preprocess(_image()).unsqueeze(0)
    assert image.shape == (1, 3, 32, 32)
    text = tokenizer(["a photo of a cat", "a photo of a dog"])
    assert text.shape == (2, 77)
    with torch.no_grad():
        image_features = model.encode_image(image)
        text_features = model.encode_text(text)
    assert image_features.shape == (1, 16) and text_features.shape == (2, 16)


def test_tiny_random_open_clip_weights_are_the_ones_written(tmp_path: Path) -> None:
    import open_clip
    from safetensors.torch import load_file

    folder = testing.write_open_clip(tmp_path / "clip")
    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    written = load_file(folder / "open_clip_model.safetensors")
    assert torch.equal(model.state_dict()["visual.conv1.weight"], written["visual.conv1.weight"])


def test_tiny_random_blip2_generates_with_its_processor(tmp_path: Path) -> None:
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    folder = testing.write_blip2(tmp_path / "blip2")
    processor = Blip2Processor.from_pretrained(folder)
    model = Blip2ForConditionalGeneration.from_pretrained(folder, use_safetensors=True).eval()
    assert processor.num_query_tokens == model.config.num_query_tokens == 4

    inputs = processor(images=_image(), text="Question: what? Answer:", return_tensors="pt")
    assert inputs["pixel_values"].shape == (1, 3, 32, 32)
    image_token = model.config.image_token_id
    assert (inputs["input_ids"][0, :4] == image_token).all()
    assert (inputs["input_ids"] == image_token).sum() == 4
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5)
    assert generated.shape[0] == 1 and generated.shape[1] >= 5
    assert isinstance(processor.batch_decode(generated, skip_special_tokens=True)[0], str)
