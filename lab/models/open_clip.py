"""CLIP through open_clip (chapter 9): from open_clip folders, catalog tags, or transformers folders."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from lab import catalog, device
from lab.cache import CACHE, Loaded
from lab.catalog import ModelUnavailable
from lab.models.clip_convert import _open_clip_cfg_from_transformers, _open_clip_state_from_transformers
from lab.models.lease import Held, ModelLike, _unavailable_on_failure, lease_model, ref


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


class OpenClip(Held):
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

    @property
    def module(self) -> Any:
        return self.net


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


def open_clip_arguments(model: ModelLike, path: str | Path | None = None) -> dict[str, Any] | None:
    """How open_clip itself builds the CLIP the lab loads for ``model``: the arguments of
    ``open_clip.create_model_and_transforms`` (``model_name`` first; ``open_clip.get_tokenizer`` takes the
    same name), or None for a transformers checkpoint, which the lab converts as it loads it. Reads configs
    only, no weights (for the book-style code of :mod:`lab.snippets`).

    Raises:
        ModelUnavailable: the weights are not here.
    """
    model = ref(model, path)
    recipe = _clip_recipe(model.id, model.location("model"))
    if recipe.transformers is not None:
        return None
    arguments: dict[str, Any] = {"model_name": recipe.name}
    if recipe.pretrained:
        arguments["pretrained"] = recipe.pretrained
    if recipe.quick_gelu:
        arguments["force_quick_gelu"] = True
    if recipe.pretrained and Path(recipe.pretrained).is_file():
        # A weights file carries no preprocessing: open_clip would fall back to its defaults, not the tag's.
        config = recipe.preprocess_cfg
        arguments.update(
            image_mean=tuple(config["mean"]),
            image_std=tuple(config["std"]),
            image_interpolation=config["interpolation"],
            image_resize_mode=config["resize_mode"],
        )
    return arguments


def clip_model(
    model: ModelLike, path: str | Path | None = None, *, device_name: str | None = None
) -> AbstractContextManager[OpenClip]:
    """Lease a CLIP (open_clip) with its tokenizer and image transform, as an :class:`OpenClip`.

    A folder (``path``, ``LAB_MODEL_DIR`` or the Hugging Face cache) may be in open_clip's Hub format
    (``open_clip_config.json`` + safetensors) or transformers' CLIP format (``config.json`` +
    ``model.safetensors``, e.g. the book's ``openai/clip-vit-base-patch32``, converted on load). Without a
    folder, open_clip downloads the catalog entry's pretrained tag (:data:`lab.catalog.OPEN_CLIP`), or
    ``hf-hub:<model_id>`` for other ids.
    """
    model = ref(model, path)

    def build(location: str, where: device.Placement) -> OpenClip:
        try:
            recipe = _clip_recipe(model.id, location)
            net = _clip_net(recipe)
        except RuntimeError as error:  # open_clip's "weights do not fit this config" and "no download"
            raise ValueError(str(error).strip().splitlines()[0]) from error
        # Shared by every user for inference only: no gradients, whatever the checkpoint says.
        net = net.requires_grad_(False).to(device=where.device, dtype=where.dtype)
        return OpenClip(net, _clip_inputs_of(recipe), recipe.identity, where)

    return lease_model(model, "clip", build, device_name=device_name)


def clip_inputs(model: ModelLike, path: str | Path | None = None) -> ClipInputs:
    """A CLIP's tokenizer and image transform without its weights, through the cache.

    Catalog CLIPs need no download for this (open_clip describes their architectures and tags), so the
    lab can show CLIP's tokens and the image as the model sees it even where the weights are missing.
    """

    model = ref(model, path)

    def load() -> Loaded:
        try:
            location = model.location("model")
        except ModelUnavailable:
            if model.path is not None or model.id not in catalog.OPEN_CLIP:
                raise
            location = model.id
        with _unavailable_on_failure(model.id, "tokenizer"):
            inputs = _clip_inputs_of(_clip_recipe(model.id, location))
        return Loaded(inputs, nbytes=49_408 * 64)  # rough: CLIP's BPE vocabulary and merges

    return CACHE.get(model.key("clip-inputs"), load)
