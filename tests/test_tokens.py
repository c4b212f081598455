"""The tokenizer comparison against the book's published token lists, on real vocabularies."""

from __future__ import annotations

import pytest

from lab import tokens

TEXT = tokens.sample_text()

# Chapter 2's outputs for the sample text (each id decoded on its own), for the tokenizers that load here.
# fmt: off
BOOK_BERT_UNCASED = [
    "[CLS]", "english", "and", "capital", "##ization", "[UNK]", "[UNK]", "show", "_", "token", "##s",
    "false", "none", "eli", "##f", "=", "=", ">", "=", "else", ":", "two", "tab", "##s", ":", '"',
    '"', "three", "tab", "##s", ":", '"', '"', "12", ".", "0", "*", "50", "=", "600", "[SEP]",
]
BOOK_GPT2 = [
    "\n", "English", " and", " CAP", "ITAL", "IZ", "ATION", "\n", "�", "�", "�", " �", "�", "�",
    "\n", "show", "_", "t", "ok", "ens", " False", " None", " el", "if", " ==", " >=", " else", ":",
    " two", " tabs", ':"', " ", " ", " ", ' "', " Three", " tabs", ":", ' "', " ", " ", " ", " ",
    " ", " ", ' "', "\n", "12", ".", "0", "*", "50", "=", "600", "\n",
]
BOOK_GPT4 = [
    "\n", "English", " and", " CAPITAL", "IZATION", "\n", "�", "�", "�", " �", "�", "�", "\n", "show",
    "_tokens", " False", " None", " elif", " ==", " >=", " else", ":", " two", " tabs", ':"', "   ",
    ' "', " Three", " tabs", ":", ' "', "      ", ' "\n', "12", ".", "0", "*", "50", "=", "600",
    "\n",
]
BOOK_PHI3 = [
    "<s>", "", "\n", "English", "and", "C", "AP", "IT", "AL", "IZ", "ATION", "\n", "�", "�", "�",
    "�", "", "�", "�", "�", "\n", "show", "_", "to", "kens", "False", "None", "elif", "==", ">=",
    "else", ":", "two", "tabs", ':"', "  ", '"', "Three", "tabs", ":", '"', "     ", '"', "\n", "1",
    "2", ".", "0", "*", "5", "0", "=", "6", "0", "0", "\n",
]
# fmt: on


def by_name(name: str, text: str = TEXT) -> tokens.Tokenization:
    (result,) = tokens.compare(text, [name])
    assert result.error is None, result.error
    return result


def test_sample_text_is_the_books_byte_for_byte():
    assert (
        TEXT
        == '\nEnglish and CAPITALIZATION\n🎵 鸟\nshow_tokens False None elif == >= else: two tabs:"    " '
        'Three tabs: "       "\n12.0*50=600\n'
    )


def test_bert_uncased_matches_the_book_lowercases_drops_newlines_and_wraps_in_cls_sep():
    result = by_name("bert-base-uncased")
    assert result.tokens == BOOK_BERT_UNCASED
    assert result.vocab_size == 30_522
    assert result.method == "WordPiece"
    assert result.unknown == 2  # the emoji and 鸟
    assert result.added_special == ["[CLS]", "[SEP]"]


def test_gpt2_matches_the_book_and_byte_tokens_decode_back_together():
    result = by_name("gpt2")
    assert result.tokens == BOOK_GPT2
    assert result.vocab_size == 50_257
    assert result.method == "Byte-level BPE"
    byte_pieces = [p for p in result.pieces if p is not None]
    assert [p.part_of for p in byte_pieces] == ["🎵", "🎵", "🎵", "鸟", "鸟", "鸟"]
    assert byte_pieces[0].hex == "F0 9F"


def test_gpt4_cl100k_has_one_token_for_space_runs_and_elif():
    result = by_name("Xenova/gpt-4")
    assert result.tokens == BOOK_GPT4
    assert result.vocab_size == 100_277
    assert "   " in result.tokens and " elif" in result.tokens


