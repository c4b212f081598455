"""A CLIP by name: load it through the lab's model cache, describe it, and run its two towers.

:func:`_forward_images` and :func:`_forward_texts` are the only code of :mod:`lab.clip` that touches the
model (the *forward* step, under :func:`lab.forward.forward`). :func:`clip_tokens` and
:func:`preprocessed_image` show what the towers read; they need no weights for catalog models.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from lab import catalog, models
from lab.batching import isolated
from lab.clip.prepare import ImageSource, check_query, prepare_image
from lab.errors import InputError
from lab.forward import forward

if TYPE_CHECKING:
    import torch

DEFAULT_MODEL = catalog.CLIP_LAION
BOOK_MODEL = catalog.CLIP_OPENAI
SMALL_MODEL = catalog.MOBILECLIP2
MODELS = (DEFAULT_MODEL, BOOK_MODEL, SMALL_MODEL)


def parse_name(name_or_path: str | Path) -> tuple[str, str | None]:
    """``(model id, folder or None)`` for a catalog or Hub id, ``hf-hub:<id>``, ``local-dir:<folder>``
    or a folder path."""
    text = str(name_or_path).strip()
    if not text:
        raise InputError("Choose a CLIP model, or give the folder of one.")
    if text.startswith("hf-hub:"):
        return text.removeprefix("hf-hub:"), None
    folder = text.removeprefix("local-dir:") if text.startswith("local-dir:") else None
    if folder is None and (text.startswith(("/", "~", ".")) or Path(text).expanduser().is_dir()):
        folder = text
    if folder is None:
        return text, None
    resolved = str(Path(folder).expanduser())
    return resolved, resolved


def chosen_model(choice: str | None, folder: str | None = None, *, classroom: bool = False) -> str:
    """The model a form asks for: the folder if one is typed, else the choice, else :data:`DEFAULT_MODEL`.

    Raises:
        InputError: on a classroom server (``classroom``), a folder or a model outside :data:`MODELS`.
    """
    folder = (folder or "").strip()
    if classroom and folder:
        raise InputError("This classroom server only loads the lab's catalog models, not local folders.")
    name = folder or choice or DEFAULT_MODEL
    if classroom and name not in MODELS:
        raise InputError(f"This classroom server only loads the lab's catalog models; {name} is not one.")
    return name


@dataclass(frozen=True)
class ClipModel:
    """A loaded CLIP, by name: each use leases it from the lab's model cache (so it may be evicted between
    uses and loads again when needed)."""

    name: str  # catalog or Hub id, or the folder it was loaded from
    path: str | None
    title: str
    source: str  # where the weights came from, for people
    embed_dim: int
    image_size: int
    context_length: int
    logit_scale: float  # CLIP's learned temperature: logits = logit_scale × cosine
    key: str  # names these weights on this device and dtype: the folder of their embeddings on disk
    device: str
    dtype: str
    device_name: str | None = None

    def lease(self) -> AbstractContextManager[models.OpenClip]:
        """Hold the model (with its tokenizer and image transform) for a ``with`` block."""
        return models.clip_model(self.name, self.path, device_name=self.device_name)

    @property
    def batch_size(self) -> int:
        return 64 if self.device.startswith("cuda") else 16

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Unit-length embeddings of RGB images, ``(len(images), embed_dim)`` float32, in batches."""
        import torch

        out = []
        with self.lease() as clip:
            for start in range(0, len(images), self.batch_size):
                batch = images[start : start + self.batch_size]
                pixels = torch.stack([clip.inputs.preprocess(image) for image in batch])  # (B, 3, H, W)
                out.append(_forward_images(clip, pixels))
        return np.concatenate(out) if out else np.zeros((0, self.embed_dim), np.float32)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length embeddings of texts, ``(len(texts), embed_dim)`` float32."""
        with self.lease() as clip:
            return _forward_texts(clip, clip.inputs.tokenizer(list(texts)))  # ids: (n, context_length)


def load(name_or_path: str | Path = DEFAULT_MODEL, *, device_name: str | None = None) -> ClipModel:
    """Load a CLIP through the lab's cache (once per process) and describe it.

    Args:
        name_or_path: a catalog id (:data:`MODELS`), any Hub id of an open_clip model (``hf-hub:`` optional),
            or a folder in open_clip's Hub format or transformers' CLIP format.
        device_name: override the lab's device choice.

    Raises:
        ModelUnavailable: the weights are not here; the message says how to get them.
    """
    name, path = parse_name(name_or_path)
    with models.clip_model(name, path, device_name=device_name) as clip:
        probe = _forward_texts(clip, clip.inputs.tokenizer([""]))  # (1, embed_dim)
        size = clip.inputs.preprocess_cfg["size"]
        fingerprint = f"{clip.identity}|{clip.device}|{clip.dtype}"
        return ClipModel(
            name=name,
            path=path,
            title=catalog.entry(name).title if catalog.is_known(name) else f"folder {name}" if path else name,
            source=models.source_of(name, "model", path).detail,
            embed_dim=int(probe.shape[1]),
            image_size=int(size if isinstance(size, int) else size[0]),
            context_length=int(clip.inputs.tokenizer.context_length),
            # CLIP clamps its temperature at 100 during training; a checkpoint may hold a larger value.
            logit_scale=float(min(clip.net.logit_scale.exp().item(), 100.0)),
            key=hashlib.sha256(fingerprint.encode()).hexdigest()[:20],
            device=clip.device,
            dtype=str(clip.dtype).removeprefix("torch."),
            device_name=device_name,
        )


@forward("embedding images", duration=60)
def _forward_images(clip: models.OpenClip, pixels: torch.Tensor) -> np.ndarray:
    """The vision tower: ``(B, 3, H, W)`` pixels → ``(B, embed_dim)`` unit vectors."""
    import torch

    features = clip.net.encode_image(pixels.to(clip.device, clip.dtype))  # (B, D)
    return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()


@forward("embedding texts", duration=30)
def _forward_texts(clip: models.OpenClip, ids: torch.Tensor) -> np.ndarray:
    """The text tower: ``(n, context_length)`` token ids → ``(n, embed_dim)`` unit vectors."""
    import torch

    features = _encode_text(clip.net, ids.to(clip.device))  # (n, D)
    return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()


def _encode_text(net: Any, ids: torch.Tensor) -> torch.Tensor:
    """The text tower on only the positions the texts use, where that changes nothing; ``(n, D)``.

    CLIP's tokenizer pads every text to 77 tokens, yet "a cat" is 4: the tower would spend 19 times the
    work on padding. In OpenAI-style CLIPs the tower is causal (a position never sees the ones after it)
    and reads its vector at the end token, so cutting the columns after the batch's last end token gives
    the same vectors (about 1e-6), for one query or a batch. Other towers (SigLIP, custom text models)
    run as they are.

    An adapter over open_clip's ``CLIP.encode_text`` (open_clip 3.3): the same steps, with the positional
    embedding and the causal mask cut to the positions kept.
    """
    import open_clip
    import torch

    if type(net) is not open_clip.CLIP or net.attn_mask is None or net.text_pool_type != "argmax":
        return net.encode_text(ids)
    last = (ids != 0).long().cumsum(1).argmax(1)  # (n,): each row's last token before the 0 padding
    used = int(last.max()) + 1
    cast = net.transformer.get_cast_dtype()
    x = net.token_embedding(ids[:, :used]).to(cast) + net.positional_embedding[:used].to(cast)  # (n, T, W)
    x = net.ln_final(net.transformer(x, attn_mask=net.attn_mask[:used, :used]))
    x = x[torch.arange(x.shape[0]), ids[:, :used].argmax(dim=-1)]  # (n, W): at each end token (highest id)
    projection = net.text_projection
    if projection is None:
        return x
    return projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection


@dataclass(frozen=True)
class TextQuery:
    """A search text checked for one CLIP: the *prepare* step of a text search.

    Queries with the same :attr:`batch_key` (several students searching with one model) can share one
    pass through the text tower (:func:`embed_queries`).
    """

    model: ClipModel
    text: str

    @classmethod
    def prepare(cls, query: str, model: ClipModel) -> TextQuery:
        """Raises :class:`~lab.errors.InputError` for an empty or absurdly long query."""
        return cls(model, check_query(query))

    @property
    def batch_key(self) -> tuple[str, str]:
        return ("clip_text", self.model.key)


@isolated
def embed_queries(queries: list[TextQuery]) -> list[np.ndarray]:
    """One unit vector per query, through the text tower in one pass for all of them.

    CLIP's tokenizer pads every text to the whole context (77 tokens) and the tower is causal, so a
    query's vector is the same in a batch as alone.
    """
    vectors = queries[0].model.embed_texts([query.text for query in queries])  # (B, embed_dim)
    return list(vectors)


# -- under the hood: what the towers read ----------------------------------------------------------

# open_clip renamed CLIP's two special tokens; OpenAI's vocabulary (and the book, through transformers)
# calls them this, with the same ids (49406, 49407).
CLIP_SPECIALS = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}


@dataclass(frozen=True)
class ClipTokens:
    """What CLIP's text tower reads: tokens (words end in ``</w>``) and their ids, start and end included."""

    tokens: list[str]
    ids: list[int]
    truncated: bool  # the text was longer than the context and was cut
    context_length: int


