"""The vocabularies converted from llama.cpp's GGUF files against independent reference encoders."""

from __future__ import annotations

from pathlib import Path

import pytest
import quicktok

from lab import models, sources
from lab.gguf import PRE_TOKENIZER_PATTERNS

# Mixed text: prose, code, numbers of every length, contractions, whitespace runs, CJK, emoji, RTL.
MIXED = (
    Path(__file__).read_text(encoding="utf-8")
    + "\nIt's we'll THEY'RE 3.14159 x=1000000 12345678901 日本語のテキスト 中文 한국어  \t\t  \n\n\n"
    + "emoji 🎵🎶👩‍👩‍👧 مرحبا שלום Ünïcödé naïve café <|endoftext|> <s> [CLS]"
)


@pytest.mark.parametrize(
    ("name", "reference"),
    [("meta-llama/Meta-Llama-3-8B", "llama3"), ("Qwen/Qwen2-7B-Instruct", "qwen3")],
)
def test_converted_vocabulary_matches_the_reference_encoder_token_for_token(name, reference):
    tokenizer = models.tokenizer(name)
    ours = tokenizer(MIXED, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    theirs = quicktok.get_encoding(reference).encode_ordinary(MIXED)
    assert ours == theirs


@pytest.mark.parametrize(
    ("name", "encoding"), [("Xenova/gpt-4", "cl100k_base"), ("Xenova/gpt-4o", "o200k_base")]
)
def test_tiktoken_encodings_match_quicktok(name, encoding):
    ours = models.tokenizer(name).encode_ordinary(MIXED)
    assert ours == quicktok.get_encoding(encoding).encode_ordinary(MIXED)


def test_o200k_file_is_openais_by_sha256():
    import hashlib

    assert hashlib.sha256(sources.o200k_file().read_bytes()).hexdigest() == sources.O200K_SHA256


def test_every_shipped_vocabulary_has_a_provenance_row_with_its_archive_hash():
    import hashlib

    provenance = (sources.TOKENIZER_ASSETS / "PROVENANCE.md").read_text()
    archives = sorted(sources.TOKENIZER_ASSETS.glob("*.tar.xz"))
    assert len(archives) == 7
    for archive in archives:
        assert f"`{archive.name}`" in provenance
        assert hashlib.sha256(archive.read_bytes()).hexdigest() in provenance


def test_pre_tokenizer_table_covers_the_shipped_byte_level_vocabularies():
    assert {"gpt-2", "starcoder", "smollm", "llama-bpe", "qwen2", "default"} <= set(PRE_TOKENIZER_PATTERNS)
