"""Load models and tokenizers: the only module that calls ``from_pretrained``.

Every loader resolves its source through :mod:`lab.catalog`, places the model with :mod:`lab.device`
and goes through :data:`lab.cache.CACHE`, so a model is loaded once per process and shared by every tab
and every user. ``trust_remote_code`` is never enabled, and weights load from safetensors only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from lab import catalog, device, sources
from lab.cache import CACHE, Loaded, module_nbytes
from lab.catalog import ModelUnavailable, Source
from lab.errors import LabError


def _unavailable_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "not here" rather than "broken": missing files, no network, gated repos."""
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    return (OSError, ValueError, HfHubHTTPError, LocalEntryNotFoundError)


@contextmanager
def _unavailable_on_failure(model_id: str, part: catalog.Part) -> Iterator[None]:
    """Turn the Hub's and transformers' "cannot find it" errors into :class:`ModelUnavailable`."""
    try:
        yield
    except ModelUnavailable:
        raise
    except _unavailable_errors() as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "trust_remote_code" in str(error):
            reason = "it needs custom code from its repository (trust_remote_code), which the lab never runs"
        raise catalog.unavailable(model_id, part, reason[:300]) from error


def _key(model_id: str, part: str, path: str | Path | None, variant: str = "") -> str:
    where = f"@{path}" if path else ""
    return f"{model_id}#{part}{variant}{where}"


def _location(source: Source) -> str:
    return sources.materialise(source.location) if source.origin == "packaged" else source.location


def source_of(model_id: str, part: catalog.Part = "model", path: str | Path | None = None) -> Source:
    """Where ``model_id`` would load from (raises :class:`ModelUnavailable` if nowhere)."""
    return catalog.resolve(model_id, part, path)


def locate(model_id: str, part: catalog.Part = "model", path: str | Path | None = None) -> str:
    """What ``from_pretrained`` is given for ``model_id``: a folder, a Hub id, or ``tiktoken:<encoding>``."""
    return _location(catalog.resolve(model_id, part, path))


# -- tokenizers ----------------------------------------------------------------------------------


def tokenizer(model_id: str, path: str | Path | None = None) -> Any:
    """The tokenizer of ``model_id``: a transformers fast tokenizer, or a ``tiktoken.Encoding``."""
    source = catalog.resolve(model_id, "tokenizer", path)

    def load() -> Loaded:
        with _unavailable_on_failure(model_id, "tokenizer"):
            loaded = load_tokenizer_uncached(_location(source))
        size = loaded.n_vocab if hasattr(loaded, "n_vocab") else len(loaded)
        return Loaded(loaded, nbytes=size * 64)  # rough: a vocabulary entry and its merges

    return CACHE.get(_key(model_id, "tokenizer", path), load)


def load_tokenizer_uncached(location: str) -> Any:
    """Build a tokenizer from a folder, Hub id or ``tiktoken:<encoding>``, bypassing the cache.

    This is what the book does on every call (``AutoTokenizer.from_pretrained``); the lab only calls it
    on a cache miss, and ``lab.bench`` calls it to measure what the cache saves.
    """
    if location.startswith("tiktoken:"):
        return sources.tiktoken_encoding(location.removeprefix("tiktoken:"))
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(location, trust_remote_code=False, use_fast=True)


# -- models --------------------------------------------------------------------------------------


Build = Callable[[str, device.Placement], Any]


@contextmanager
def _lease_model(
    model_id: str,
    part: str,
    path: str | Path | None,
    device_name: str | None,
    build: Build,
    variant: str = "",
) -> Iterator[Any]:
    """Resolve, load once through the cache on the lab's device, and hold the model for a ``with`` block."""
    placement = device.select(device_name)
    source = catalog.resolve(model_id, "model", path)

    def load() -> Loaded:
        with _unavailable_on_failure(model_id, "model"):
            model = build(_location(source), placement)
        model.eval()
        dtype = str(placement.dtype).removeprefix("torch.")
        return Loaded(model, module_nbytes(model), placement.device, dtype)

    key = _key(model_id, part, path, f"{variant}@{placement.device}")
    expected = int(catalog.entry(model_id).memory_mb * 1e6)
    with CACHE.lease(key, load, expected_bytes=expected, device=placement.device) as model:
        yield model