def test_phi3_is_llama2_sentencepiece_with_byte_fallback_and_chat_tokens():
    result = by_name("microsoft/Phi-3-mini-4k-instruct")
    assert result.tokens == BOOK_PHI3
    assert result.vocab_size == 32_064
    assert result.method == "SentencePiece BPE + byte fallback"
    assert {"<s>", "<|endoftext|>"} <= set(result.special_tokens)
    assert [p.hex for p in result.pieces if p][:4] == ["F0", "9F", "8E", "B5"]


def test_starcoder2_splits_every_digit_and_has_code_special_tokens():
    result = by_name("bigcode/starcoder2-15b")
    assert result.tokens[-12:] == ["1", "2", ".", "0", "*", "5", "0", "=", "6", "0", "0", "\n"]
    assert result.vocab_size == 49_152
    assert {"<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<repo_name>", "<file_sep>"} <= set(
        result.special_tokens
    )


@pytest.mark.parametrize(
    ("name", "vocab", "first"),
    [
        ("Xenova/gpt-4o", 200_019, None),
        ("meta-llama/Meta-Llama-3-8B", 128_256, "<|begin_of_text|>"),
        ("Qwen/Qwen2-7B-Instruct", 151_646, None),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", 49_152, None),
        ("meta-llama/Llama-2-7b-hf", 32_000, "<s>"),
        ("EleutherAI/gpt-neox-20b", 50_277, None),
    ],
)
def test_modern_tokenizers_load_offline_with_their_vocabulary_size(name, vocab, first):
    result = by_name(name)
    assert result.vocab_size == vocab
    assert (result.tokens[0] == first) if first else (result.tokens[0] == "\n")
    assert "".join(t for t, added in zip(result.tokens, result.added) if not added).count("English") == 1


def test_llama3_numbers_group_in_threes_and_qwen2_digits_one_by_one():
    llama3 = by_name("meta-llama/Meta-Llama-3-8B", "1234567")
    qwen2 = by_name("Qwen/Qwen2-7B-Instruct", "1234567")
    assert llama3.tokens[1:] == ["123", "456", "7"]
    assert qwen2.tokens == list("1234567")


def test_unavailable_tokenizer_gets_its_column_with_reason_and_command_others_work():
    results = tokens.compare("Hello world", ["bert-base-cased", "gpt2", "no-such-org/no-such-model"])
    cased, gpt2, missing = results
    assert cased.error and "bert-base-cased" in cased.error and "hf download bert-base-cased" in cased.error
    assert "HF_HUB_OFFLINE" in cased.error
    assert gpt2.error is None and gpt2.tokens == ["Hello", " world"]
    assert missing.error and "no-such-org/no-such-model" in missing.error


def test_empty_text_gives_empty_columns_without_error():
    results = tokens.compare("", ["gpt2", "Xenova/gpt-4", "bert-base-uncased"])
    assert [r.tokens for r in results] == [[], [], ["[CLS]", "[SEP]"]]
    assert all(r.error is None for r in results)


def test_text_over_the_cap_is_refused_with_a_message_never_cut():
    with pytest.raises(tokens.TextTooLong, match="20,001 characters.*at most 20,000"):
        tokens.compare("a" * 20_001, ["gpt2"])
    (result,) = tokens.compare("a" * 20_000, ["gpt2"])
    assert "".join(result.tokens) == "a" * 20_000


