"""Load the models of the day at start (``LAB_PRELOAD``)."""

from __future__ import annotations

from lab import catalog
from lab.catalog import ModelUnavailable
from lab.models.blip2 import vision_chat_model
from lab.models.lease import tokenizer
from lab.models.open_clip import clip_model
from lab.models.text import causal_lm, encoder, sentence_encoder


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