def _transformers_build(auto_class: str, eager: bool) -> Build:
    """A builder for ``transformers.<auto_class>.from_pretrained``: safetensors only, no remote code."""

    def build(location: str, where: device.Placement) -> Any:
        import transformers

        kwargs = {"attn_implementation": "eager"} if eager else {}
        model_class = getattr(transformers, auto_class)
        return model_class.from_pretrained(
            location, dtype=where.dtype, use_safetensors=True, trust_remote_code=False, **kwargs
        ).to(where.device)

    return build


def causal_lm(
    model_id: str, path: str | Path | None = None, *, eager: bool = False, device_name: str | None = None
) -> AbstractContextManager[Any]:
    """Lease a causal language model (``AutoModelForCausalLM``) on the lab's device.

    Args:
        eager: load with eager attention, which returns attention weights (SDPA returns none); kept
            in the cache as a separate entry.
        device_name: override the lab's device choice (``"cpu"``, ``"cuda"``).
    """
    build = _transformers_build("AutoModelForCausalLM", eager)
    return _lease_model(model_id, "causal-lm", path, device_name, build, ":eager" if eager else "")


def encoder(
    model_id: str, path: str | Path | None = None, *, eager: bool = False, device_name: str | None = None
) -> AbstractContextManager[Any]:
    """Lease a transformer encoder (``AutoModel``), e.g. BERT or MiniLM's encoder."""
    build = _transformers_build("AutoModel", eager)
    return _lease_model(model_id, "encoder", path, device_name, build, ":eager" if eager else "")


def sentence_encoder(
    model_id: str, path: str | Path | None = None, *, device_name: str | None = None
) -> AbstractContextManager[Any]:
    """Lease a sentence-transformers model (one vector per text)."""

    def build(location: str, where: device.Placement) -> Any:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(location, device=where.device, trust_remote_code=False)
        return model.to(where.dtype) if where.device.startswith("cuda") else model

    return _lease_model(model_id, "sentence-encoder", path, device_name, build)


def seq2seq_lm(
    model_id: str, path: str | Path | None = None, *, device_name: str | None = None
) -> AbstractContextManager[Any]:
    """Lease an encoder-decoder language model (``AutoModelForSeq2SeqLM``), e.g. Flan-T5."""
    build = _transformers_build("AutoModelForSeq2SeqLM", False)
    return _lease_model(model_id, "seq2seq-lm", path, device_name, build)


# -- CLIP (open_clip, chapter 9) -----------------------------------------------------------------


class ClipInputs:
    """What a CLIP's inputs go through, read from configs alone (no weights): tokenizer and image transform.

    ``tokenizer(texts)`` gives ``(n, context_length)`` ids; ``preprocess(image)`` gives the ``(3, H, W)``
    tensor the vision tower reads; ``preprocess_cfg`` holds its size, mean, std, interpolation and
    resize mode.
    """

    def __init__(self, tokenizer: Any, preprocess: Any, preprocess_cfg: dict[str, Any]) -> None:
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.preprocess_cfg = preprocess_cfg


class OpenClip:
    """An open_clip CLIP (``net``) with its :class:`ClipInputs`, held as one cache entry.

    ``identity`` names these exact weights (a file's path, size and time, or an open_clip tag), so that
    embeddings computed with them can be kept on disk. ``eval``, ``parameters`` and ``buffers`` pass
    through to the network, so the cache can size it.
    """

    def __init__(self, net: Any, inputs: ClipInputs, identity: str, where: device.Placement) -> None:
        self.net = net
        self.inputs = inputs
        self.identity = identity
        self.device = where.device
        self.dtype = where.dtype

    def eval(self) -> OpenClip:
        self.net.eval()
        return self

    def parameters(self) -> Iterator[Any]:
        return self.net.parameters()

    def buffers(self) -> Iterator[Any]:
        return self.net.buffers()


class _ClipRecipe:
    """How to build one CLIP with open_clip: a model name (``ViT-B-32``, ``local-dir:…``, ``hf-hub:…``),
    what to pass as ``pretrained``, or a transformers checkpoint to convert; and its inputs' configs."""

    def __init__(
        self,
        name: str,
        identity: str,
        preprocess_cfg: dict[str, Any],
        tokenizer: str,
        *,
        pretrained: str | None = None,
        quick_gelu: bool = False,
        transformers: tuple[dict[str, Any], Path] | None = None,
        context_length: int = 77,
    ) -> None:
        self.name = name
        self.identity = identity
        self.preprocess_cfg = preprocess_cfg
        self.tokenizer = tokenizer  # an open_clip model name, or "" for CLIP's own BPE (transformers folders)
        self.pretrained = pretrained  # a tag or a weights file, for a built-in architecture
        self.quick_gelu = quick_gelu  # OpenAI's weights were trained with QuickGELU
        self.transformers = transformers  # (model_cfg, model.safetensors) of a transformers CLIP to convert
        self.context_length = context_length


