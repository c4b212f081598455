"""The catalog: every entry is complete, and ``resolve`` finds sources in its documented order.

Each test points the Hugging Face cache at an empty folder of its own, so what this machine happens to
have downloaded cannot change a result. huggingface_hub reads ``HF_HUB_CACHE`` from the environment once,
at import, into ``huggingface_hub.constants.HF_HUB_CACHE``; ``try_to_load_from_cache`` reads that
constant at call time, so the tests set the constant (setting the variable alone would do nothing now).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import huggingface_hub.constants
import pytest

from lab import catalog, models, sources, testing
from lab.catalog import CATALOG, ModelUnavailable, fetch_command, resolve


@pytest.fixture(autouse=True)
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty Hugging Face cache, and no LAB_MODEL_DIR, for every test."""
    folder = tmp_path / "hf-hub-cache"
    folder.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(folder))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(folder))
    monkeypatch.delenv("LAB_MODEL_DIR", raising=False)
    yield folder


def _cache_in_hub_layout(hub_cache: Path, model_id: str, filename: str) -> Path:
    """Write one file the way ``hf download`` leaves it: refs/main names a snapshot folder."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hub_cache / f"models--{model_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)  # no newline, as huggingface_hub writes it
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / filename).write_text("{}")
    return snapshot


# -- the catalog itself ----------------------------------------------------------------------------


@pytest.mark.parametrize("model_id", sorted(CATALOG))
def test_every_catalog_entry_is_complete_and_its_offline_sources_are_installed(model_id: str) -> None:
    e = CATALOG[model_id]
    assert e.id == model_id
    assert e.title and e.licence
    assert 1 <= e.chapter <= 12
    assert e.download_mb > 0 and e.memory_mb > 0
    for key in filter(None, [e.offline, e.offline_tokenizer]):
        assert sources.installed(key), f"{model_id}: offline source {key} is not installed"
        assert sources.describe(key).startswith("packaged:")
    if e.offline_tokenizer or e.offline:
        assert resolve(model_id, "tokenizer").origin == "packaged"
    if e.offline:
        assert resolve(model_id, "model").origin == "packaged"


def test_unknown_ids_get_an_entry_of_unknown_size() -> None:
    e = catalog.entry("someone/unheard-of")
    assert (e.id, e.download_mb, catalog.is_known(e.id)) == ("someone/unheard-of", 0, False)
    with pytest.raises(ModelUnavailable) as caught:
        resolve("someone/unheard-of")
    assert caught.value.model_id == "someone/unheard-of"
    assert "Download (of unknown size)" in str(caught.value)
    assert "hf download someone/unheard-of --local-dir" in str(caught.value)


# -- resolution order --------------------------------------------------------------------------------


def test_a_path_folder_wins_over_every_other_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model_dir = tmp_path / "models"
    testing.write_tokenizer(model_dir / "bert-base-uncased")
    monkeypatch.setenv("LAB_MODEL_DIR", str(model_dir))
    mine = testing.write_tokenizer(tmp_path / "mine")

    source = resolve("bert-base-uncased", "tokenizer", path=mine)

    assert (source.origin, source.location) == ("path", str(mine))


def test_a_missing_path_folder_is_named_in_the_error(tmp_path: Path) -> None:
    missing = tmp_path / "not-there"
    with pytest.raises(ModelUnavailable, match="does not exist") as caught:
        resolve("gpt2", "tokenizer", path=missing)
    assert str(missing) in str(caught.value)


def test_a_tiny_random_tokenizer_in_lab_model_dir_wins_over_the_packaged_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_cache: None
) -> None:
    testing.write_tokenizer(tmp_path / "bert-base-uncased")
    monkeypatch.setenv("LAB_MODEL_DIR", str(tmp_path))

    source = resolve("bert-base-uncased", "tokenizer")
    assert (source.origin, source.location) == ("model-dir", str(tmp_path / "bert-base-uncased"))
    tokenizer = models.tokenizer("bert-base-uncased")
    assert len(tokenizer) <= 400  # the tiny one, not BERT's 30,522 pieces
    assert "hf download bert-base-uncased" in fetch_command("bert-base-uncased")
    assert f"--local-dir {tmp_path}/bert-base-uncased" in fetch_command("bert-base-uncased")


def test_bert_base_uncased_tokenizer_is_packaged_but_its_weights_are_not(fresh_cache: None) -> None:
    source = resolve("bert-base-uncased", "tokenizer")
    assert source.origin == "packaged"
    assert len(models.tokenizer("bert-base-uncased")) == 30_522  # MiniLM ships BERT's uncased vocabulary

    with pytest.raises(ModelUnavailable) as caught:
        resolve("bert-base-uncased", "model")
    message = str(caught.value)
    assert caught.value.model_id == "bert-base-uncased"
    assert "BERT base (uncased) (bert-base-uncased) weights are not available here" in message
    assert "HF_HUB_OFFLINE=1" in message
    assert "Download (440 MB)" in message
    assert "hf download bert-base-uncased --local-dir ~/lab-models/bert-base-uncased" in message


def test_a_file_in_the_hugging_face_cache_is_found(hub_cache: Path) -> None:
    _cache_in_hub_layout(hub_cache, "org/name", "tokenizer_config.json")

    assert resolve("org/name", "tokenizer").origin == "hub-cache"
    with pytest.raises(ModelUnavailable):  # the cache holds the tokenizer only, not config.json
        resolve("org/name", "model")


def test_gated_models_explain_the_licence_and_login() -> None:
    with pytest.raises(ModelUnavailable) as caught:
        resolve("meta-llama/Meta-Llama-3-8B", "model")
    message = str(caught.value)
    assert "Download (16.1 GB)" in message
    assert "accept its licence" in message and "`hf auth login`" in message


def test_tokenizer_downloads_are_limited_to_tokenizer_files() -> None:
    command = fetch_command("bert-base-cased", "tokenizer")
    assert command.startswith("hf download bert-base-cased --include '*.json'")
    assert command.endswith("--local-dir ~/lab-models/bert-base-cased")
    with pytest.raises(ModelUnavailable, match="tokenizer is not available here.*a few MB"):
        resolve("bert-base-cased", "tokenizer")


def test_an_uncached_id_goes_to_the_hub_when_online(monkeypatch: pytest.MonkeyPatch) -> None:
    """resolve only decides; nothing is downloaded until a loader asks. "Online" is the Hub probe's answer,
    given here without a network (this machine has none)."""
    from lab import hub

    monkeypatch.delenv("HF_HUB_OFFLINE")
    hub.forget()
    monkeypatch.setattr(hub, "_ask", lambda: (True, "HTTP 200"))
    monkeypatch.setattr(hub, "cached_snapshot", lambda model_id: None)

    source = resolve("bert-base-cased")

    assert (source.origin, source.location) == ("hub", "bert-base-cased")
    hub.forget()


def test_a_missing_tokenizer_raises_model_unavailable_not_os_error(fresh_cache: None) -> None:
    with pytest.raises(ModelUnavailable, match="bert-base-cased"):
        models.tokenizer("bert-base-cased")


def test_a_tokenizer_that_needs_remote_code_is_refused_with_a_reason(tmp_path, fresh_cache):
    import json

    from lab import models

    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {"tokenizer_class": "WeirdTokenizer", "auto_map": {"AutoTokenizer": ["tok.WeirdTokenizer", None]}}
        )
    )
    (folder / "config.json").write_text(json.dumps({"model_type": "weird", "auto_map": {}}))
    (folder / "tok.py").write_text("raise SystemExit('remote code must never run')\n")
    with pytest.raises(catalog.ModelUnavailable) as caught:
        models.tokenizer("someone/weird", path=folder)
    assert "someone/weird" in str(caught.value)
    assert "custom code" in str(caught.value) or "trust_remote_code" in str(caught.value)


def test_preload_loads_what_exists_and_reports_the_rest(fresh_cache):
    from lab import cache, models

    outcome = models.preload(["gpt2", "bert-base-cased"])
    assert outcome["gpt2"] == "loaded tokenizer"  # GPT-2's weights are not packaged, its vocabulary is
    assert "hf download bert-base-cased" in outcome["bert-base-cased"]
    assert cache.loaded() == ["gpt2#tokenizer"]