def _inputs(model: ClipModel | str, path: str | None = None) -> models.ClipInputs:
    if isinstance(model, ClipModel):
        return models.clip_inputs(model.name, model.path)
    name, folder = parse_name(model)
    return models.clip_inputs(name, path or folder)


def clip_tokens(text: str, model: ClipModel | str = DEFAULT_MODEL) -> ClipTokens:
    """CLIP's tokens of a text. Needs only the tokenizer, so it works for catalog models without weights."""
    tokenizer = _inputs(model).tokenizer
    ids = [int(i) for i in tokenizer([text])[0].tolist()]  # (context_length,), 0-padded after the end token
    end = getattr(tokenizer, "eot_token_id", None)
    used = ids[: ids.index(end) + 1] if end in ids else [i for i in ids if i]
    if hasattr(tokenizer, "decoder"):  # open_clip's CLIP BPE
        tokens = [CLIP_SPECIALS.get(tokenizer.decoder[i], tokenizer.decoder[i]) for i in used]
        truncated = len(tokenizer.encode(text)) + 2 > len(ids)
    else:  # a Hugging Face tokenizer (SigLIP and others)
        tokens = tokenizer.tokenizer.convert_ids_to_tokens(used)
        truncated = len(used) == len(ids)
    return ClipTokens(tokens, used, truncated, len(ids))


def preprocessed_image(image: ImageSource, model: ClipModel | str = DEFAULT_MODEL) -> Image.Image:
    """The image as the vision tower sees it: resized, centre-cropped (224×224 for ViT-B/32), with the
    normalisation undone so that it can be shown. Needs no weights for catalog models."""
    inputs = _inputs(model)
    tensor = inputs.preprocess(prepare_image(image, "the image").image)  # (3, H, W), normalised
    mean = np.asarray(inputs.preprocess_cfg["mean"], np.float32)[:, None, None]
    std = np.asarray(inputs.preprocess_cfg["std"], np.float32)[:, None, None]
    pixels = np.clip((tensor.numpy() * std + mean) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels.transpose(1, 2, 0))