@pytest.mark.parametrize(
    "text",
    [
        "tab\tbell\x07null\x00end",  # control characters
        "zero\u200bwidth\u200djoin\ufeff",  # zero-width characters
        "שלום עולם مرحبا بالعالم",  # right-to-left scripts
        "emoji 👩‍👩‍👧 flags 🇫🇷 skin 👍🏽",
    ],
)
def test_unusual_text_round_trips_through_every_offline_tokenizer(text):
    for result in tokens.compare(text, tokens.available()):
        if result.name in ("bert-base-uncased",):
            continue  # WordPiece lower-cases and maps unknown characters to [UNK]: not reversible
        body = [t for t, added in zip(result.tokens, result.added) if not added]
        joined = b"".join(
            (result.pieces[i] and bytes.fromhex(result.pieces[i].hex)) or t.encode("utf-8")
            for i, t in enumerate(result.tokens)
            if not result.added[i]
        )
        assert body, result.name
        assert joined.replace(b" ", b"") == text.encode("utf-8").replace(b" ", b""), result.name


def test_lone_surrogates_are_replaced_visibly_with_a_note():
    clean, notes = tokens.prepare_text("a\ud800b", 100)
    assert clean == "a\ufffdb"
    assert notes and "lone surrogate" in notes[0]
    (result,) = tokens.compare("a\ud800b", ["gpt2"])
    assert result.error is None and result.tokens


def test_spans_point_back_into_the_text():
    result = by_name("Xenova/gpt-4", "Hello world, 鸟!")
    assert [("Hello world, 鸟!"[s:e]) for s, e in result.spans][:3] == ["Hello", " world", ","]
    bert = by_name("bert-base-uncased", "Hello world")
    assert bert.spans[0] == (0, 0) and bert.added[0]
    assert "Hello world"[slice(*bert.spans[1])] == "Hello"


def test_boundaries_mark_where_two_tokenizers_cut_differently():
    gpt2 = by_name("gpt2", "CAPITALIZATION")
    gpt4 = by_name("Xenova/gpt-4", "CAPITALIZATION")
    cuts = tokens.boundaries(gpt2, gpt4)
    assert gpt2.tokens == ["CAP", "ITAL", "IZ", "ATION"] and gpt4.tokens == ["CAP", "ITAL", "IZATION"]
    assert cuts.both == [0, 3, 7]
    assert cuts.only_a == [9]  # GPT-2 cuts IZ|ATION, GPT-4 keeps IZATION whole
    assert cuts.only_b == []


def test_chat_template_renders_phi3_and_smollm2_with_special_tokens_marked():
    phi3 = tokens.render_chat("microsoft/Phi-3-mini-4k-instruct")
    assert phi3.text.startswith("<s><|user|>\nWhat is a token?<|end|>\n<|assistant|>\n")
    marked = {t for t, s in zip(phi3.tokens, phi3.special) if s}
    assert {"<s>", "<|user|>", "<|assistant|>", "<|end|>"} <= marked
    smol = tokens.render_chat("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert smol.text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert {"<|im_start|>", "<|im_end|>"} <= {t for t, s in zip(smol.tokens, smol.special) if s}
    with pytest.raises(ValueError, match="no chat template"):
        tokens.render_chat("gpt2")


def test_available_lists_what_loads_offline_and_not_the_rest():
    here = tokens.available()
    assert {
        "bert-base-uncased",
        "gpt2",
        "Xenova/gpt-4",
        "Xenova/gpt-4o",
        "bigcode/starcoder2-15b",
        "microsoft/Phi-3-mini-4k-instruct",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
    } <= set(here)
    assert not {"bert-base-cased", "google/flan-t5-small", "facebook/galactica-1.3b"} & set(here)
    assert here == [n for n in tokens.PRESET if n in here]  # the book's order is kept


def test_many_users_tokenizing_at_once_share_the_cached_tokenizers_safely():
    import threading

    text = TEXT * 10
    expected = [r.tokens for r in tokens.compare(text, ["gpt2", "bert-base-uncased"])]
    results, errors = [], []

    def user() -> None:
        try:
            for _ in range(10):
                results.append([r.tokens for r in tokens.compare(text, ["gpt2", "bert-base-uncased"])])
        except Exception as error:  # collected: an exception in a thread would otherwise be lost
            errors.append(error)

    threads = [threading.Thread(target=user) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(results) == 60 and all(r == expected for r in results)