def _file_identity(file: Path) -> str:
    stat = file.stat()
    return f"{file.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def _preprocess_cfg(model_cfg: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """open_clip's defaults, overlaid with a tag's or folder's settings, at the vision tower's input size."""
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    merged = merge_preprocess_dict(PreprocessCfg(), overlay)
    merged["size"] = model_cfg["vision_cfg"]["image_size"]
    return merged


def _clip_folder_recipe(model_id: str, folder: Path) -> _ClipRecipe:
    """A folder in open_clip's Hub format, open_clip weights of a catalog tag, or a transformers CLIP."""
    import json

    safetensors = sorted(folder.glob("*.safetensors"))
    config_file = folder / "open_clip_config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text())
        if "model_cfg" not in config:
            raise ValueError(f"{config_file} has no model_cfg")
        if not safetensors:  # open_clip would fall back to torch.load on a .bin; the lab never does
            raise FileNotFoundError(f"{folder} holds no .safetensors weights (the lab loads no others)")
        pcfg = _preprocess_cfg(config["model_cfg"], config.get("preprocess_cfg", {}))
        name = f"local-dir:{folder}"
        return _ClipRecipe(name, _file_identity(min(safetensors, key=_open_clip_first)), pcfg, name)
    weights = [f for f in safetensors if f.name.startswith("open_clip")]
    if model_id in catalog.OPEN_CLIP and weights:  # open_clip weights of a catalog tag, without its config
        return _tag_recipe(model_id, weights[0])
    hf_config = folder / "config.json"
    if hf_config.is_file() and json.loads(hf_config.read_text()).get("model_type") == "clip":
        if not (folder / "model.safetensors").is_file():
            raise FileNotFoundError(f"{folder} holds a transformers CLIP config but no model.safetensors")
        model_cfg = _open_clip_cfg_from_transformers(folder)
        pcfg = _preprocess_cfg(model_cfg, {})
        weights_file = folder / "model.safetensors"
        return _ClipRecipe(
            str(folder),
            _file_identity(weights_file),
            pcfg,
            "",
            transformers=(model_cfg, weights_file),
            context_length=model_cfg["text_cfg"]["context_length"],
        )
    raise FileNotFoundError(
        f"{folder} holds no CLIP the lab can read: it needs open_clip_config.json and .safetensors weights "
        "(open_clip's Hub format), or a transformers CLIP (config.json with model.safetensors)"
    )


def _open_clip_first(file: Path) -> tuple[bool, str]:
    return (not file.name.startswith("open_clip"), file.name)  # the file open_clip's local-dir: loads


def _tag_recipe(model_id: str, weights: Path | None = None) -> _ClipRecipe:
    """A catalog CLIP by its open_clip tag, from a weights file here or as open_clip downloads it."""
    import open_clip

    arch, tag = catalog.OPEN_CLIP[model_id]
    tag_cfg = open_clip.get_pretrained_cfg(arch, tag)
    pcfg = _preprocess_cfg(open_clip.get_model_config(arch), tag_cfg)
    identity = _file_identity(weights) if weights else f"open_clip:{arch}:{tag}"
    pretrained = str(weights) if weights else tag
    return _ClipRecipe(
        arch, identity, pcfg, arch, pretrained=pretrained, quick_gelu=tag_cfg.get("quick_gelu", False)
    )


