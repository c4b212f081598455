"""Load models and tokenizers: the only package that calls ``from_pretrained``.

Every loader takes a model as an id (``"gpt2"``), a local folder (``"/models/my-bert"``) or a
:class:`ModelRef` (resolved once, passed down), resolves its source through :mod:`lab.catalog`, places it
with :mod:`lab.device` and goes through :data:`lab.cache.CACHE`: a model loads once per process and is
shared by every tab and every user. ``trust_remote_code`` is never enabled; weights load from safetensors.
"""

from __future__ import annotations

from lab.models.blip2 import (
    QUANTIZATIONS,
    VISION_CHAT_DEFAULT,
    MissingDependency,
    VisionChatModel,
    VisionChatPlan,
    vision_chat_model,
    vision_chat_plan,
)
from lab.models.lease import (
    Build,
    ModelLike,
    ModelRef,
    lease_model,
    load_tokenizer_uncached,
    locate,
    ref,
    source_of,
    tokenizer,
)
from lab.models.open_clip import ClipInputs, OpenClip, clip_inputs, clip_model, open_clip_arguments
from lab.models.preload import preload
from lab.models.text import causal_lm, encoder, model_config, sentence_encoder, seq2seq_lm
from lab.models.training import causal_lm_for_training, causal_lm_merged, causal_lm_with_adapter

__all__ = [
    # lease: references, tokenizers, the cache lease every loader shares
    "Build",
    "ModelLike",
    "ModelRef",
    "lease_model",
    "load_tokenizer_uncached",
    "locate",
    "ref",
    "source_of",
    "tokenizer",
    # text
    "causal_lm",
    "encoder",
    "model_config",
    "sentence_encoder",
    "seq2seq_lm",
    # open_clip (with clip_convert for transformers folders)
    "ClipInputs",
    "OpenClip",
    "clip_inputs",
    "open_clip_arguments",
    "clip_model",
    # blip2
    "QUANTIZATIONS",
    "VISION_CHAT_DEFAULT",
    "MissingDependency",
    "VisionChatModel",
    "VisionChatPlan",
    "vision_chat_model",
    "vision_chat_plan",
    # training
    "causal_lm_for_training",
    "causal_lm_merged",
    "causal_lm_with_adapter",
    # preload
    "preload",
]