def _clip_recipe(model_id: str, location: str) -> _ClipRecipe:
    """Decide how to build ``model_id`` from a folder, the Hugging Face cache, or open_clip's downloads."""
    if Path(location).is_dir():
        return _clip_folder_recipe(model_id, Path(location))
    snapshot = _hub_snapshot(location)
    if snapshot is not None:  # e.g. the book's openai/clip-vit-base-patch32, as its notebooks cached it
        try:
            return _clip_folder_recipe(model_id, snapshot)
        except FileNotFoundError:
            pass  # only part of it is cached: let open_clip fetch what it needs
    if model_id in catalog.OPEN_CLIP:
        return _tag_recipe(model_id)
    import json

    from huggingface_hub import hf_hub_download

    config = json.loads(Path(hf_hub_download(location, "open_clip_config.json")).read_text())
    pcfg = _preprocess_cfg(config["model_cfg"], config.get("preprocess_cfg", {}))
    return _ClipRecipe(f"hf-hub:{location}", f"hf-hub:{location}", pcfg, f"hf-hub:{location}")


def _hub_snapshot(model_id: str) -> Path | None:
    """The Hugging Face cache's folder of ``model_id``, if it holds one (never downloads)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model_id, local_files_only=True))
    except Exception:  # not cached, or not a repo id at all: either way there is no folder
        return None


def _open_clip_cfg_from_transformers(folder: Path) -> dict[str, Any]:
    """open_clip's ``model_cfg`` for a transformers ``CLIPModel`` folder (full values, defaults filled in)."""
    from transformers import CLIPConfig

    config = CLIPConfig.from_pretrained(folder)
    text, vision = config.text_config, config.vision_config
    return {
        "embed_dim": config.projection_dim,
        "quick_gelu": text.hidden_act == "quick_gelu",
        "vision_cfg": {
            "image_size": vision.image_size,
            "patch_size": vision.patch_size,
            "width": vision.hidden_size,
            "layers": vision.num_hidden_layers,
            "head_width": vision.hidden_size // vision.num_attention_heads,
            "mlp_ratio": vision.intermediate_size / vision.hidden_size,
        },
        "text_cfg": {
            "context_length": text.max_position_embeddings,
            "vocab_size": text.vocab_size,
            "width": text.hidden_size,
            "heads": text.num_attention_heads,
            "layers": text.num_hidden_layers,
            "mlp_ratio": text.intermediate_size / text.hidden_size,
        },
    }


def _open_clip_state_from_transformers(hf: dict[str, Any], model_cfg: dict[str, Any]) -> dict[str, Any]:
    """Rename a transformers ``CLIPModel`` state dict into open_clip's ``CLIP`` (same weights, same maths).

    transformers keeps separate q/k/v projections where open_clip's ``nn.MultiheadAttention`` holds one
    ``in_proj``; projections are ``Linear`` weights there and plain matrices (transposed) here.
    """
    import torch

    out = {
        "logit_scale": hf["logit_scale"],
        "token_embedding.weight": hf["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": hf["text_model.embeddings.position_embedding.weight"],
        "text_projection": hf["text_projection.weight"].T.contiguous(),
        "visual.class_embedding": hf["vision_model.embeddings.class_embedding"],
        "visual.positional_embedding": hf["vision_model.embeddings.position_embedding.weight"],
        "visual.conv1.weight": hf["vision_model.embeddings.patch_embedding.weight"],
        "visual.proj": hf["visual_projection.weight"].T.contiguous(),
    }
    norms = {
        "ln_final": "text_model.final_layer_norm",
        "visual.ln_pre": "vision_model.pre_layrnorm",
        "visual.ln_post": "vision_model.post_layernorm",
    }
    blocks = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj"}
    blocks |= {"mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    towers = [("", "text_model", model_cfg["text_cfg"]), ("visual.", "vision_model", model_cfg["vision_cfg"])]
    for ours, theirs, tower in towers:
        for i in range(tower["layers"]):
            norms |= {
                f"{ours}transformer.resblocks.{i}.{a}": f"{theirs}.encoder.layers.{i}.{b}"
                for a, b in blocks.items()
            }
            for p in ("weight", "bias"):
                qkv = [hf[f"{theirs}.encoder.layers.{i}.self_attn.{n}_proj.{p}"] for n in "qkv"]
                out[f"{ours}transformer.resblocks.{i}.attn.in_proj_{p}"] = torch.cat(qkv)
    for ours, theirs in norms.items():
        for p in ("weight", "bias"):
            out[f"{ours}.{p}"] = hf[f"{theirs}.{p}"]
    return out


def _clip_inputs_of(recipe: _ClipRecipe) -> ClipInputs:
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    if recipe.tokenizer:
        tokenizer = open_clip.get_tokenizer(recipe.tokenizer)
    else:  # transformers' CLIP tokenizer is the same BPE as open_clip's built-in one
        tokenizer = open_clip.SimpleTokenizer(context_length=recipe.context_length)
    preprocess = image_transform_v2(PreprocessCfg(**recipe.preprocess_cfg), is_train=False)
    return ClipInputs(tokenizer, preprocess, dict(recipe.preprocess_cfg))


def _clip_net(recipe: _ClipRecipe) -> Any:
    import open_clip

    if recipe.transformers is not None:
        from safetensors.torch import load_file

        model_cfg, weights = recipe.transformers
        net = open_clip.CLIP(**model_cfg)
        net.load_state_dict(_open_clip_state_from_transformers(load_file(str(weights)), model_cfg))
        return net
    # require_pretrained: a tag or hub id that yields no weights is an error, not a random model.
    return open_clip.create_model(
        recipe.name,
        pretrained=recipe.pretrained,
        force_quick_gelu=recipe.quick_gelu,
        require_pretrained=True,
    )


def clip_model(
    model_id: str, path: str | Path | None = None, *, device_name: str | None = None
) -> AbstractContextManager[OpenClip]:
    """Lease a CLIP (open_clip) with its tokenizer and image transform, as an :class:`OpenClip`.

    A folder (``path``, ``LAB_MODEL_DIR`` or the Hugging Face cache) may be in open_clip's Hub format
    (``open_clip_config.json`` + safetensors) or transformers' CLIP format (``config.json`` +
    ``model.safetensors``, e.g. the book's ``openai/clip-vit-base-patch32``, converted on load). Without a
    folder, open_clip downloads the catalog entry's pretrained tag (:data:`lab.catalog.OPEN_CLIP`), or
    ``hf-hub:<model_id>`` for other ids.
    """

    def build(location: str, where: device.Placement) -> OpenClip:
        try:
            recipe = _clip_recipe(model_id, location)
            net = _clip_net(recipe)
        except RuntimeError as error:  # open_clip's "weights do not fit this config" and "no download"
            raise ValueError(str(error).strip().splitlines()[0]) from error
        # Shared by every user for inference only: no gradients, whatever the checkpoint says.
        net = net.requires_grad_(False).to(device=where.device, dtype=where.dtype)
        return OpenClip(net, _clip_inputs_of(recipe), recipe.identity, where)

    return _lease_model(model_id, "clip", path, device_name, build)


def clip_inputs(model_id: str, path: str | Path | None = None) -> ClipInputs:
    """A CLIP's tokenizer and image transform without its weights, through the cache.

    Catalog CLIPs need no download for this (open_clip describes their architectures and tags), so the
    lab can show CLIP's tokens and the image as the model sees it even where the weights are missing.
    """

    def load() -> Loaded:
        try:
            location = locate(model_id, "model", path)
        except ModelUnavailable:
            if path is not None or model_id not in catalog.OPEN_CLIP:
                raise
            location = model_id
        with _unavailable_on_failure(model_id, "tokenizer"):
            inputs = _clip_inputs_of(_clip_recipe(model_id, location))
        return Loaded(inputs, nbytes=49_408 * 64)  # rough: CLIP's BPE vocabulary and merges

    return CACHE.get(_key(model_id, "clip-inputs", path), load)


# -- vision chat: BLIP-2 (chapter 9) -------------------------------------------------------------

VISION_CHAT_DEFAULT = "Salesforce/blip2-opt-2.7b"
# "auto": 16-bit on a GPU, 8-bit or 4-bit when the GPU's free memory is short, float32 on a CPU.
QUANTIZATIONS = ("auto", "none", "8-bit", "4-bit")


class MissingDependency(LabError, ValueError):
    """An optional package is needed for what was asked; the message says what to install."""


class VisionChatPlan:
    """How a BLIP-2 model will be loaded (device, precision) and what the reader should know first."""

    def __init__(self, placement: device.Placement, quantization: str | None, notes: tuple[str, ...] = ()):
        self.placement = placement
        self.quantization = quantization  # None, "8-bit" or "4-bit"
        self.notes = notes

    @property
    def precision(self) -> str:
        """``8-bit``, ``4-bit``, or the dtype of the weights (``float32``, ``bfloat16``, ``float16``)."""
        return self.quantization or str(self.placement.dtype).removeprefix("torch.")


class VisionChatModel:
    """A ``Blip2ForConditionalGeneration`` and its ``Blip2Processor``, held as one cache entry.

    ``eval``, ``parameters`` and ``buffers`` pass through to the model, so the cache can size it.
    ``dtype`` is what the image's pixel values must be cast to before the forward pass.
    """

    def __init__(
        self, model: Any, processor: Any, model_id: str, where: str, dtype: Any, plan: VisionChatPlan
    ) -> None:
        self.model = model
        self.processor = processor
        self.model_id = model_id
        self.device = where
        self.dtype = dtype
        self.precision = plan.precision
        self.notes = plan.notes

    def eval(self) -> VisionChatModel:
        self.model.eval()
        return self

    def parameters(self) -> Iterator[Any]:
        return self.model.parameters()

    def buffers(self) -> Iterator[Any]:
        return self.model.buffers()

    @property
    def query_tokens(self) -> int:
        """How many Q-Former outputs stand in for the image in the language model's input (32 for BLIP-2)."""
        return int(self.model.config.num_query_tokens)

    @property
    def decoder_only(self) -> bool:
        """True for OPT (the output repeats the prompt), False for Flan-T5 (encoder-decoder)."""
        return bool(self.model.config.use_decoder_only_language_model)

    @property
    def context(self) -> int:
        """Tokens the language model reads at most: OPT's positions (2,048), else the tokenizer's limit."""
        limit = getattr(self.model.config.text_config, "max_position_embeddings", None)
        if not limit:  # T5 has relative positions; its tokenizer states the length it was trained on
            limit = getattr(self.processor.tokenizer, "model_max_length", 512)
            limit = limit if limit < 100_000 else 512
        return int(limit)


def _bitsandbytes_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


def _safetensors_parameters(folder: Path) -> int:
    """Parameters stored in a folder's safetensors files, read from their headers (no weights loaded)."""
    import math

    from safetensors import safe_open

    total = 0
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as weights:
            names = weights.keys()  # a safe_open handle is not iterable itself
            total += sum(math.prod(weights.get_slice(name).get_shape()) for name in names)
    return total


def _bytes_16bit(model_id: str, path: str | Path | None) -> int:
    """Bytes of the weights in 16-bit: counted in a local folder, else the catalog's figure."""
    try:
        source = catalog.resolve(model_id, "model", path)
    except ModelUnavailable:
        source = None
    if source is not None and source.origin in ("path", "model-dir"):
        count = _safetensors_parameters(Path(source.location))
        if count:
            return count * 2
    return int(catalog.entry(model_id).memory_mb * 1e6)


def _free_cuda_bytes(device_name: str) -> int:
    """Free GPU memory, counting what the cache would evict to make room (unleased entries)."""
    import torch

    free, _ = torch.cuda.mem_get_info(torch.device(device_name))
    kind = device_name.split(":")[0]
    return free + sum(s.nbytes for s in CACHE.stats() if s.device.split(":")[0] == kind and s.leases == 0)


def _not_on_gpu_notes(title: str, bytes_16bit: int, placement: device.Placement) -> tuple[str, ...]:
    fp32 = 2 * bytes_16bit
    if fp32 < 1e9:  # small models need no warning
        return ()
    where = "the CPU" if placement.kind == "cpu" else placement.device
    note = f"{title} runs on {where} in float32 here: it needs about {fp32 / 1e9:.1f} GB of memory"
    if placement.kind != "cpu":
        return (note + ".",)
    # Generating on a CPU is bound by memory bandwidth: each new token reads every weight once, and
    # laptops and desktops read roughly 10-40 GB/s.
    slow, fast = 10e9 / fp32, 40e9 / fp32
    return (
        f"{note}, and it generates roughly {slow:.1f}–{fast:.1f} tokens per second (a 20-token caption "
        f"takes {20 / fast:.0f}–{20 / slow:.0f} s). A CUDA GPU runs it in 16-bit, in half the memory and "
        "tens of times faster.",
    )


def vision_chat_plan(
    model_id: str = VISION_CHAT_DEFAULT,
    path: str | Path | None = None,
    *,
    quantization: str = "auto",
    device_name: str | None = None,
    free_bytes: int | None = None,
) -> VisionChatPlan:
    """Decide how :func:`vision_chat_model` will load a BLIP-2 model, without loading it.

    Args:
        quantization: ``auto`` (16-bit on a GPU; 8-bit, then 4-bit, when its free memory is short;
            float32 on a CPU), ``none`` (never quantise), ``8-bit`` or ``4-bit`` (bitsandbytes, CUDA only).
        free_bytes: the GPU's free memory, measured when not given (for tests).

    Raises:
        MissingDependency: 8-bit or 4-bit was asked for and bitsandbytes is not installed.
        ValueError: an unknown option, or 8-bit/4-bit without a CUDA GPU.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, not {quantization!r}")
    placement = device.select(device_name)
    if quantization in ("8-bit", "4-bit"):
        if not _bitsandbytes_installed():
            raise MissingDependency(
                f"{quantization} loading needs the bitsandbytes package, which is not installed: "
                "run `pip install bitsandbytes` (it needs a CUDA GPU), or choose auto."
            )
        if placement.kind != "cuda":
            raise ValueError(
                f"{quantization} loading (bitsandbytes) needs a CUDA GPU; the lab runs on "
                f"{placement.device}. Choose auto."
            )
        return VisionChatPlan(placement, quantization)
    title = catalog.entry(model_id).title
    size = _bytes_16bit(model_id, path)
    if placement.kind != "cuda":
        return VisionChatPlan(placement, None, _not_on_gpu_notes(title, size, placement))
    if quantization == "none" or not size:
        return VisionChatPlan(placement, None)
    free = _free_cuda_bytes(placement.device) if free_bytes is None else free_bytes
    need = size * 1.2  # the weights, plus room for activations and the KV cache
    if need <= free:
        return VisionChatPlan(placement, None)
    # 8-bit weights take half the memory of 16-bit ones, 4-bit a quarter; 4-bit is the last resort.
    bits = "8-bit" if need / 2 <= free else "4-bit"
    short = (
        f"{title} needs about {need / 1e9:.1f} GB of GPU memory in 16-bit and {free / 1e9:.1f} GB are free"
    )
    if not _bitsandbytes_installed():
        return VisionChatPlan(
            placement,
            None,
            (
                f"{short}; {bits} would fit, but bitsandbytes is not installed (pip install bitsandbytes). "
                "Loading in 16-bit anyway.",
            ),
        )
    return VisionChatPlan(placement, bits, (f"{short}: loading it in {bits} with bitsandbytes.",))


def vision_chat_model(
    model_id: str = VISION_CHAT_DEFAULT,
    path: str | Path | None = None,
    *,
    quantization: str = "auto",
    device_name: str | None = None,
) -> AbstractContextManager[VisionChatModel]:
    """Lease a BLIP-2 model and its processor (:class:`VisionChatModel`), e.g. ``Salesforce/blip2-opt-2.7b``.

    ``Salesforce/blip2-flan-t5-xl`` and local folders (``path=``) load through the same code. The precision
    follows :func:`vision_chat_plan`; each precision is its own cache entry.

    Raises:
        ModelUnavailable: the weights are not here (the message says how to get them), or the folder
            does not hold a BLIP-2 model.
        MissingDependency: 8-bit or 4-bit without bitsandbytes.
    """
    plan = vision_chat_plan(model_id, path, quantization=quantization, device_name=device_name)

    def build(location: str, where: device.Placement) -> VisionChatModel:
        import torch
        import transformers

        config = transformers.AutoConfig.from_pretrained(location, trust_remote_code=False)
        if config.model_type != "blip-2":
            raise ValueError(f"it holds a {config.model_type} model, not BLIP-2")
        kwargs: dict[str, Any] = {"use_safetensors": True, "trust_remote_code": False}
        blip2 = transformers.Blip2ForConditionalGeneration
        if plan.quantization is None:
            dtype = where.dtype
            model = blip2.from_pretrained(location, dtype=dtype, **kwargs).to(where.device)
        else:
            dtype = torch.float16  # bitsandbytes computes in 16-bit
            quantize = (
                transformers.BitsAndBytesConfig(load_in_8bit=True)
                if plan.quantization == "8-bit"
                else transformers.BitsAndBytesConfig(
                    load_in_4bit=True,
                    bnb_4bit_quant_type="nf4",
                    bnb_4bit_compute_dtype=dtype,
                    bnb_4bit_use_double_quant=True,
                )
            )
            model = blip2.from_pretrained(
                location, dtype=dtype, quantization_config=quantize, device_map={"": where.device}, **kwargs
            )
        processor = transformers.Blip2Processor.from_pretrained(location, trust_remote_code=False)
        return VisionChatModel(model, processor, model_id, where.device, dtype, plan)

    variant = f":{plan.quantization}" if plan.quantization else ""
    return _lease_model(model_id, "vision-chat", path, device_name, build, variant)


# -- fine-tuning (chapter 12) --------------------------------------------------------------------


def model_config(model_id: str, path: str | Path | None = None) -> Any:
    """A model's transformers config (its ``config.json`` only, no weights), through the cache."""
    source = catalog.resolve(model_id, "model", path)

    def load() -> Loaded:
        from transformers import AutoConfig

        with _unavailable_on_failure(model_id, "model"):
            return Loaded(AutoConfig.from_pretrained(_location(source), trust_remote_code=False), nbytes=8192)

    return CACHE.get(_key(model_id, "config", path), load)


def causal_lm_for_training(
    model_id: str,
    path: str | Path | None = None,
    *,
    quantize_4bit: bool = False,
    dtype: Any = None,
    device_name: str | None = None,
) -> Any:
    """A fresh causal LM that the caller owns and changes (fine-tuning): not cached, never shared.

    Args:
        quantize_4bit: the book's QLoRA loading, ``BitsAndBytesConfig(load_in_4bit=True,
            bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True)``, computing in the device's dtype.
        dtype: the weights' dtype (default: the lab's dtype for the device).
    """
    import transformers

    placement = device.select(device_name)
    source = catalog.resolve(model_id, "model", path)
    kwargs: dict[str, Any] = {"use_safetensors": True, "trust_remote_code": False}
    with _unavailable_on_failure(model_id, "model"):
        location = _location(source)
        if not quantize_4bit:
            return transformers.AutoModelForCausalLM.from_pretrained(
                location, dtype=dtype or placement.dtype, **kwargs
            ).to(placement.device)
        compute = dtype or placement.dtype
        quantize = transformers.BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=compute,
            bnb_4bit_use_double_quant=True,
        )
        return transformers.AutoModelForCausalLM.from_pretrained(
            location, dtype=compute, quantization_config=quantize, device_map={"": placement.device}, **kwargs
        )


def causal_lm_merged(
    model_id: str,
    adapter_dir: str | Path,
    path: str | Path | None = None,
    *,
    dtype: Any = None,
    device_name: str | None = None,
) -> Any:
    """A fresh base model with a LoRA adapter merged into its weights (peft ``merge_and_unload``).

    The book reloads the base in 16-bit for this; ``dtype`` defaults to float16.
    """
    import torch
    from peft import PeftModel

    base = causal_lm_for_training(model_id, path, dtype=dtype or torch.float16, device_name=device_name)
    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()


def causal_lm_with_adapter(
    model_id: str, adapter_dir: str | Path, path: str | Path | None = None, *, device_name: str | None = None
) -> AbstractContextManager[Any]:
    """Lease a causal LM with a LoRA adapter merged in, in the lab's dtype; one cache entry per adapter."""

    def build(location: str, where: device.Placement) -> Any:
        del location  # causal_lm_merged resolves the same source itself
        return causal_lm_merged(model_id, adapter_dir, path, dtype=where.dtype, device_name=where.device)

    variant = f":adapter={Path(adapter_dir).resolve()}"
    return _lease_model(model_id, "causal-lm", path, device_name, build, variant)


def preload(model_ids: list[str]) -> dict[str, str]:
    """Load models at start (``LAB_PRELOAD``): each id's tokenizer and, where it has one, its model.

    Returns ``{id: what was loaded, or why not}`` and never raises: a bad id must not stop the app.
    """
    leasers = {
        "sentence-encoder": sentence_encoder,
        "encoder": encoder,
        "causal-lm": causal_lm,
        "clip": clip_model,
        "vision-chat": vision_chat_model,
    }
    results = {}
    for model_id in model_ids:
        loaded, problems = [], []
        try:
            tokenizer(model_id)
            loaded.append("tokenizer")
        except ModelUnavailable as error:
            problems.append(str(error))
        lease = leasers.get(catalog.entry(model_id).kind)
        if lease is not None:
            try:
                with lease(model_id):
                    loaded.append("model")
            except ModelUnavailable as error:
                problems.append(str(error))
        results[model_id] = ("loaded " + " and ".join(loaded)) if loaded else "; ".join(problems)
    return results
